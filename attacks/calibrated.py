"""Calibrated attacks with reference models: LiRA offline (Carlini et al., S&P 2022)
and RMIA (Zarifzadeh et al., ICML 2024).

Reference models are trained WITHOUT the target records: shadow models in the
stand-alone setting, the other participants' models in federated learning. Comparing
the target model's confidence on a record with how confident models that never saw it
are removes the per-record difficulty that a global loss threshold ignores.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm


def _labels(y, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2:  # one-hot
        y = y.argmax(1)
    y = y.reshape(-1).astype(np.int64)
    if len(y) != n:
        raise ValueError(f"{len(y)} labels for {n} records")
    return y


def logit_confidence(logits, y) -> np.ndarray:
    """phi = log(p_y / (1 - p_y)) from logits, without forming p.

    log p_y = z_y - LSE(z) and log(1 - p_y) = LSE(z_{j != y}) - LSE(z), so
    phi = z_y - LSE_{j != y}(z_j): exact and finite even when p_y rounds to 1.
    logits: (n, C); y: (n,) int or (n, C) one-hot. Returns (n,) float64.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = _labels(y, len(z))
    rows = np.arange(len(z))
    others = z.copy()
    others[rows, y] = -np.inf
    return z[rows, y] - logsumexp(others, axis=1)


def logit_confidence_from_probs(probs, y, eps: float = 1e-12) -> np.ndarray:
    """phi from probabilities (n, C) when logits are unavailable; clipped to [eps, 1-eps]
    so it stays finite (resolution is lost for p_y within eps of 1)."""
    p = np.asarray(probs, dtype=np.float64)
    y = _labels(y, len(p))
    py = np.clip(p[np.arange(len(p)), y], eps, 1 - eps)
    return np.log(py) - np.log1p(-py)


def true_class_prob(logits, y) -> np.ndarray:
    """(n,) softmax probability of the true class, float64 (RMIA's p(x|theta))."""
    z = np.asarray(logits, dtype=np.float64)
    y = _labels(y, len(z))
    return np.exp(z[np.arange(len(z)), y] - logsumexp(z, axis=1))


def _pooled_std(ref_confs: np.ndarray) -> float:
    r = np.asarray(ref_confs, dtype=np.float64)
    if r.shape[1] >= 2:
        return float(np.sqrt(np.mean(r.var(axis=1, ddof=1))))
    return float(r.std())  # one reference each: only the spread across records is known


class LiRAOffline:
    """Offline LiRA: a one-sided test against each record's OUT distribution.

    For record i with reference confidences phi_ref[i, :] (models that did not train on
    i), fit N(mu_i, sigma_i^2) and score the target confidence phi_i by
    -log P[N(mu_i, sigma_i^2) >= phi_i], i.e. minus the log one-sided p-value (higher =
    more member-like). With fewer than ``min_refs_per_record`` references a single
    pooled sigma is used (per-record variances from few samples are too noisy; Carlini
    et al. recommend a global variance for small reference counts).

    ``fit(ref_confs)`` (optional) estimates the pooled sigma on any (m, R) reference
    confidences, e.g. a larger population than the records being scored.
    """

    def __init__(self, min_refs_per_record: int = 32, min_std: float = 1e-3):
        self.min_refs_per_record, self.min_std = min_refs_per_record, min_std

    def fit(self, ref_confs) -> "LiRAOffline":
        """ref_confs: (m, R) logit confidences of m records under R OUT reference models."""
        r = np.asarray(ref_confs, dtype=np.float64)
        if r.ndim != 2 or r.shape[1] < 1:
            raise ValueError("ref_confs must be (records, references)")
        self.global_std_ = max(_pooled_std(r), self.min_std)
        return self

    def score(self, target_conf, ref_confs) -> np.ndarray:
        """target_conf: (n,) phi under the target model; ref_confs: (n, R) phi under OUT
        reference models, same records. Returns (n,) -log p-value (float64, >= 0)."""
        t = np.asarray(target_conf, dtype=np.float64).reshape(-1)
        r = np.asarray(ref_confs, dtype=np.float64)
        if r.ndim == 1:
            r = r[:, None]
        if r.shape[0] != len(t):
            raise ValueError(f"ref_confs has {r.shape[0]} records, target_conf {len(t)}")
        mu = r.mean(axis=1)
        if r.shape[1] >= self.min_refs_per_record:
            std = np.maximum(r.std(axis=1, ddof=1), self.min_std)
        else:
            std = getattr(self, "global_std_", None) or max(_pooled_std(r), self.min_std)
        return -norm.logsf((t - mu) / std)


def rmia_score(target_p, ref_p, pop_target_p, pop_ref_p, *, gamma: float = 1.0, a: float = 0.3) -> np.ndarray:
    """RMIA offline (Zarifzadeh et al. 2024): how often x's likelihood ratio beats
    population records z's.

    target_p: (n,) p(y_x|x) under the target; ref_p: (n, R) under OUT reference models;
    pop_target_p (m,), pop_ref_p (m, R): the same for population (non-member) records z.
    Offline, p(x) = ((1 + a) * mean_ref + (1 - a)) / 2 approximates the IN/OUT average.
    Returns (n,) in [0, 1]: fraction of z with LR(x) / LR(z) > gamma.
    """
    def ratio(p, refs):
        refs = np.asarray(refs, dtype=np.float64)
        refs = refs[:, None] if refs.ndim == 1 else refs
        px = 0.5 * ((1 + a) * refs.mean(axis=1) + (1 - a))
        return np.asarray(p, dtype=np.float64).reshape(-1) / np.maximum(px, 1e-30)

    rx, rz = ratio(target_p, ref_p), np.sort(ratio(pop_target_p, pop_ref_p))
    return np.searchsorted(rz, rx / gamma, side="left") / len(rz)
