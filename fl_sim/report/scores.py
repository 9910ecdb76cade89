"""The paper's Figs. 5 and 6, from each attack's per-record scores in the figure data:
the distribution of the unsupervised attack's encoded values (Fig. 5), and the ROC on
the classes of small, medium and large prediction uncertainty (Fig. 6)."""

from __future__ import annotations

import numpy as np

from fl_sim import catalog
from fl_sim.report.plotting import MEMBER, NONMEMBER, RunView, grid

UNSUPERVISED = "unsupervised"
GROUPS = ("small", "medium", "large")
MAX_PANELS = 9


def _unsupervised_absent(view: RunView) -> str:
    mode = view.results.get("mode", "federated")
    names = [n for n in catalog.names(mode) if catalog.get(n).attack == UNSUPERVISED]
    return ("no unsupervised attack ran in this run (Fig. 5 shows the encoded values of the "
            f"unsupervised attack: add {' or '.join(names) or 'one'} to attack.names, or set "
            "attack.unsupervised: true)")


def fig5(view: RunView):
    runs = [(n, e) for n, e in view.recorded() if e.get("attack_model") == UNSUPERVISED]
    if not runs:
        return _unsupervised_absent(view) if view.figdata is not None else view.missing_data()
    fig, axes = grid(len(runs), cols=3)
    for ax, (name, entry) in zip(axes, runs):
        evs = entry["evaluations"]
        mem, non = [], []
        for ev in evs:
            s = np.asarray(ev["scores"], dtype=float)
            if len(evs) > 1:  # each participant's encoder has its own scale
                s = (s - s.mean()) / (s.std() or 1.0)
            lab = np.asarray(ev["labels"])
            mem.extend(s[lab == 1])
            non.extend(s[lab == 0])
        bins = np.histogram_bin_edges(np.asarray(mem + non), bins=30)
        ax.hist(non, bins=bins, color=NONMEMBER, alpha=0.5, label=f"non-members ({len(non)})")
        ax.hist(mem, bins=bins, color=MEMBER, alpha=0.5, label=f"members ({len(mem)})")
        ax.set_xlabel("encoded value" + (" (standardized per participant)" if len(evs) > 1 else ""))
        ax.set_ylabel("records")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"Fig. 5: the unsupervised attack's encoded values: {view.label}", fontsize=10)
    return fig


def uncertainty_groups(classes: np.ndarray, entropy: np.ndarray) -> list[np.ndarray]:
    """Three lists of classes (small, medium, large prediction uncertainty): the classes
    present, ranked by the mean prediction entropy of their records, cut in three."""
    present = np.unique(classes)
    mean = np.array([entropy[classes == c].mean() for c in present])
    return [present[idx] for idx in np.array_split(np.argsort(mean, kind="stable"), 3)]


def group_rocs(ev: dict) -> list[tuple[np.ndarray, float, int] | None]:
    """Per uncertainty group of one evaluation: (TPR on the ROC grid, AUC, classes), or
    None where the group lacks members or non-members."""
    from sklearn.metrics import roc_auc_score, roc_curve

    from attacks.metrics import roc_on_grid

    classes, lab = np.asarray(ev["classes"]), np.asarray(ev["labels"])
    scores, ent = np.asarray(ev["scores"], dtype=float), np.asarray(ev["entropy"], dtype=float)
    out = []
    for group in uncertainty_groups(classes, ent):
        keep = np.isin(classes, group)
        y, s = lab[keep], scores[keep]
        if len(np.unique(y)) < 2:
            out.append(None)
            continue
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        out.append((roc_on_grid(fpr, tpr), float(roc_auc_score(y, s)), len(group)))
    return out


def fig6(view: RunView):
    from attacks.metrics import ROC_GRID

    runs = view.recorded()
    if not runs:
        return view.missing_data()
    fig, axes = grid(min(len(runs), MAX_PANELS), cols=3, panel=(4.2, 4.0))
    for ax, (name, entry) in zip(axes, runs):
        per_group = list(zip(*[group_rocs(ev) for ev in entry["evaluations"]]))
        for label, color, curves in zip(GROUPS, ("tab:green", "tab:orange", "tab:red"), per_group):
            curves = [c for c in curves if c is not None]
            if not curves:
                continue
            tpr = np.mean([c[0] for c in curves], axis=0)
            auc = np.mean([c[1] for c in curves])
            ax.plot(ROC_GRID, tpr, color=color, lw=1.5,
                    label=f"{label} uncertainty (~{round(np.mean([c[2] for c in curves]))} classes, AUC {auc:.2f})")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=6.5, loc="lower right")
    fig.suptitle(f"Fig. 6: ROC by class prediction uncertainty: {view.label}", fontsize=10)
    return fig
