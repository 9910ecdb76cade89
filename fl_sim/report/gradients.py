"""The paper's Figs. 3 and 4, from the figure data: the norm of the last layer's weight
gradient of each evaluation record, members against non-members, per training (the
passive federation, an isolated victim's, ...) — across the observed epochs (Fig. 3) and
as a distribution at the last observed epoch (Fig. 4)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from fl_sim.report.plotting import MEMBER, NONMEMBER, RunView, grid, new_figure


def by_training(view: RunView) -> dict[str, tuple[str, list[dict]]]:
    """training -> (attack, its evaluations with gradient norms): the first attack of each
    training that recorded them (the norms depend on the snapshots, not on the attack)."""
    out: dict[str, tuple[str, list[dict]]] = {}
    for name, entry in view.recorded():
        evs = [e for e in entry["evaluations"] if e.get("grad_norm")]
        if evs and entry["training"] not in out:
            out[entry["training"]] = (name, evs)
    return out


def norms_per_snapshot(evals: list[dict]) -> tuple[list, dict, dict]:
    """(snapshot names in order, name -> members' norms, name -> non-members' norms),
    pooled over the evaluations (participants)."""
    order: list = []
    members: dict = {}
    nonmembers: dict = {}
    for ev in evals:
        lab = np.asarray(ev["labels"])
        for snap, norms in zip(ev["snapshots"], ev["grad_norm"]):
            if snap not in order:
                order.append(snap)
            n = np.asarray(norms, dtype=float)
            members.setdefault(snap, []).extend(n[lab == 1])
            nonmembers.setdefault(snap, []).extend(n[lab == 0])
    return order, members, nonmembers


def _sem(v) -> float:
    v = np.asarray(v, dtype=float)
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def fig3(view: RunView):
    data = by_training(view)
    if not data:
        return view.missing_data() if not view.recorded() else \
            "no attack of this run recorded per-record gradients (attack.layers selects none)"
    fig, ax = new_figure(8.6, 4.4)
    lows, highs = [], []
    for color, (training, (_attack, evals)) in zip(_colors(), data.items()):
        order, mem, non = norms_per_snapshot(evals)
        numeric = all(isinstance(s, (int, float)) for s in order)
        xs = np.asarray(order, float) if numeric else np.arange(len(order))
        for store, style, who, own in ((mem, "-", "members", MEMBER), (non, "--", "non-members", NONMEMBER)):
            ys = np.array([np.mean(store[s]) for s in order])
            # one training: the member/non-member colours of every figure; several: one colour each
            ax.errorbar(xs, ys, yerr=[_sem(store[s]) for s in order], fmt=style + "o", ms=4, capsize=3,
                        color=own if len(data) == 1 else color, label=f"{training}: {who}")
            lows.append(ys.min())
            highs.append(ys.max())
        if not numeric:
            ax.set_xticks(xs, [str(s) for s in order])
    if min(lows) > 0 and max(highs) / min(lows) > 30:
        ax.set_yscale("log")
    ax.set_xlabel("training epoch (round) observed")
    ax.set_ylabel("last-layer gradient norm (mean ± s.e.)")
    ax.set_title(f"Fig. 3: gradient norm across epochs: {view.label}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside: the curves fill the axes
    return fig


def fig4(view: RunView):
    data = by_training(view)
    if not data:
        return view.missing_data() if not view.recorded() else \
            "no attack of this run recorded per-record gradients (attack.layers selects none)"
    fig, axes = grid(len(data), cols=3)
    for ax, (training, (attack, evals)) in zip(axes, data.items()):
        mem, non, last = [], [], Counter()
        for ev in evals:
            lab = np.asarray(ev["labels"])
            n = np.asarray(ev["grad_norm"][-1], dtype=float)
            mem.extend(n[lab == 1])
            non.extend(n[lab == 0])
            last[str(ev["snapshots"][-1])] += 1
        both = np.asarray(mem + non)
        positive = both[both > 0]
        lo, hi = (positive.min(), positive.max()) if len(positive) else (1e-6, 1.0)
        bins = np.logspace(np.log10(lo), np.log10(hi * 1.0001), 30) if hi > lo else 30
        ax.hist(np.clip(non, lo, None), bins=bins, color=NONMEMBER, alpha=0.5, label=f"non-members ({len(non)})")
        ax.hist(np.clip(mem, lo, None), bins=bins, color=MEMBER, alpha=0.5, label=f"members ({len(mem)})")
        if hi > lo:
            ax.set_xscale("log")
        ax.set_xlabel("last-layer gradient norm")
        ax.set_ylabel("records")
        ax.set_title(f"{training}\n{attack}'s records, epoch {last.most_common(1)[0][0]}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"Fig. 4: distribution of gradient norms: {view.label}", fontsize=10)
    return fig


def _colors():
    return ["tab:purple", "tab:green", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
            "tab:gray"] * 4
