"""``fl-sim compare --sweep KEY=V1,V2,...``: attack strength and the victim's utility
against one config value (e.g. ``attack.gamma``), over seeds.

Each value is a ``compare`` of its own into ``<out>/<key>=<value>/`` (seeds, victim
rotation); ``sweep.md`` / ``sweep.csv`` tabulate, per value and attack, the AUC and TPR at
1 % FPR on the victims' records and the victims' own test accuracy (mean ± std over seeds),
and ``sweep.png`` plots them against the value.
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
from fl_sim.report import on_victim
from fl_sim.rundir import safe_name

# attack settings the passive federation does not read (only the active ones and the attack
# model do): a sweep over one of them trains the passive federation once per seed
SHARES_PASSIVE = frozenset({
    "attack.gamma", "attack.isolate_rounds", "attack.isolate_from", "attack.ascent_rounds", "attack.victims",
    "attack.epochs_attack_model", "attack.lr_attack_model", "attack.conv_filters", "attack.network_inputs",
    "attack.gradients"})


def parse_sweep(cfg: Config, spec: str) -> tuple[str, list, list[Config]]:
    """``KEY=V1,V2,...`` (or ``KEY=V1;V2;...`` for list values) -> (key, values, one
    validated config per value); a bad key or value is a ConfigError naming it."""
    if "=" not in spec:
        raise ConfigError(f"--sweep {spec!r}: expected KEY=V1,V2,...")
    key, raw = (p.strip() for p in spec.split("=", 1))
    parts = key.split(".")
    if len(parts) < 2 or any(not p.isidentifier() for p in parts) or key == "seed":
        raise ConfigError(f"--sweep {key!r}: expected a config key such as attack.gamma")
    if parts[0] == "output":  # each value's runs go to <out>/<key>=<value>/, nowhere else
        raise ConfigError(f"--sweep {key}: the output keys cannot be swept")
    # values holding commas themselves (lists: attack.isolate_rounds=[23,24];[35,36]) are
    # separated by semicolons
    sep = ";" if ";" in raw or "[" in raw else ","
    texts = raw.split(sep)
    if any(not v.strip() for v in texts) and len(texts) > 1:
        raise ConfigError(f"--sweep {key}: an empty value in {raw!r}")
    values = [read_yaml(v, f"--sweep {key}: value {v.strip()!r}") for v in texts if v.strip()]
    if len(values) < 2:
        raise ConfigError(f"--sweep {key}: give at least two values")
    labels = [value_dir(key, v) for v in values]
    if len(set(labels)) != len(labels) or len({repr(v) for v in values}) != len(values):
        raise ConfigError(f"--sweep {key}: a value is given twice in {raw!r}")
    configs = []
    for v in values:
        tree = cfg.model_dump(mode="json", exclude_unset=False)
        node = tree
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"--sweep {key}: {p} is not a config section")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"--sweep {key}: unknown key")
        node[parts[-1]] = v
        configs.append(config_from_dict(tree, f"--sweep {key}={v}"))
    return key, values, configs


def value_label(value) -> str:
    """A short, file-name-safe label of a swept value: long lists of rounds become
    ``first-last(n)``; ``None`` (the config's default rule) stays ``None``."""
    if isinstance(value, list) and len(value) > 4:
        return f"{value[0]}-{value[-1]}({len(value)})"
    return str(value).replace(" ", "")


def value_dir(key: str, value) -> str:
    """The directory name of one swept value (its label, made file-name-safe)."""
    return safe_name(f"{key}={value_label(value)}")


def sweep_rows(key: str, values: list, per_value: list[list[dict]], attacks: list[str]) -> list[dict]:
    """Per (value, attack): AUC and TPR at 1 % FPR on the victims' records (the whole
    result where an attack has no victim view, e.g. a local attack), and the victims' own
    test accuracy in the federations the attack trained, one entry per seed."""
    rows = []
    for value, per_seed in zip(values, per_value):
        for name in attacks:
            got = [on_victim(a) or a for r in per_seed for a in r["attacks"]
                   if a["name"] == name and "accuracy" in a]
            if not got:
                continue
            acc = [float(np.mean(v)) for r in per_seed
                   if (v := [s["victim"]["test_acc"] for s in federations_of([r], name) if "victim" in s])]
            rows.append({"key": key, "value": value_label(value), "attack": name, "seeds": len(got),
                         "auc": [v["auc"] for v in got],
                         "tpr_1pct": [v["tpr_at_fpr"]["0.01"] for v in got],
                         "victim_test_acc": acc})
    return rows


def sweep_table(rows: list[dict]) -> tuple[str, list[list]]:
    md = ["| value | attack | AUC | TPR@1%FPR % | victims' test acc % | seeds |",
          "|---|---|---|---|---|---|"]
    table = [["key", "value", "attack", "auc_mean", "auc_std", "tpr_1pct_mean",
              "victim_test_acc_mean", "seeds"]]
    for r in rows:
        md.append(f"| {r['value']} | {r['attack']} | {mean_std(r['auc'], 1, 3)} | "
                  f"{mean_std(r['tpr_1pct'])} | {mean_std(r['victim_test_acc'])} | {r['seeds']} |")
        table.append([r["key"], r["value"], r["attack"], np.mean(r["auc"]), np.std(r["auc"]),
                      np.mean(r["tpr_1pct"]),
                      np.mean(r["victim_test_acc"]) if r["victim_test_acc"] else "", r["seeds"]])
    return "\n".join(md), table


def sweep_plot(rows: list[dict], key: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = list(dict.fromkeys(str(r["value"]) for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for name in dict.fromkeys(r["attack"] for r in rows):
        mine = [r for r in rows if r["attack"] == name]
        xs = [values.index(str(r["value"])) for r in mine]
        for ax, field, scale in zip(axes, ("auc", "tpr_1pct", "victim_test_acc"), (1, 100, 100)):
            ys = [np.mean(r[field]) * scale if r[field] else np.nan for r in mine]
            es = [np.std(r[field]) * scale if r[field] else 0 for r in mine]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=name)
    for ax, label in zip(axes, ("attack AUC", "TPR at 1% FPR (%)", "victims' test accuracy (%)")):
        ax.set_xticks(range(len(values)), values)
        ax.set_xlabel(key)
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_sweep(cfg: Config, spec: str, seeds: int, out: str | Path | None, *,
              overwrite: bool = False, progress: bool = True, keep_snapshots: str = "all",
              resume: bool = False) -> Path:
    key, values, configs = parse_sweep(rotating(cfg), spec)
    for c in configs:  # every value, before the first one trains
        preflight(c)
    out = Path(out or f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}-{key}")
    open_out(out, overwrite, resume)
    t0 = time.time()
    dirs = [out / value_dir(key, v) for v in values]
    # the passive federation does not depend on these keys: train it once per seed
    share = dirs[0] if key in SHARES_PASSIVE and keep_snapshots != "none" else None
    per_value = [run_seeds(c, seeds, d, progress, keep_snapshots, resume, share if i else None)
                 for i, (d, c) in enumerate(zip(dirs, configs))]
    rows = sweep_rows(key, values, per_value, list(cfg.attack.names))
    md, table = sweep_table(rows)
    first = per_value[0][0]
    title = f"{first.get('dataset_display_name', first['dataset'])}, {first['model']}: {key}"
    wall = time.time() - t0
    atomic_write_bytes(out / "sweep.md", (f"{title}, {seeds} seed(s), wall time {wall:.0f} s\n\n"
                                          + md + "\n").encode())
    buf = io.StringIO()
    csv.writer(buf).writerows(table)
    atomic_write_bytes(out / "sweep.csv", buf.getvalue().encode())
    sweep_plot(rows, key, out / "sweep.png", title)
    write_json(out / "sweep.json", {"key": key, "values": values, "seeds": seeds, "wall_s": wall,
                                    "rows": rows})
    return out
