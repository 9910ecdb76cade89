"""Black-box shadow-model attack (Shokri et al., S&P 2017), the paper's black-box baseline.

The attacker trains shadow models on data like the target's, so it knows which records
each shadow saw. Each shadow's prediction vectors on its own training half ("in") and on
the other half ("out") teach an attack classifier what a member's prediction looks like;
that classifier then scores the target model's prediction vectors.

Model training is injected (``train_fn``, ``predict_fn``), so this module does not depend
on any training code or framework.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

PROB_EPS = 1e-12


def prediction_features(probs: np.ndarray, y: np.ndarray, top_k: int, num_classes: int) -> np.ndarray:
    """Attack input per record: (n, k + 1 + C) float64.

    The ``k`` largest probabilities in descending order (sorting makes the vector
    class-agnostic, so one classifier serves all classes), log p(true class), and the
    one-hot class (lets a global classifier condition on the class, as Shokri's
    per-class models do).
    probs: (n, C) probabilities; y: (n,) int labels.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y).reshape(-1).astype(np.int64)
    top = -np.sort(-p, axis=1)[:, :top_k]
    p_true = np.log(np.clip(p[np.arange(len(y)), y], PROB_EPS, 1.0))[:, None]
    return np.hstack([top, p_true, np.eye(num_classes)[y]])


class ShadowModelAttack:
    """Shadow-model membership inference.

    train_fn(x, y, seed) -> model; predict_fn(model, x) -> (n, C) probabilities.
    n_shadows: shadow models, each trained on a random half of the attacker's data.
    top_k: sorted probabilities kept; per_class: one attack classifier per class
    (Shokri et al.) instead of one global classifier (classes with too few shadow
    records fall back to the global one). hidden: attack MLP widths.

    After ``fit``: ``threshold_`` = 0.5 (shadow in/out halves are balanced, so the
    classifier's probability is already calibrated to the 50/50 prior).
    """

    def __init__(
        self,
        train_fn: Callable,
        predict_fn: Callable,
        n_shadows: int = 4,
        *,
        top_k: int = 3,
        per_class: bool = False,
        hidden: tuple[int, ...] = (64,),
        seed: int = 0,
    ):
        if n_shadows < 1:
            raise ValueError("n_shadows must be at least 1")
        self.train_fn, self.predict_fn = train_fn, predict_fn
        self.n_shadows, self.top_k, self.per_class = n_shadows, top_k, per_class
        self.hidden, self.seed = tuple(hidden), seed

    def _classifier(self, n: int, seed: int):
        return make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=self.hidden, max_iter=500, early_stopping=n >= 100,
                          random_state=seed),
        )

    def fit(self, x_known, y_known, is_member_known=None) -> "ShadowModelAttack":
        """Train shadows and the attack classifier(s) on the attacker's own data.

        x_known: (n, ...) inputs; y_known: (n,) int labels. ``is_member_known`` (target
        membership of these records) is accepted for a uniform attack interface but not
        needed: shadow membership is known by construction, and the target model is not
        queried here.
        """
        x = np.asarray(x_known)
        y = np.asarray(y_known).reshape(-1).astype(np.int64)
        if is_member_known is not None and len(is_member_known) != len(y):
            raise ValueError("is_member_known length differs from y_known")
        self.num_classes_ = int(y.max()) + 1
        feats, labels, classes = [], [], []
        for k in range(self.n_shadows):
            rng = np.random.default_rng([self.seed, k])
            perm = rng.permutation(len(y))
            half = len(y) // 2
            model = self.train_fn(x[perm[:half]], y[perm[:half]], seed=int(rng.integers(2**31)))
            for idx, member in ((perm[:half], 1), (perm[half:], 0)):
                probs = np.asarray(self.predict_fn(model, x[idx]))
                self.num_classes_ = max(self.num_classes_, probs.shape[1])
                feats.append(probs)
                labels.append(np.full(len(idx), member))
                classes.append(y[idx])
        self.top_k_ = min(self.top_k, self.num_classes_)
        yc = np.concatenate(classes)
        X = np.vstack([prediction_features(p, c, self.top_k_, self.num_classes_) for p, c in zip(feats, classes)])
        m = np.concatenate(labels)
        self.global_ = self._classifier(len(m), self.seed).fit(X, m)
        self.per_class_ = {}
        if self.per_class:
            for c in range(self.num_classes_):
                sel = yc == c
                if min(int(m[sel].sum()), int((1 - m[sel]).sum())) >= 10:
                    self.per_class_[c] = self._classifier(int(sel.sum()), self.seed + 1 + c).fit(X[sel], m[sel])
        self.threshold_ = 0.5
        return self

    def score_target(self, probs_target, y) -> np.ndarray:
        """(n,) P(member) for the target model's probabilities ``probs_target`` (n, C)
        on records with labels ``y`` (n,)."""
        y = np.asarray(y).reshape(-1).astype(np.int64)
        X = prediction_features(probs_target, y, self.top_k_, self.num_classes_)
        s = self.global_.predict_proba(X)[:, 1]
        for c, clf in self.per_class_.items():
            sel = y == c
            if sel.any():
                s[sel] = clf.predict_proba(X[sel])[:, 1]
        return s
