"""Table for docs/results/whitebox_location30: every passive global attack of the
compare run, plus the white-box network re-run on the same snapshots with other inputs.
Usage: python summarize.py OUT (the directory run.sh wrote)."""

import json
import sys
from pathlib import Path

import numpy as np

VARIANTS = {  # reattack file -> row label
    "paper_network": "global_passive, the paper's network (gradient matrices; outputs, loss, label, gradients)",
    "no_references": "global_passive, gradient norms and loss, no references",
    "all_inputs": "global_passive, all five inputs (outputs, label added)",
}


def stat(values, scale=1.0, digits=3):
    v = np.asarray(values, dtype=float) * scale
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.{digits}f} ± {sd:.{digits}f}"


def main(out: Path) -> None:
    seeds = sorted(out.glob("seed-*"))
    rows: dict[str, list[dict]] = {}
    train, test = [], []
    for run in seeds:
        res = json.loads((run / "results.json").read_text())
        train.append(res["settings"]["passive"]["train_acc"])
        test.append(res["settings"]["passive"]["test_acc"])
        for a in res["attacks"]:
            rows.setdefault(a["name"] + " (the config's)" if a["name"] == "global_passive" else a["name"], []).append(a)
        for stem, label in VARIANTS.items():
            f = run / f"{stem}.json"
            if f.is_file():
                rows.setdefault(label, []).extend(json.loads(f.read_text())["rows"][0]["attacks"])
    print(f"Location-30, fc, {len(seeds)} seeds; target (passive federation) train accuracy "
          f"{stat(train, 100, 1)} %, test {stat(test, 100, 1)} %.\n")
    print("| attack | AUC | TPR at 1 % FPR, % | TPR at 0.1 % FPR, % | accuracy, % | AUC on the victim's records | "
          "AUC per seed |")
    print("|---|---|---|---|---|---|---|")
    for label, rs in rows.items():
        auc = [r["auc"] for r in rs]
        victim = [r["on_victim"]["auc"] for r in rs if "on_victim" in r]
        print(f"| {label} | {stat(auc)} | {stat([r['tpr_at_fpr']['0.01'] for r in rs], 100, 1)} | "
              f"{stat([r['tpr_at_fpr']['0.001'] for r in rs], 100, 1)} | {stat([r['accuracy'] for r in rs], 100, 1)} | "
              f"{stat(victim) if victim else ''} | {' / '.join(f'{a:.3f}' for a in auc)} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
