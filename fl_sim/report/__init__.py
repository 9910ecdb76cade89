"""Reports: the console summary, ``report.md`` and ``figures/*.png`` of one run."""

from __future__ import annotations

from pathlib import Path

from fl_sim.io import atomic_write_bytes


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def attack_rows(attacks: list[dict]) -> list[str]:
    rows = ["| attack | accuracy % | AUC | TPR@0.1%FPR | TPR@1%FPR | TPR@10%FPR | members / non-members |",
            "|---|---|---|---|---|---|---|"]
    for a in attacks:
        t = a.get("tpr_at_fpr", {})
        rows.append(f"| {a['name']} | {_pct(a.get('accuracy'))} | {a.get('auc', float('nan')):.3f} | "
                    f"{_pct(t.get('0.001'))} | {_pct(t.get('0.01'))} | {_pct(t.get('0.1'))} | "
                    f"{a.get('n_members')} / {a.get('n_nonmembers')} |")
    return rows


def on_victim(attack: dict) -> dict | None:
    """An attack's metrics on the victims' records: its ``on_victim`` part when it reports
    every participant, itself when it is judged on the victims alone (active attacks)."""
    if "on_victim" in attack:
        return attack["on_victim"]
    return attack if attack.get("judged_on") == "the victims' records" else None


def verdict(attacks: list[dict]) -> str | None:
    """One sentence: the strongest attack on the victims' records and its margin over the
    passive global attacker on the same records."""
    on = {a["name"]: v for a in attacks if "auc" in a and (v := on_victim(a)) is not None}
    if not on:
        return None
    best = max(on, key=lambda n: on[n]["auc"])
    line = f"Strongest attack on the victims' records: {best} (AUC {on[best]['auc']:.3f}"
    if "global_passive" in on and best != "global_passive":
        gain = on[best]["auc"] - on["global_passive"]["auc"]
        return line + f"), {gain:+.3f} AUC over the passive global attacker on the same records."
    return line + ")."


def summary_lines(results: dict) -> list[str]:
    tgt = results["target"]
    lines = [f"{results.get('dataset_display_name', results['dataset'])}, {results['model']}, "
             f"seed {results['seed']}: target train acc {_pct(tgt.get('train_acc'))}%, "
             f"test acc {_pct(tgt.get('test_acc'))}%"]
    for name, s in results.get("settings", {}).items():
        if name != "passive":
            lines.append(f"  under {name}: train acc {_pct(s['train_acc'])}%, "
                         f"test acc {_pct(s['test_acc'])}%")
    if results.get("attacks"):
        lines += attack_rows(results["attacks"])
        for a in results["attacks"]:
            v = a.get("on_victim")
            if v:
                lines.append(f"  {a['name']} on the records of participants {v['participants']} alone "
                             f"(as the active attacks): accuracy {_pct(v['accuracy'])}%, "
                             f"AUC {v['auc']:.3f}, TPR@1%FPR {_pct(v['tpr_at_fpr']['0.01'])}%")
    for f in results.get("failures", []):
        lines.append(f"  failure: participant {f['participant']} in round {f['round']} "
                     f"({f.get('setting')}): {f.get('reason')}")
    lines.append(f"total time {results['timing']['total_s']:.1f} s")
    return lines


def _figures(run_dir: Path, results: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    made = []
    attacks = [a for a in results.get("attacks", []) if a.get("roc")]
    if attacks:
        fig, ax = plt.subplots(figsize=(5, 5))
        for a in attacks:
            ax.plot(a["roc"]["fpr"], a["roc"]["tpr"], label=f"{a['name']} (AUC {a['auc']:.2f})")
        ax.plot([1e-4, 1], [1e-4, 1], "k:", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(1e-3, 1)
        ax.set_ylim(1e-3, 1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"{results.get('dataset_display_name', results['dataset'])}, {results['model']}")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(fig_dir / "roc.png", dpi=110)
        plt.close(fig)
        made.append("figures/roc.png")
    settings = results.get("settings") or {"target": results["target"]}
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(settings)), 3.5))
    names = list(settings)
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [settings[n]["train_acc"] for n in names], 0.4, label="train")
    ax.bar([x + 0.2 for x in xs], [settings[n]["test_acc"] for n in names], 0.4, label="test")
    ax.set_xticks(list(xs), names, rotation=20, fontsize=7, ha="right")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(fig_dir / "target_accuracy.png", dpi=110)
    plt.close(fig)
    made.append("figures/target_accuracy.png")
    return made


def write_report(run_dir: Path, results: dict) -> None:
    run_dir = Path(run_dir)
    figures = _figures(run_dir, results)
    lines = [f"# Run report: {results.get('dataset_display_name', results['dataset'])}, "
             f"{results['model']}, seed {results['seed']}", ""]
    lines += summary_lines(results)
    if (v := verdict(results.get("attacks", []))) is not None:
        lines += ["", v]
    lines += [""] + [f"![{f}]({f})" for f in figures]
    atomic_write_bytes(run_dir / "report.md", ("\n".join(lines) + "\n").encode())


def reattack_table(rows: list[dict]) -> str:
    out = ["| epochs | attack | accuracy % | AUC | TPR@1%FPR | AUC on the victim's records |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        for a in r["attacks"]:
            epochs = ",".join(map(str, r["epochs"]))
            if "auc" not in a:
                out.append(f"| {epochs} | {a['name']} | skipped: {a.get('skipped', '?')} | | | |")
                continue
            victim = a.get("on_victim", {}).get("auc")
            out.append(f"| {epochs} | {a['name']} | {_pct(a['accuracy'])} | {a['auc']:.3f} | "
                       f"{_pct(a['tpr_at_fpr']['0.01'])} | {'' if victim is None else f'{victim:.3f}'} |")
    return "\n".join(out)
