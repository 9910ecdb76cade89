"""Tables of what the gradient-ascent pushes did, from a `fl-sim compare --sweep` directory.

    python docs/results/ascent_push/summarise.py SWEEP_DIR > table.md

Reads every SWEEP_DIR/<key=value>/seed-*/results.json (the push measurements of
fl_sim/push.py under settings.<federation>.push, and the attacks' results). Where a seed
directory still holds the active federations' snapshots (`--keep-snapshots all`), it also
compares each pair of victims' federations of one attack: the models sent at each push
round, and the final global models (largest difference, test records they classify
differently).
"""

from __future__ import annotations

import json
import re
import sys
from itertools import combinations
from pathlib import Path

import numpy as np


def _f(v, fmt=".3g") -> str:
    return "-" if v is None else format(v, fmt)


def _value(d: Path):
    v = d.name.split("=", 1)[1]
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def runs(sweep: Path):
    for value_dir in sorted((p for p in sweep.iterdir() if p.is_dir() and "=" in p.name), key=_value):
        for seed_dir in sorted(value_dir.glob("seed-*")):
            if (seed_dir / "results.json").is_file():
                yield value_dir.name.split("=", 1)[1], seed_dir, json.loads((seed_dir / "results.json").read_text())


def attack_rows(sweep: Path) -> list[str]:
    out = ["| value | seed | attack | AUC | TPR at 1 % FPR | per victim AUC | federations' test acc |",
           "|---|---|---|---|---|---|---|"]
    for value, seed_dir, res in runs(sweep):
        for a in res["attacks"]:
            if "auc" not in a:
                continue
            name = a["name"]
            if name == "global_passive" and "on_victim" in a:  # on the victims' records, like the active ones
                a = {**a["on_victim"], "per_participant": None}
                name = "global_passive (victims' records)"
            per = a.get("per_participant") or {}
            settings = [k for k in res["settings"] if k == a.get("name") or k.startswith(f"{a.get('name')}-victim")]
            if name.startswith("global_passive"):
                settings = ["passive"]
            accs = ", ".join(f"{res['settings'][k]['test_acc']:.4f}" for k in settings)
            victims = ", ".join(f"{p}: {v['auc']:.3f}" for p, v in per.items())
            out.append(f"| {value} | {seed_dir.name} | {name} | {a['auc']:.3f} "
                       f"| {100 * a['tpr_at_fpr']['0.01']:.1f} % | {victims} | {accs} |")
    return out


def push_rows(sweep: Path) -> list[str]:
    out = ["| value | seed | federation | round | push norm | model norm | members' part | non-members' part "
           "| members' loss before -> after (mean) | members' rise median | non-members' loss before -> after (mean) "
           "| non-members' rise median | grad norm median, members / non-members | last layer, members / non-members |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for value, seed_dir, res in runs(sweep):
        for name, s in res["settings"].items():
            for r in (s.get("push") or {}).get("rounds", []):
                m, n, part = r["members"], r["non_members"], r["step_part_norm"]
                cells = [value, seed_dir.name, name, r["round"], _f(r["push_norm"]), _f(r["model_norm"]),
                         _f(part["members"]), _f(part["non_members"])]
                for g in (m, n):
                    cells += [f"{_f(g['loss_before']['mean'])} -> {_f(g['loss_after']['mean'])}",
                              _f(g["loss_rise"]["median"])]
                cells += [f"{_f(m[q]['median'])} / {_f(n[q]['median'])}"
                          for q in ("grad_norm_before", "grad_norm_last_before")]
                out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return out


def _flat(arrays: dict) -> np.ndarray:
    return np.concatenate([np.ravel(arrays[k]).astype(np.float64) for k in sorted(arrays)])


def victim_rows(sweep: Path) -> list[str]:
    from fl_sim.config import load_config
    from fl_sim.models import model_from
    from fl_sim.snapshots import SnapshotStore
    from fl_sim.splits import Split
    from fl_sim.target import load_data, model_spec
    from fl_sim.training import predict_logits

    out = ["| value | seed | attack | victims | round | max abs difference of the models sent | elements differing "
           "| norm of the difference | final global models: max abs difference | test records classified differently |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for value, seed_dir, _ in runs(sweep):
        snaps = seed_dir / "snapshots"
        groups: dict[str, list[tuple[int, Path]]] = {}
        for d in sorted(snaps.glob("*-victim*")) if snaps.is_dir() else []:
            m = re.fullmatch(r"(.+)-victim(\d+)", d.name)
            groups.setdefault(m.group(1), []).append((int(m.group(2)), d))
        if not groups:
            continue
        cfg = load_config(seed_dir / "config.yaml")
        data = load_data(cfg)
        spec = model_spec(cfg, data)
        test = np.asarray(sorted(Split.load(seed_dir / "split.json").test), dtype=np.int64)
        for name, vs in groups.items():
            for (va, da), (vb, db) in combinations(vs, 2):
                sa, sb = SnapshotStore(da), SnapshotStore(db)
                last = max(sa.rounds("global"))
                ga, gb = sa.get(last, None, "global"), sb.get(last, None, "global")
                pa, pb = (predict_logits(model_from(spec, g), data.x[test]).argmax(1) for g in (ga, gb))
                final = f"{np.abs(_flat(ga) - _flat(gb)).max():.3g} | {int((pa != pb).sum())} of {len(test)}"
                for rnd in sorted(set(sa.rounds("sent", va)) & set(sb.rounds("sent", vb))):
                    d = _flat(sa.get(rnd, va, "sent")) - _flat(sb.get(rnd, vb, "sent"))
                    out.append(f"| {value} | {seed_dir.name} | {name} | {va}, {vb} | {rnd} | {np.abs(d).max():.3g} "
                               f"| {np.mean(d != 0):.4f} | {np.linalg.norm(d):.3g} | {final} |")
    return out


def main(sweep: Path) -> None:
    print(f"Sweep directory: {sweep.name}\n\n## Attacks\n")
    print("\n".join(attack_rows(sweep)))
    print("\n## Pushes (fl_sim/push.py: results.json settings.<federation>.push)\n")
    print("\n".join(push_rows(sweep)))
    rows = victim_rows(sweep)
    if len(rows) > 2:
        print("\n## Two victims' federations of one attack\n")
        print("\n".join(rows))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
