"""Loss-threshold attack (Yeom et al. 2018): members have lower loss.

score = -loss (mean over snapshots, or the last snapshot's); the threshold is the one
that maximizes accuracy on the attacker's known members and non-members.
"""

from __future__ import annotations

import numpy as np

from attacks.metrics import choose_threshold
from attacks.nasr import as_snapshots


class LossThreshold:
    """``reduce``: "mean" (average loss over snapshots) or "last" (last snapshot only).

    After ``fit``: ``threshold_`` on the score scale (i.e. minus a loss in nats).
    """

    def __init__(self, reduce: str = "mean"):
        if reduce not in ("mean", "last"):
            raise ValueError(f"reduce must be 'mean' or 'last', not {reduce!r}")
        self.reduce = reduce

    def score(self, features) -> np.ndarray:
        """(n,) minus the (mean or last) cross-entropy loss, in nats; needs no fitting."""
        snaps = as_snapshots(features)
        if self.reduce == "last":
            snaps = snaps[-1:]
        return -np.mean([np.asarray(fs.loss, dtype=np.float64) for fs in snaps], axis=0)

    def fit(self, features, is_member) -> "LossThreshold":
        """Choose ``threshold_`` on known records; features: list of FeatureSet."""
        self.threshold_ = choose_threshold(self.score(features), is_member)
        return self

    def predict(self, features) -> np.ndarray:
        return (self.score(features) >= self.threshold_).astype(np.int64)
