"""Empirical epsilon: a lower bound on the privacy loss from a membership attack's scores.

If a mechanism is (epsilon, delta)-DP, every test that tells members from non-members obeys
TPR <= e^epsilon * FPR + delta, and, on the non-members' side, TNR <= e^epsilon * FNR + delta.
A threshold test with measured rates therefore shows

    epsilon >= ln((TPR - delta) / FPR)      or      epsilon >= ln((1 - FPR - delta) / (1 - TPR)).

The test (threshold and side) is chosen on the attacker's own known records, never on the
evaluation records, and then evaluated once: the evaluation counts are binomial, and with
one-sided Clopper-Pearson bounds at level alpha / 2 each (a lower bound on the numerator's
rate, an upper one on the denominator's) the bound holds with probability >= 1 - alpha by the
union bound. Attacks run on K participants take alpha / K each (Bonferroni) before their
maximum is reported (:func:`combine`).

Scores follow ``attacks.metrics``: higher = member; labels are 0/1 (1 = member).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta

CONFIDENCE = 0.95


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = np.asarray(labels).reshape(-1).astype(np.int64)
    if s.shape != m.shape or not np.all(np.isfinite(s)) or not np.all((m == 0) | (m == 1)):
        raise ValueError("need finite scores and 0/1 labels of the same length")
    return s, m


def cp_lower(k, n, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound (level 1 - alpha) on a rate with k of n."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    out = beta.ppf(alpha, np.maximum(k, 1e-300), n - k + 1)
    return np.where(k <= 0, 0.0, np.nan_to_num(out, nan=0.0))


def cp_upper(k, n, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound (level 1 - alpha) on a rate with k of n."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    out = beta.ppf(1 - alpha, k + 1, np.maximum(n - k, 1e-300))
    return np.where(k >= n, 1.0, np.nan_to_num(out, nan=1.0))


def epsilon_bound(hits, n_hit, false, n_false, delta: float, alpha: float) -> np.ndarray:
    """ln((rate_lo - delta) / false_rate_hi) with Clopper-Pearson bounds at alpha / 2 each,
    floored at 0; ``hits`` of ``n_hit`` and ``false`` of ``n_false`` are counts (arrays)."""
    lo = cp_lower(hits, n_hit, alpha / 2)
    hi = cp_upper(false, n_false, alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.log((lo - delta) / hi)
    return np.where(lo > delta, np.maximum(eps, 0.0), 0.0)


def _cuts(scores: np.ndarray, labels: np.ndarray):
    """Every threshold between distinct scores: (thresholds, TP, FP) of ``score >= t``."""
    u = np.unique(scores)
    thresholds = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    order = np.sort(scores[labels == 1]), np.sort(scores[labels == 0])
    tp = len(order[0]) - np.searchsorted(order[0], thresholds, side="left")
    fp = len(order[1]) - np.searchsorted(order[1], thresholds, side="left")
    return thresholds, tp, fp


def _counts(scores, labels, threshold: float, side: str) -> tuple[int, int, int, int]:
    """(hits, n_hit, false alarms, n_false) of the test ``side`` at ``threshold``:
    ``members``: members flagged (score >= t) against non-members flagged;
    ``nonmembers``: non-members passed (score < t) against members passed."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if side == "members":
        return int((pos >= threshold).sum()), len(pos), int((neg >= threshold).sum()), len(neg)
    return int((neg < threshold).sum()), len(neg), int((pos < threshold).sum()), len(pos)


def choose_test(known_scores, known_labels, delta: float, alpha: float) -> tuple[float, str]:
    """The threshold and side whose bound is largest on the attacker's known records (ties,
    and the all-zero case, go to the larger smoothed point estimate)."""
    s, m = _check(known_scores, known_labels)
    t, tp, fp = _cuts(s, m)
    n_pos, n_neg = int(m.sum()), int((1 - m).sum())
    best = (-1.0, -np.inf, float(t[0]), "members")
    for side, hits, n_hit, false, n_false in (("members", tp, n_pos, fp, n_neg),
                                              ("nonmembers", n_neg - fp, n_neg, n_pos - tp, n_pos)):
        bound = epsilon_bound(hits, n_hit, false, n_false, delta, alpha)
        with np.errstate(divide="ignore", invalid="ignore"):
            point = np.log(((hits + 0.5) / (n_hit + 1) - delta) / ((false + 0.5) / (n_false + 1)))
        point = np.nan_to_num(point, nan=-np.inf)
        i = int(np.lexsort((point, bound))[-1])
        if (bound[i], point[i]) > best[:2]:
            best = (float(bound[i]), float(point[i]), float(t[i]), side)
    return best[2], best[3]


def empirical_epsilon(known_scores, known_labels, eval_scores, eval_labels, delta: float,
                      confidence: float = CONFIDENCE) -> dict:
    """Lower bound on epsilon at ``delta`` holding with probability ``confidence``: the test
    chosen on the known records, its rates bounded on the evaluation records.

    Returns a JSON-ready dict: ``epsilon_lb`` (>= 0), ``delta``, ``confidence``, ``threshold``,
    ``side``, the evaluation's ``rate``/``false_rate`` and their bounds, and the counts."""
    alpha = 1.0 - confidence
    threshold, side = choose_test(known_scores, known_labels, delta, alpha)
    s, m = _check(eval_scores, eval_labels)
    hits, n_hit, false, n_false = _counts(s, m, threshold, side)
    if n_hit == 0 or n_false == 0:
        return {"epsilon_lb": math.nan, "delta": delta, "confidence": confidence,
                "note": "the evaluation records hold one class only"}
    return {"epsilon_lb": float(epsilon_bound(hits, n_hit, false, n_false, delta, alpha)),
            "delta": delta, "confidence": confidence, "threshold": threshold, "side": side,
            "rate": hits / n_hit, "false_rate": false / n_false,
            "rate_lower": float(cp_lower(hits, n_hit, alpha / 2)),
            "false_rate_upper": float(cp_upper(false, n_false, alpha / 2)),
            "n_members": int(m.sum()), "n_nonmembers": int((1 - m).sum())}


def combine(per: dict[str, dict]) -> dict:
    """The largest of several bounds, each computed at confidence 1 - alpha / K (Bonferroni),
    so the maximum holds at 1 - alpha."""
    valid = {k: v for k, v in per.items() if not math.isnan(v.get("epsilon_lb", math.nan))}
    if not valid:
        return {"epsilon_lb": math.nan, "note": "no participant's evaluation had both classes"}
    who, best = max(valid.items(), key=lambda kv: kv[1]["epsilon_lb"])
    conf = 1 - len(per) * (1 - best["confidence"])
    return {**best, "confidence": conf, "from": who, "per_participant": {k: v["epsilon_lb"] for k, v in per.items()}}
