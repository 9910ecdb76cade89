"""Loss-threshold attack (Yeom et al. 2018): members have lower loss.

score = -loss (mean over snapshots, or the last snapshot's); the threshold is the one
that maximizes accuracy on the attacker's known members and non-members.
"""

from __future__ import annotations

import numpy as np

from attacks.base import MembershipAttack, Rule
from attacks.metrics import choose_threshold
from attacks.nasr import as_snapshots


class LossThreshold(MembershipAttack):
    """``reduce``: "mean" (average loss over snapshots) or "last" (last snapshot only).

    ``fit(features, is_member)``: features = list of FeatureSet of the known records,
    is_member (n,) 0/1, required (only ``threshold_`` is learned). ``score_samples``
    needs no fitting. After ``fit``: ``threshold_`` on the score scale (i.e. minus a
    loss in nats).
    """

    _param_rules = {"reduce": Rule(lambda v: v in ("mean", "last"), "must be 'mean' or 'last'")}

    def __init__(self, reduce: str = "mean"):
        self.reduce = reduce
        self._validate_params()

    def score_samples(self, features) -> np.ndarray:
        """(n,) minus the (mean or last) cross-entropy loss, in nats; needs no fitting."""
        snaps = as_snapshots(features)
        if self.reduce == "last":
            snaps = snaps[-1:]
        return -np.mean([np.asarray(fs.loss, dtype=np.float64) for fs in snaps], axis=0)

    def fit(self, features, is_member=None) -> LossThreshold:
        """Choose ``threshold_`` on known records; features: list of FeatureSet."""
        self._validate_params()
        self._require_labels(is_member)
        self.threshold_ = choose_threshold(self.score_samples(features), is_member)
        return self
