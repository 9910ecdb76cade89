"""Console text of a run: the summary lines ``fl-sim run`` prints, the one-sentence
verdict, and the re-attack table of ``fl-sim attack``."""

from __future__ import annotations


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
