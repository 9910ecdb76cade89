"""``fl-sim compare``: passive against active attacks over several seeds (Table X layout).

Each seed is one ``fl-sim run`` into ``<out>/seed-<k>/``: the passive attacks of a seed share
its one passive federated run; each active attack trains its own federation (active attacks
change training). The table reports mean ± std over seeds.
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from pathlib import Path

import numpy as np

from fl_sim import catalog
from fl_sim.config import Config, dump_config
from fl_sim.errors import FlSimError
from fl_sim.experiment import reattack, run_experiment
from fl_sim.federated import keep_rounds
from fl_sim.io import atomic_write_bytes, read_json, write_json
from fl_sim.report import on_victim
from fl_sim.rundir import holds_only_marker, prepare_run_dir
from fl_sim.target import check_names


def mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± sample std`` of ``values`` times ``scale``; ``n/a`` when empty."""
    v = np.asarray(values, dtype=float) * scale
    if len(v) == 0:
        return "n/a"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.{digits}f}"


def _mean(v) -> str:
    return f"{np.mean(v):.4f}" if len(v) else ""


def _std(v) -> str:
    return f"{np.std(v, ddof=1):.4f}" if len(v) > 1 else ("0.0000" if len(v) else "")


def federations_of(per_seed: list[dict], attack: str) -> list[dict]:
    """The ``settings`` entries (accuracies) of every federation that produced ``attack``'s
    snapshots, over all seeds: its training, once per victim when it rotated
    (``<training>-victim<k>``); stand-alone names fall back to the passive run."""
    scenario = catalog.get(attack)
    setting = (scenario.training_for("federated").name if "federated" in scenario.modes
               else "passive")
    return [v for r in per_seed for k, v in r["settings"].items()
            if k == setting or k.startswith(f"{setting}-victim")]


def tabulate(per_seed: list[dict], attacks: list[str]) -> tuple[str, list[list[str]]]:
    """Markdown and CSV rows from the seeds' results.json dicts."""
    first = per_seed[0]
    label = f"{first.get('dataset_display_name', first['dataset'])}, {first['model']}"
    md = [f"Attack accuracy %, mean ± std over {len(per_seed)} seeds (Table X layout).", "",
          "| data, model | " + " | ".join(attacks) + " |",
          "|---|" + "---|" * len(attacks)]

    def metric(name, fn):
        vals = []
        for r in per_seed:
            for a in r["attacks"]:
                if a["name"] == name and "accuracy" in a:
                    vals.append(fn(a))
        return vals

    md.append(f"| {label} | " + " | ".join(mean_std(metric(a, lambda x: x["accuracy"]))
                                          for a in attacks) + " |")
    md += ["", "| attack | accuracy % | AUC | TPR@1%FPR % | target train acc % | "
           "target test acc % | seeds |", "|---|---|---|---|---|---|---|"]
    rows = [["dataset", "model", "attack", "accuracy_mean", "accuracy_std", "auc_mean", "auc_std",
             "tpr_at_1pct_fpr_mean", "tpr_at_1pct_fpr_std", "target_train_acc_mean",
             "target_test_acc_mean", "target_test_acc_std", "seeds"]]
    for a in attacks:
        acc = metric(a, lambda x: x["accuracy"])
        auc = metric(a, lambda x: x["auc"])
        tpr = metric(a, lambda x: x["tpr_at_fpr"]["0.01"])
        runs = federations_of(per_seed, a)
        # a training a defense made impossible (isolation under SecAgg+) has no accuracy
        tr, te = [v["train_acc"] for v in runs if "train_acc" in v], [v["test_acc"] for v in runs if "test_acc" in v]
        md.append(f"| {a} | {mean_std(acc)} | {mean_std(auc, 1, 3)} | {mean_std(tpr)} | {mean_std(tr)} | "
                  f"{mean_std(te)} | {len(acc)} |")
        rows.append([first["dataset"], first["model"], a, _mean(acc), _std(acc), _mean(auc),
                     _std(auc), _mean(tpr), _std(tpr), _mean(tr), _mean(te), _std(te),
                     str(len(acc))])
    md += ["", *victim_table(per_seed, attacks)]
    return "\n".join(md), rows


