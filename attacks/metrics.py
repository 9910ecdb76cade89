"""Membership-inference metrics shared by every attack.

Convention everywhere in ``attacks/``: a *score* is a float per record, higher = more
likely a member; a record is *predicted* member iff ``score >= threshold``.
Membership labels are 0/1 arrays (1 = member).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

FPR_TARGETS = ("0.001", "0.01", "0.1")
# FPRs a stored ROC curve is evaluated at: log-spaced from 1e-4 (the low-FPR region that
# matters for privacy), linear over the rest, and the reported targets exactly
ROC_GRID = np.unique(np.concatenate([[0.0], np.logspace(-4, 0, 121), np.linspace(0, 1, 51),
                                     [float(k) for k in FPR_TARGETS]]))


def _check(scores, is_member) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = np.asarray(is_member).reshape(-1).astype(np.int64)
    if s.shape != m.shape:
        raise ValueError(f"scores {s.shape} and is_member {m.shape} differ in length")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    if not np.all((m == 0) | (m == 1)):
        raise ValueError("is_member must hold only 0 and 1")
    return s, m


def choose_threshold(scores, is_member) -> float:
    """Threshold maximizing accuracy of ``score >= threshold`` on labelled data.

    Meant for the attacker's *own* known members/non-members (never evaluation data).
    Among equally good thresholds the middle one is taken, and the returned value lies
    halfway between two adjacent distinct scores, so that it generalizes to new scores
    rather than sitting exactly on a training score.

    scores: (n,) floats; is_member: (n,) 0/1. Returns a finite float.
    """
    s, m = _check(scores, is_member)
    if s.size == 0:
        raise ValueError("need at least one score")
    order = np.argsort(-s, kind="stable")
    s_sorted, m_sorted = s[order], m[order]
    # Candidate cut j (0..n) predicts the first j records (highest scores) as members;
    # only cuts between distinct values are realizable by a threshold.
    tp = np.concatenate([[0], np.cumsum(m_sorted)])
    fp = np.concatenate([[0], np.cumsum(1 - m_sorted)])
    n_neg = int((m == 0).sum())
    correct = tp + (n_neg - fp)
    valid = np.ones(s.size + 1, dtype=bool)
    valid[1:-1] = s_sorted[:-1] != s_sorted[1:]
    cand = np.flatnonzero(valid)
    best = cand[correct[cand] == correct[cand].max()]
    j = int(best[len(best) // 2])
    spread = float(s_sorted[0] - s_sorted[-1]) or 1.0
    if j == 0:  # nobody is a member: any value above the maximum
        return float(s_sorted[0] + spread)
    if j == s.size:  # everybody is a member
        return float(s_sorted[-1] - spread)
    return float((s_sorted[j - 1] + s_sorted[j]) / 2.0)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """TPR at the largest ROC point whose FPR does not exceed ``target``.

    Conservative (no interpolation past a measured point, as in Carlini et al. 2022):
    when ``target`` is below 1 / n_nonmembers this is the TPR at zero false positives.
    ``fpr``/``tpr`` must be a full ROC curve (sklearn ``roc_curve`` output, ascending).
    """
    ok = np.flatnonzero(fpr <= target + 1e-12)
    return float(tpr[ok].max()) if ok.size else 0.0


def tpr_at_fpr_interp(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """TPR linearly interpolated on the ROC curve at ``target`` FPR.

    Linear interpolation between two ROC points is achievable by randomizing between
    their thresholds, so this is an attainable (slightly optimistic) operating point.
    """
    # Several ROC points share an FPR (steps up through members); keep the highest TPR
    # of each so np.interp sees a strictly increasing abscissa.
    fu, inv = np.unique(fpr, return_inverse=True)
    tu = np.full(fu.shape, -np.inf)
    np.maximum.at(tu, inv, tpr)
    return float(np.interp(target, fu, tu))


def roc_on_grid(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray | None = None) -> np.ndarray:
    """The conservative ROC (:func:`tpr_at_fpr`) at each FPR of ``grid`` (default
    :data:`ROC_GRID`): one curve per attack that the TPR-at-FPR figures are read off, and
    that curves of several participants can be averaged on."""
    g = ROC_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    pos = np.searchsorted(np.asarray(fpr), g + 1e-12, side="right") - 1
    # tpr along sklearn's roc_curve is non-decreasing, so the last point with fpr <= g
    # carries the largest TPR there
    return np.where(pos >= 0, np.asarray(tpr)[np.clip(pos, 0, None)], 0.0)


def average_roc(rocs: list[dict]) -> dict:
    """Vertical average of ROC curves stored on :data:`ROC_GRID` (per-participant attacks
    reported as their mean): TPR averaged at every FPR of the grid."""
    tprs = np.mean([np.asarray(r["tpr"], dtype=np.float64) for r in rocs], axis=0)
    return {"fpr": [float(v) for v in ROC_GRID], "tpr": [float(v) for v in tprs]}


def membership_metrics(scores, is_member, threshold: float) -> dict:
    """Metrics of one attack on labelled evaluation records.

    scores: (n,) membership scores (higher = member); is_member: (n,) 0/1;
    threshold: chosen beforehand (e.g. by :func:`choose_threshold` on attacker data).

    Returns a JSON-ready dict: ``accuracy`` (at ``threshold``), ``auc``, ``tpr_at_fpr``
    {"0.001", "0.01", "0.1"} (conservative, see :func:`tpr_at_fpr`),
    ``tpr_at_fpr_interp`` (same keys, interpolated), ``roc`` {"fpr", "tpr"} (the
    conservative curve on :data:`ROC_GRID`, so ``tpr_at_fpr`` can be read off it),
    ``n_members``, ``n_nonmembers``, ``threshold``. With only one class
    present, ``auc`` and the ROC-based fields are NaN / empty.
    """
    s, m = _check(scores, is_member)
    n_pos, n_neg = int(m.sum()), int((1 - m).sum())
    pred = (s >= threshold).astype(np.int64)
    out: dict = {
        "accuracy": float((pred == m).mean()) if s.size else math.nan,
        "n_members": n_pos,
        "n_nonmembers": n_neg,
        "threshold": float(threshold),
    }
    if n_pos == 0 or n_neg == 0:
        out.update(
            auc=math.nan,
            tpr_at_fpr={k: math.nan for k in FPR_TARGETS},
            tpr_at_fpr_interp={k: math.nan for k in FPR_TARGETS},
            roc={"fpr": [], "tpr": []},
        )
        return out
    fpr, tpr, _ = roc_curve(m, s, drop_intermediate=False)
    out["auc"] = float(roc_auc_score(m, s))
    out["tpr_at_fpr"] = {k: tpr_at_fpr(fpr, tpr, float(k)) for k in FPR_TARGETS}
    out["tpr_at_fpr_interp"] = {k: tpr_at_fpr_interp(fpr, tpr, float(k)) for k in FPR_TARGETS}
    out["roc"] = {"fpr": [float(v) for v in ROC_GRID],
                  "tpr": [float(v) for v in roc_on_grid(fpr, tpr)]}
    return out

