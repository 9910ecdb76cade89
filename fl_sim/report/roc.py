"""ROC curves (one per attack, read from ``results.json``: every attack stores its ROC on
the FPR grid of :data:`attacks.metrics.ROC_GRID`) and the target-accuracy bars."""

from __future__ import annotations

import numpy as np

from fl_sim.report.plotting import RunView, new_figure

LOG_FPR_MIN = 1e-4


def _curves(view: RunView) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    out = []
    for a in view.results.get("attacks", []):
        roc = a.get("roc") or {}
        if roc.get("fpr") and "auc" in a:
            out.append((a["name"], np.asarray(roc["fpr"], float), np.asarray(roc["tpr"], float), a["auc"]))
    return out


def _roc(view: RunView, log: bool):
    curves = _curves(view)
    if not curves:
        return "no attack of this run has a ROC curve (none ran, or all were skipped)"
    fig, ax = new_figure(5.6, 5.0)
    for name, fpr, tpr, auc in curves:
        if log:  # a log axis cannot show FPR 0 or TPR 0; the curve starts at the first point above
            keep = (fpr >= LOG_FPR_MIN) & (tpr > 0)
            fpr, tpr = fpr[keep], tpr[keep]
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUC {auc:.3f})")
    lo = LOG_FPR_MIN if log else 0.0
    ax.plot([lo, 1], [lo, 1], "k:", lw=0.8, label="chance")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlim(lo, 1)
    ax.set_ylim(lo, 1.02 if not log else 1)
    ax.set_xlabel("false positive rate" + (" (log)" if log else ""))
    ax.set_ylabel("true positive rate" + (" (log)" if log else ""))
    ax.set_title(f"ROC{' (log-log)' if log else ''}: {view.label}")
    ax.grid(alpha=0.3, which="both" if log else "major")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def roc_linear(view: RunView):
    return _roc(view, log=False)


def roc_loglog(view: RunView):
    return _roc(view, log=True)


def target_accuracy(view: RunView):
    """Train and test accuracy of every training the run made."""
    r = view.results
    settings = r.get("settings") or {"target": r["target"]}
    names = list(settings)
    fig, ax = new_figure(max(4.5, 1.5 * len(names) + 1.5), 3.8)
    xs = np.arange(len(names))
    ax.bar(xs - 0.2, [settings[n].get("train_acc", np.nan) for n in names], 0.4, label="train")
    ax.bar(xs + 0.2, [settings[n].get("test_acc", np.nan) for n in names], 0.4, label="test")
    ax.set_xticks(xs, names, rotation=20, fontsize=7, ha="right")
    ax.set_xlabel("training")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Target accuracy: {view.label}")
    ax.legend(fontsize=8, loc="lower right")
    return fig
