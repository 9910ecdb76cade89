"""Compact white-box attack: logistic regression on loss and gradient norms.

A cheap, hard-to-overfit baseline for the Nasr network: per snapshot, log(loss) and
log(L2 norm of each selected parameter's per-example gradient) -- the quantities whose
member/non-member gap the paper's Fig. 3 shows -- standardized, then a logistic
regression. Scales to many snapshots and layers because it sees only 1 + #params
numbers per snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from attacks.base import MembershipAttack, positive
from attacks.metrics import choose_threshold
from attacks.nasr import LOSS_EPS, as_snapshots, select_grad_names


def compact_features(features, layers: Sequence[str] | None = None) -> np.ndarray:
    """(n, k) float64: per snapshot [log(loss + 1e-6), log(grad norm + 1e-12) per selected
    parameter]; column order fixed by snapshot order and parameter names."""
    cols = []
    for fs in as_snapshots(features):
        cols.append(np.log(np.asarray(fs.loss, dtype=np.float64) + LOSS_EPS))
        norms = fs.grad_norms()
        for name in select_grad_names(fs, layers):
            cols.append(np.log(norms[name].astype(np.float64) + 1e-12))
    return np.stack(cols, axis=1)


class CompactWhiteBox(MembershipAttack):
    """Standardized logistic regression on :func:`compact_features`.

    ``C``: inverse L2 strength (> 0). ``fit(features, is_member)``: features = list of
    FeatureSet of the known records, is_member (n,) 0/1, required. ``score_samples``:
    (n,) P(member). After ``fit``: ``model_`` (sklearn pipeline), ``threshold_``
    (accuracy-maximizing on the known data), ``n_features_``.
    """

    _param_rules = {"C": positive()}

    def __init__(self, seed: int = 0, *, layers: Sequence[str] | None = None, C: float = 1.0):
        self.seed, self.layers, self.C = seed, None if layers is None else list(layers), C

    def fit(self, features, is_member=None) -> CompactWhiteBox:
        """features: list of FeatureSet (known records); is_member: (n,) 0/1."""
        self._validate_params()
        self._require_labels(is_member)
        X = compact_features(features, self.layers)
        y = np.asarray(is_member).reshape(-1).astype(np.int64)
        self.model_ = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C, max_iter=2000, class_weight="balanced", random_state=self.seed),
        ).fit(X, y)
        self.n_features_ = X.shape[1]
        self.threshold_ = choose_threshold(self.model_.predict_proba(X)[:, 1], y)
        return self

    def score_samples(self, features) -> np.ndarray:
        """(n,) P(member) from the logistic regression."""
        X = compact_features(features, self.layers)
        if X.shape[1] != self.n_features_:
            raise ValueError(f"expected {self.n_features_} compact features, got {X.shape[1]}")
        return self.model_.predict_proba(X)[:, 1]
