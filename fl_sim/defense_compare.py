"""``fl-sim compare CONFIG --defenses none,dp_sgd,... --attacks ... --seeds K``: the defense x
attacker matrix and the privacy-utility plot.

Each defense is a comparison of its own (seeds, victim rotation) into ``<out>/<defense>/``
(``seed-<k>/`` run directories and a ``compare.json``). A defense may carry parameters:
``dp_sgd:noise_multiplier=0.5`` or ``secagg+local_dp:epsilon=0.5:clipping_norm=2`` (on top of
the config's ``defense`` section). ``defenses.md`` / ``defenses.csv`` tabulate, per defense and
attack, the attack's accuracy, AUC and TPR at 1 % FPR, the target's test accuracy, the
accountant's epsilon that covers the attacker and the empirical epsilon (mean ± std over
seeds); an attack the defense leaves nothing to observe reads "not observable".
``privacy_utility.png`` puts the target's test accuracy against each attack's AUC, one point
per defense setting.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np

from fl_sim.compare import federations_of, mean_std, open_out, rotating, run_seeds
from fl_sim.config import Config, config_from_dict, read_yaml
from fl_sim.errors import ConfigError
from fl_sim.experiment import preflight
from fl_sim.io import atomic_write_bytes, write_json
from fl_sim.rundir import safe_name


def parse_defenses(cfg: Config, spec: str) -> list[tuple[str, Config]]:
    """``none,dp_sgd:noise_multiplier=0.5,...`` -> (label, validated config) per setting; a bad
    name, key or value is a ConfigError naming it (before anything trains)."""
    items = [i.strip() for i in spec.split(",") if i.strip()]
    if not items:
        raise ConfigError("--defenses: give at least one defense, e.g. none,dp_sgd")
    if len(items) != len(spec.split(",")):
        raise ConfigError(f"--defenses {spec!r}: an empty entry between commas")
    out = []
    for item in items:
        name, *params = item.split(":")
        tree = cfg.model_dump(mode="json")
        tree["defense"]["name"] = name.strip()
        given = set()
        for p in params:
            key, sep, raw = p.partition("=")
            key = key.strip()
            if not sep or not key.isidentifier():
                raise ConfigError(f"--defenses {item!r}: expected NAME:key=value:...")
            if key == "name":  # the setting's label must say what runs
                raise ConfigError(f"--defenses {item!r}: the defense is named before the first ':', not as name=")
            if key in given:
                raise ConfigError(f"--defenses {item!r}: {key} is given twice")
            given.add(key)
            tree["defense"][key] = read_yaml(raw, f"--defenses {item}: {key}") if raw.strip() else ""
        out.append((item, config_from_dict(tree, f"--defenses {item}")))
    if len({label for label, _ in out}) != len(out) or len({slug(label) for label, _ in out}) != len(out):
        raise ConfigError("--defenses names a setting twice")
    return out


def slug(label: str) -> str:
    """A file-name-safe directory name of a defense setting."""
    return safe_name(label)


def _cell_values(per_seed: list[dict], attack: str) -> dict:
    got = [a for r in per_seed for a in r["attacks"] if a["name"] == attack]
    scored = [a for a in got if "accuracy" in a]
    acct = [a["defense"]["accountant_epsilon"]["epsilon"] for a in got
            if (a.get("defense") or {}).get("accountant_epsilon")]
    emp = [a["empirical_epsilon"]["epsilon_lb"] for a in scored
           if np.isfinite((a.get("empirical_epsilon") or {}).get("epsilon_lb", np.nan))]
    runs = [v for v in federations_of(per_seed, attack) if "test_acc" in v]
    return {"not_observable": next((a["not_observable"] for a in got if "not_observable" in a), None),
            "accuracy": [a["accuracy"] for a in scored], "auc": [a["auc"] for a in scored],
            "tpr_1pct": [a["tpr_at_fpr"]["0.01"] for a in scored],
            "test_acc": [v["test_acc"] for v in runs], "target_test_acc": [r["target"]["test_acc"] for r in per_seed],
            "accountant_epsilon": acct, "empirical_epsilon": emp, "seeds": len(scored)}


def defense_rows(per_defense: dict[str, list[dict]], attacks: list[str]) -> list[dict]:
    """One row per (defense setting, attack), every metric as its per-seed list."""
    return [{"defense": label, "attack": a, **_cell_values(per_seed, a)}
            for label, per_seed in per_defense.items() for a in attacks]


def _eps(values: list[float]) -> str:
    return mean_std(values, 1, 2) if values else "n/a"


def defense_table(rows: list[dict]) -> tuple[str, list[list]]:
    """Markdown and CSV of the rows (accuracies in %, AUC, epsilons at the configured delta)."""
    md = ["| defense | attack | accuracy % | AUC | TPR@1%FPR % | target test acc % | "
          "accountant's ε | empirical ε (95 % lower bound) | seeds |", "|---|---|---|---|---|---|---|---|---|"]
    csv_rows = [["defense", "attack", "observable", "accuracy_mean", "accuracy_std", "auc_mean", "auc_std",
                 "tpr_1pct_mean", "test_acc_mean", "accountant_epsilon", "empirical_epsilon_mean",
                 "empirical_epsilon_max", "seeds"]]
    for r in rows:
        if r["not_observable"]:
            why = r["not_observable"]
            why = why if why.startswith("not observable") else f"not observable: {why}"
            md.append(f"| {r['defense']} | {r['attack']} | {why} | | | "
                      f"{mean_std(r['target_test_acc'])} | {_eps(r['accountant_epsilon'])} | | 0 |")
            csv_rows.append([r["defense"], r["attack"], "no", "", "", "", "", "",
                             np.mean(r["target_test_acc"]), "", "", "", 0])
            continue
        md.append(f"| {r['defense']} | {r['attack']} | {mean_std(r['accuracy'])} | {mean_std(r['auc'], 1, 3)} | "
                  f"{mean_std(r['tpr_1pct'])} | {mean_std(r['test_acc'])} | {_eps(r['accountant_epsilon'])} | "
                  f"{_eps(r['empirical_epsilon'])} | {r['seeds']} |")
        csv_rows.append([r["defense"], r["attack"], "yes", _num(r["accuracy"]), _num(r["accuracy"], np.std),
                         _num(r["auc"]), _num(r["auc"], np.std), _num(r["tpr_1pct"]), _num(r["test_acc"]),
                         _num(r["accountant_epsilon"]), _num(r["empirical_epsilon"]),
                         _num(r["empirical_epsilon"], np.max), r["seeds"]])
    return "\n".join(md), csv_rows


def _num(values: list[float], fn=np.mean) -> str:
    return f"{fn(values):.4f}" if values else ""


def auc_matrix(rows: list[dict]) -> str:
    """Markdown: defense settings down, attackers across, attack AUC (mean over seeds)."""
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    cell = {(r["defense"], r["attack"]): ("not observable" if r["not_observable"] else
                                          f"{np.mean(r['auc']):.3f}" if r["auc"] else "n/a") for r in rows}
    md = ["| defense | " + " | ".join(attacks) + " |", "|---|" + "---|" * len(attacks)]
    md += [f"| {d} | " + " | ".join(cell[(d, a)] for a in attacks) + " |" for d in defenses]
    return "\n".join(md)


def privacy_utility_plot(rows: list[dict], path: Path, title: str) -> None:
    """The target's test accuracy (y) against each attack's AUC (x), one point per defense
    setting and attack; each defense labelled once, beside its strongest attack (a setting's
    points share its accuracy, so they form one row); attacks that cannot observe are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    for i, attack in enumerate(dict.fromkeys(r["attack"] for r in rows)):
        mine = [r for r in rows if r["attack"] == attack and r["auc"]]
        if not mine:
            continue
        xs = [np.mean(r["auc"]) for r in mine]
        ys = [100 * np.mean(r["target_test_acc"]) for r in mine]
        ax.errorbar(xs, ys, xerr=[np.std(r["auc"]) for r in mine], fmt="o", capsize=2, label=attack,
                    color=f"C{i}")
    for defense in dict.fromkeys(r["defense"] for r in rows):
        mine = [r for r in rows if r["defense"] == defense and r["auc"]]
        if mine:
            top = max(mine, key=lambda r: np.mean(r["auc"]))
            ax.annotate(defense, (np.mean(top["auc"]), 100 * np.mean(top["target_test_acc"])), fontsize=7,
                        xytext=(6, 4), textcoords="offset points")
    ax.axvline(0.5, color="k", ls=":", lw=0.8)
    ax.set_xlabel("attack AUC (0.5 = chance)")
    ax.set_ylabel("target test accuracy (%)")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_defense_compare(cfg: Config, spec: str, seeds: int, out: str | Path | None, *, overwrite: bool = False,
                        progress: bool = True, keep_snapshots: str = "all", resume: bool = False) -> Path:
    """Every defense setting of ``spec`` over ``seeds`` seeds into ``out``; returns ``out``."""
    settings = parse_defenses(rotating(cfg), spec)
    for _, c in settings:  # every setting, before the first one trains
        preflight(c)
    out = Path(out or f"runs/defenses-{time.strftime('%Y%m%d-%H%M%S')}-{cfg.data.name}-{cfg.model.name}")
    open_out(out, overwrite, resume)
    t0 = time.time()
    per_defense = {}
    for label, c in settings:
        sub = out / slug(label)
        per_defense[label] = run_seeds(c, seeds, sub, progress, keep_snapshots, resume)
        write_json(sub / "compare.json", {"seeds": [r["seed"] for r in per_defense[label]], "defense": label,
                                          "attacks": list(cfg.attack.names), "snapshots_kept": keep_snapshots})
    rows = defense_rows(per_defense, list(cfg.attack.names))
    md, table = defense_table(rows)
    first = next(iter(per_defense.values()))[0]
    title = f"{first.get('dataset_display_name', first['dataset'])}, {first['model']}: defenses"
    wall = time.time() - t0
    # a resumed comparison's own wall time misses the seeds run before: give theirs too
    seeds_s = sum((r.get("timing") or {}).get("total_s", 0.0) for runs in per_defense.values() for r in runs)
    text = (f"{title}, {seeds} seed(s), wall time {wall:.0f} s (the seeds' runs: {seeds_s:.0f} s in all); "
            f"epsilons at delta = {cfg.defense.delta:g}\n\n"
            f"{md}\n\nAttack AUC by defense (mean over seeds):\n\n{auc_matrix(rows)}\n")
    atomic_write_bytes(out / "defenses.md", text.encode())
    buf = io.StringIO()
    csv.writer(buf).writerows(table)
    atomic_write_bytes(out / "defenses.csv", buf.getvalue().encode())
    privacy_utility_plot(rows, out / "privacy_utility.png", title)
    write_json(out / "defenses.json", {"defenses": [label for label, _ in settings], "seeds": seeds,
                                       "attacks": list(cfg.attack.names), "wall_s": wall, "seeds_s": seeds_s,
                                       "rows": rows})
    return out
