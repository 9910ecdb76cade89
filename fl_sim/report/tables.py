"""The report's tables, each as a :class:`~fl_sim.report.document.Table` (Markdown and
HTML) and as CSV rows: target accuracy, and per attack its accuracy, AUC and TPR at
0.1 %, 1 % and 10 % FPR; for several seeds, mean ± sample std.

Attack rows read the catalog (what the attacker observes, whose records it targets), so
a newly registered attack appears with its description and no edit here.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from fl_sim import catalog
from fl_sim.errors import ConfigError
from fl_sim.io import atomic_write_bytes
from fl_sim.report.document import Table

FPRS = ("0.001", "0.01", "0.1")
FPR_LABELS = ("TPR@0.1%FPR %", "TPR@1%FPR %", "TPR@10%FPR %")


def pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}"


def num(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


def describe(name: str) -> str:
    """The catalog's one-line summary of attack ``name`` (empty when it is no longer registered)."""
    try:
        s = catalog.get(name)
    except ConfigError:
        return ""
    return s.summary or f"{s.observer} -> {s.targets}"


def write_csv(path: Path, rows: list[list]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    atomic_write_bytes(Path(path), buf.getvalue().encode())


# ---------------------------------------------------------------- one run


def target_table(results: dict) -> tuple[Table, list[list]]:
    """Train/test accuracy of every training (the passive run is the target), and the
    victim's own model where one was measured."""
    settings = results.get("settings") or {"target": results["target"]}
    header = ["training", "train acc %", "test acc %", "victim", "victim train acc %", "victim test acc %"]
    rows, csv_rows = [], [["training", "train_acc", "test_acc", "victim", "victim_train_acc", "victim_test_acc"]]
    for name, s in settings.items():
        v = s.get("victim") or {}
        rows.append([name, pct(s.get("train_acc")), pct(s.get("test_acc")), str(v.get("participant", "")),
                     pct(v.get("train_acc")) if v else "", pct(v.get("test_acc")) if v else ""])
        csv_rows.append([name, s.get("train_acc"), s.get("test_acc"), v.get("participant", ""),
                         v.get("train_acc", ""), v.get("test_acc", "")])
    return Table(header, rows, "Target model accuracy"), csv_rows


def attack_table(results: dict) -> tuple[Table, list[list]]:
    """Every attack of the run, skipped ones with the reason."""
    header = ["attack", "threat model", "judged on", "accuracy %", "AUC", *FPR_LABELS, "members / non-members"]
    rows = []
    csv_rows = [["attack", "accuracy", "auc", "tpr_at_0.1pct_fpr", "tpr_at_1pct_fpr", "tpr_at_10pct_fpr",
                 "n_members", "n_nonmembers", "skipped"]]
    for a in results.get("attacks", []):
        judged = a.get("judged_on") or a.get("target") or a.get("sets") or ""
        if "auc" not in a:
            rows.append([a["name"], describe(a["name"]), judged, f"skipped: {a.get('skipped', '?')}",
                         "", "", "", "", ""])
            csv_rows.append([a["name"], "", "", "", "", "", "", "", a.get("skipped", "?")])
            continue
        t = a.get("tpr_at_fpr", {})
        rows.append([a["name"], describe(a["name"]), judged, pct(a.get("accuracy")), num(a.get("auc")),
                     *(pct(t.get(f)) for f in FPRS), f"{a.get('n_members')} / {a.get('n_nonmembers')}"])
        csv_rows.append([a["name"], a.get("accuracy"), a.get("auc"), *(t.get(f) for f in FPRS),
                         a.get("n_members"), a.get("n_nonmembers"), ""])
    return Table(header, rows, "Attacks (accuracy at a threshold chosen on the attacker's known records)"), csv_rows


def victim_table(results: dict) -> Table | None:
    """Global attacks over every participant, on the victims' records alone (what the
    active attacks are judged on); None when no attack reports that view."""
    rows = []
    for a in results.get("attacks", []):
        v = a.get("on_victim")
        if v:
            t = v.get("tpr_at_fpr", {})
            rows.append([a["name"], ", ".join(map(str, v.get("participants", []))), pct(v.get("accuracy")),
                         num(v.get("auc")), *(pct(t.get(f)) for f in FPRS)])
    if not rows:
        return None
    return Table(["attack", "victims", "accuracy %", "AUC", *FPR_LABELS], rows,
                 "On the victims' records (comparable with the active attacks)")


# ---------------------------------------------------------------- several seeds


def mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± sample std`` of ``values`` × ``scale``; ``n/a`` when empty."""
    v = np.asarray([x for x in values if x is not None and not np.isnan(x)], dtype=float) * scale
    if len(v) == 0:
        return "n/a"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.{digits}f}"


def _stats(values: list[float]) -> list:
    v = np.asarray([x for x in values if x is not None and not np.isnan(x)], dtype=float)
    if len(v) == 0:
        return ["", ""]
    return [f"{v.mean():.4f}", f"{v.std(ddof=1) if len(v) > 1 else 0.0:.4f}"]


def metric_values(per_seed: list[dict], name: str) -> dict[str, list[float]]:
    """Attack ``name``'s accuracy, AUC and TPRs over the seeds that evaluated it."""
    out: dict[str, list[float]] = {"accuracy": [], "auc": [], **{f: [] for f in FPRS}}
    for r in per_seed:
        for a in r.get("attacks", []):
            if a["name"] == name and "auc" in a:
                out["accuracy"].append(a["accuracy"])
                out["auc"].append(a["auc"])
                for f in FPRS:
                    out[f].append(a.get("tpr_at_fpr", {}).get(f, np.nan))
    return out


def seed_attack_table(per_seed: list[dict], names: list[str]) -> tuple[Table, list[list]]:
    header = ["attack", "threat model", "accuracy %", "AUC", *FPR_LABELS, "seeds"]
    rows = []
    csv_rows = [["attack", "accuracy_mean", "accuracy_std", "auc_mean", "auc_std",
                 *(f"tpr_at_{lbl}_fpr_{s}" for lbl in ("0.1pct", "1pct", "10pct") for s in ("mean", "std")),
                 "seeds"]]
    for name in names:
        m = metric_values(per_seed, name)
        rows.append([name, describe(name), mean_std(m["accuracy"]), mean_std(m["auc"], 1, 3),
                     *(mean_std(m[f]) for f in FPRS), str(len(m["auc"]))])
        csv_rows.append([name, *_stats(m["accuracy"]), *_stats(m["auc"]),
                         *(x for f in FPRS for x in _stats(m[f])), len(m["auc"])])
    return Table(header, rows, f"Attacks, mean ± std over {len(per_seed)} seeds"), csv_rows


def seed_target_table(per_seed: list[dict]) -> tuple[Table, list[list]]:
    trainings: dict[str, dict[str, list]] = {}
    for r in per_seed:
        for name, s in (r.get("settings") or {"target": r["target"]}).items():
            d = trainings.setdefault(name, {"train": [], "test": []})
            d["train"].append(s.get("train_acc", np.nan))
            d["test"].append(s.get("test_acc", np.nan))
    rows = [[n, mean_std(d["train"]), mean_std(d["test"]), str(len(d["test"]))] for n, d in trainings.items()]
    csv_rows = [["training", "train_acc_mean", "train_acc_std", "test_acc_mean", "test_acc_std", "seeds"]]
    csv_rows += [[n, *_stats(d["train"]), *_stats(d["test"]), len(d["test"])] for n, d in trainings.items()]
    return (Table(["training", "train acc %", "test acc %", "runs"], rows,
                  f"Target model accuracy, mean ± std over {len(per_seed)} seeds"), csv_rows)