def victim_table(per_seed: list[dict], attacks: list[str]) -> list[str]:
    """Markdown rows: every global attack, passive included, on the same records (the
    victim's), so that passive and active columns compare like for like."""
    md = ["On the victim's records (the records every global attack is judged on):", "",
          "| attack | accuracy % | AUC | TPR@1%FPR % | seeds |", "|---|---|---|---|---|"]
    for name in attacks:
        vals = [v for r in per_seed for a in r["attacks"] if a["name"] == name
                and "accuracy" in a and (v := on_victim(a)) is not None]
        if vals:
            md.append(f"| {name} | {mean_std([v['accuracy'] for v in vals])} | "
                      f"{mean_std([v['auc'] for v in vals], 1, 3)} | "
                      f"{mean_std([v['tpr_at_fpr']['0.01'] for v in vals])} | {len(vals)} |")
    return md


def epochs_table(rows: list[dict]) -> str:
    """Table XII: attack accuracy by the epochs observed, mean ± std over seeds.

    rows: one dict per (seed, epoch set) with keys epochs (list) and attacks (list of dicts).
    """
    by: dict[tuple, dict[str, list]] = {}
    for r in rows:
        for a in r["attacks"]:
            if "accuracy" in a:
                by.setdefault(tuple(r["epochs"]), {}).setdefault(a["name"], []).append(a)
    names = sorted({n for d in by.values() for n in d})
    md = ["Attack accuracy % (AUC) by observed epochs, mean ± std over seeds (Table XII layout).",
          "", "| epochs | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for epochs, d in by.items():
        cells = []
        for n in names:
            v = d.get(n, [])
            cells.append(f"{mean_std([a['accuracy'] for a in v])} ({mean_std([a['auc'] for a in v], 1, 3)})"
                         if v else "n/a")
        md.append(f"| {','.join(map(str, epochs))} | " + " | ".join(cells) + " |")
    return "\n".join(md)


def rotating(cfg: Config) -> Config:
    """The paper averages the active attacks over victims: compare rotates the victim over
    every participant (one federation each) unless the config chose ``attack.victims``."""
    if "victims" in cfg.attack.model_fields_set:
        return cfg
    return cfg.model_copy(update={"attack": cfg.attack.model_copy(update={"victims": "all"})})


KEEP_SNAPSHOTS = ("all", "passive", "none")


def run_seeds(cfg: Config, seeds: int, out: Path, progress: bool, keep_snapshots: str = "all",
              resume: bool = False, passive_from: Path | None = None) -> list[dict]:
    """One experiment per seed (cfg.seed, cfg.seed + 1, ...) into ``out/seed-<seed>``.

    ``keep_snapshots="passive"`` deletes each seed's active federations' snapshots once its
    attacks are done (results stay; only the passive run can be re-attacked): a rotating
    comparison trains 3 federations per victim, 0.6 GB each on Location-30. ``"none"``
    deletes the passive ones too (nothing can be re-attacked; for long matrices).
    ``resume``: keep the seeds already complete under ``out``, resume a killed one, run the
    rest (each seed's saved config must be the one asked for). ``passive_from``: a directory
    of finished seeds whose passive federations these seeds share (see ``run_experiment``)."""
    per_seed = []
    for k in range(seeds):
        seed_cfg = cfg.model_copy(deep=True)
        seed_cfg.seed = cfg.seed + k
        run_dir = out / f"seed-{cfg.seed + k}"
        shared = passive_from / run_dir.name if passive_from is not None else None
        if shared is not None and not (shared / "results.json").is_file():
            shared = None
        per_seed.append(resumed_seed(seed_cfg, run_dir, progress, shared) if resume
                        else run_experiment(seed_cfg, run_dir, progress=progress, passive_from=shared))
        prune_snapshots(run_dir, keep_snapshots)
    return per_seed


def resumed_seed(cfg: Config, run_dir: Path, progress: bool, passive_from: Path | None = None) -> dict:
    """One seed of a resumed comparison: its results when complete, the rest of a killed
    run, or a fresh run where nothing was started."""
    if not (run_dir / "config.yaml").is_file():
        if run_dir.is_symlink() or run_dir.exists() and not (holds_only_marker(run_dir) or (
                run_dir.is_dir() and not any(run_dir.iterdir()))):
            # never replace what cannot be read: it may hold results fl-sim did not write
            raise FlSimError(f"--resume: {run_dir} exists but is not a run directory fl-sim can read "
                             "(no config.yaml); move it away, then resume again")
        return run_experiment(cfg, run_dir, overwrite=True, progress=progress, passive_from=passive_from)
    if (run_dir / "config.yaml").read_text() != dump_config(cfg):
        raise FlSimError(f"--resume: {run_dir} was run with another config; resume with the same "
                         "command, or start afresh with --overwrite")
    if (run_dir / "results.json").is_file():
        return read_json(run_dir / "results.json")
    return run_experiment(None, run_dir, resume=True, progress=progress)


def open_out(out: Path, overwrite: bool, resume: bool) -> Path:
    """The comparison's directory: new (or replaced with ``overwrite``), or kept to ``resume``."""
    if resume:
        if overwrite:
            raise FlSimError("--resume and --overwrite: give one of them")
        if Path(out).exists() and not Path(out).is_dir():
            raise FlSimError(f"--resume {out}: a file, not a comparison directory")
        if not Path(out).is_dir():
            return prepare_run_dir(out, kind="comparison")
        return Path(out)
    return prepare_run_dir(out, overwrite=overwrite, kind="comparison")


def prune_snapshots(run_dir: Path, keep: str) -> None:
    """Delete a finished run's federation snapshots that ``keep`` (see ``run_seeds``) drops."""
    if keep == "all":
        return
    for d in (run_dir / "snapshots").glob("*"):
        if d.is_dir() and (keep == "none" or d.name != "passive"):
            shutil.rmtree(d)


def keeping_epoch_sets(cfg: Config, epoch_sets: list[list[int]] | None) -> Config:
    """``cfg`` whose kept rounds also cover every epoch set to re-attack (Table XII), when
    it keeps only some rounds."""
    if not epoch_sets or cfg.federation.keep_rounds == "all":
        return cfg
    rounds = set(keep_rounds(cfg))
    for es in epoch_sets:
        one = cfg.model_copy(deep=True)
        one.attack.epochs, one.federation.keep_rounds = list(es), "attack"
        rounds |= set(keep_rounds(one))
    out = cfg.model_copy(deep=True)
    out.federation.keep_rounds = sorted(rounds)
    return out


def run_compare(cfg: Config, seeds: int, out: str | Path | None, *, overwrite: bool = False,
                progress: bool = True, epoch_sets: list[list[int]] | None = None,
                keep_snapshots: str = "all", resume: bool = False) -> Path:
    check_names(cfg)
    if cfg.federation.mode != "federated":
        raise FlSimError("compare: federation.mode must be 'federated'")
    if keep_snapshots not in KEEP_SNAPSHOTS:
        raise FlSimError(f"--keep-snapshots must be one of {', '.join(KEEP_SNAPSHOTS)}, not {keep_snapshots!r}")
    out = Path(out or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}-{cfg.data.name}-"
                      f"{cfg.model.name}")
    if epoch_sets and keep_snapshots == "none":
        raise FlSimError("--epoch-sets re-attacks the passive snapshots: use --keep-snapshots all or passive")
    open_out(out, overwrite, resume)
    t0 = time.time()
    cfg = keeping_epoch_sets(rotating(cfg), epoch_sets)
    per_seed = run_seeds(cfg, seeds, out, progress, keep_snapshots, resume)
    md, rows = tabulate(per_seed, list(cfg.attack.names))
    wall = time.time() - t0
    md += f"\n\nWall time: {wall:.0f} s for {seeds} seeds.\n"
    atomic_write_bytes(out / "table.md", md.encode())
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    atomic_write_bytes(out / "table.csv", buf.getvalue().encode())
    if epoch_sets:
        names = list(cfg.attack.names)
        if keep_snapshots == "passive":  # the active federations' snapshots are gone
            names = [n for n in names if catalog.get(n).training_for("federated").name == "passive"]
        rows = [reattack(out / f"seed-{r['seed']}", [f"attack.epochs={list(es)}", f"attack.names={names}"])
                for r in per_seed for es in epoch_sets]
        atomic_write_bytes(out / "table_epochs.md", (epochs_table(rows) + "\n").encode())
    write_json(out / "compare.json", {"seeds": [r["seed"] for r in per_seed], "wall_s": wall,
                                      "attacks": cfg.attack.names, "snapshots_kept": keep_snapshots})
    return out
