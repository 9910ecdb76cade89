"""Calibrated attacks with reference models: LiRA offline (Carlini et al., S&P 2022).

Reference models are trained WITHOUT the target records: shadow models in the
stand-alone setting, the other participants' models in federated learning. Comparing
the target model's confidence on a record with how confident models that never saw it
are removes the per-record difficulty that a global loss threshold ignores.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

from attacks.base import MembershipAttack, at_least, positive
from attacks.metrics import choose_threshold


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


def _pooled_std(ref_confs: np.ndarray) -> float:
    r = np.asarray(ref_confs, dtype=np.float64)
    if r.shape[1] >= 2:
        return float(np.sqrt(np.mean(r.var(axis=1, ddof=1))))
    return float(r.std())  # one reference each: only the spread across records is known


def lira_features(target_conf, ref_confs) -> np.ndarray:
    """LiRA's input: (n, 1 + R) float64, column 0 the target confidence (n,), columns
    1..R the reference confidences (n, R) (or (n,) for R = 1) of the same records."""
    t = np.asarray(target_conf, dtype=np.float64).reshape(-1)
    r = np.asarray(ref_confs, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    if r.ndim != 2 or r.shape[0] != len(t):
        raise ValueError(f"ref_confs {r.shape} must be (n, R) with n = {len(t)} target confidences")
    return np.column_stack([t, r])


def _split_features(features) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] < 2:
        raise ValueError(f"LiRA features must be (records, 1 + references) with at least one reference, "
                         f"got shape {f.shape}")
    return np.ascontiguousarray(f[:, 0]), np.ascontiguousarray(f[:, 1:])


class LiRAOffline(MembershipAttack):
    """Offline LiRA: a one-sided test against each record's OUT distribution.

    For record i with reference confidences phi_ref[i, :] (models that did not train on
    i), fit N(mu_i, sigma_i^2) and score the target confidence phi_i by
    -log P[N(mu_i, sigma_i^2) >= phi_i], i.e. minus the log one-sided p-value (higher =
    more member-like). With fewer than ``min_refs_per_record`` references a single
    pooled sigma is used (per-record variances from few samples are too noisy; Carlini
    et al. recommend a global variance for small reference counts).

    Features: (n, 1 + R) float array (see :func:`lira_features`): column 0 phi under the
    target model, columns 1..R phi under R OUT reference models.
    ``fit(features, is_member=None)`` estimates the pooled sigma ``std_`` from the
    reference columns (any records, e.g. a larger population than those scored) and
    sets ``threshold_`` = ``choose_threshold`` of its scores when ``is_member`` is given,
    else 0.0 (``needs_labels = False``). Without ``fit``, ``score_samples`` pools sigma
    over the records it scores.
    """

    needs_labels = False
    _param_rules = {"min_refs_per_record": at_least(1), "min_std": positive()}

    def __init__(self, min_refs_per_record: int = 32, min_std: float = 1e-3):
        self.min_refs_per_record, self.min_std = min_refs_per_record, min_std

    def fit(self, features, is_member=None) -> LiRAOffline:
        """features: (m, 1 + R) confidences of m records (see class docstring)."""
        self._validate_params()
        _, r = _split_features(features)
        self.std_ = max(_pooled_std(r), self.min_std)
        if is_member is None:
            self.threshold_ = 0.0
        else:
            self.threshold_ = choose_threshold(self.score_samples(features), is_member)
        return self

    def score_samples(self, features) -> np.ndarray:
        """features: (n, 1 + R). Returns (n,) -log p-value (float64, >= 0)."""
        self._validate_params()
        t, r = _split_features(features)
        mu = r.mean(axis=1)
        if r.shape[1] >= self.min_refs_per_record:
            std = np.maximum(r.std(axis=1, ddof=1), self.min_std)
        else:
            std = getattr(self, "std_", None) or max(_pooled_std(r), self.min_std)
        return -norm.logsf((t - mu) / std)

