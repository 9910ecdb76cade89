"""Black-box shadow-model attack (Shokri et al., S&P 2017), the paper's black-box baseline.

The attacker trains shadow models on data like the target's, so it knows which records
each shadow saw. Each shadow's prediction vectors on its own training half ("in") and on
the other half ("out") teach an attack classifier what a member's prediction looks like;
that classifier then scores the target model's prediction vectors.

Model training is injected (``train_fn``, ``predict_fn``), so this module does not depend
on any training code or framework. The attacker's own data the shadows learn from is given
at construction; ``fit``/``score_samples`` read the target model's prediction vectors.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from attacks.base import MembershipAttack, at_least
from attacks.metrics import choose_threshold

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


def _target_predictions(features) -> tuple[np.ndarray, np.ndarray]:
    """``features`` = (probs (n, C), y (n,)) -> float64 probs, int64 labels."""
    if not isinstance(features, (tuple, list)) or len(features) != 2:
        raise ValueError("features must be a (probs, y) pair: the target model's (n, C) probabilities "
                         "and the records' (n,) labels")
    probs = np.asarray(features[0], dtype=np.float64)
    y = np.asarray(features[1]).reshape(-1).astype(np.int64)
    if probs.ndim != 2 or len(probs) != len(y):
        raise ValueError(f"probs {probs.shape} must be (n, C) with n = {len(y)} labels")
    return probs, y


class ShadowModelAttack(MembershipAttack):
    """Shadow-model membership inference.

    train_fn(x, y, seed) -> model; predict_fn(model, x) -> (n, C) probabilities.
    x_ref (n, ...), y_ref (n,) int: the attacker's own data the shadows train on.
    n_shadows: shadow models, each trained on a random half of (x_ref, y_ref).
    top_k: sorted probabilities kept; per_class: one attack classifier per class
    (Shokri et al.) instead of one global classifier (classes with too few shadow
    records fall back to the global one). hidden: attack MLP widths.

    ``fit(features, is_member=None)`` trains the shadows and the attack classifier(s);
    features = (probs (n, C), y (n,)): the target model's probabilities on the
    attacker's known records and their labels. ``score_samples((probs, y))``: (n,)
    P(member). Labels are optional (``needs_labels = False``): shadow membership is
    known by construction.

    After ``fit``: ``threshold_`` = ``choose_threshold`` of the known records' scores
    when ``is_member`` is given, else 0.5 (shadow in/out halves are balanced, so the
    classifier's probability is already calibrated to the 50/50 prior);
    ``num_classes_``, ``top_k_``, ``global_``, ``per_class_``.
    """

    needs_labels = False
    _param_rules = {"n_shadows": at_least(1)}

    def __init__(
        self,
        train_fn: Callable,
        predict_fn: Callable,
        x_ref,
        y_ref,
        n_shadows: int = 4,
        *,
        top_k: int = 3,
        per_class: bool = False,
        hidden: tuple[int, ...] = (64,),
        seed: int = 0,
    ):
        self.train_fn, self.predict_fn = train_fn, predict_fn
        self.x_ref, self.y_ref = x_ref, y_ref
        self.n_shadows, self.top_k, self.per_class = n_shadows, top_k, per_class
        self.hidden, self.seed = tuple(hidden), seed
        self._validate_params()

    def _classifier(self, n: int, seed: int):
        return make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=self.hidden, max_iter=500, early_stopping=n >= 100,
                          random_state=seed),
        )

    def fit(self, features, is_member=None) -> ShadowModelAttack:
        """Train shadows on (x_ref, y_ref) and the attack classifier(s) on their in/out
        prediction vectors; choose ``threshold_`` on ``features`` = (probs, y) of known
        records when ``is_member`` (n,) 0/1 is given, else 0.5."""
        self._validate_params()
        _, y_known = _target_predictions(features)
        if is_member is not None and len(np.asarray(is_member).reshape(-1)) != len(y_known):
            raise ValueError("is_member length differs from the number of records in features")
        self._fit_shadows()
        if is_member is None:
            self.threshold_ = 0.5
        else:
            self.threshold_ = choose_threshold(self.score_samples(features), is_member)
        return self

    def _shadow_predictions(self, x: np.ndarray, y: np.ndarray):
        """Each shadow's prediction vectors on its training half (1) and the rest (0):
        lists of probs, membership, labels; updates ``num_classes_``."""
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
        return feats, labels, classes

    def _fit_shadows(self) -> None:
        x = np.asarray(self.x_ref)
        y = np.asarray(self.y_ref).reshape(-1).astype(np.int64)
        self.num_classes_ = int(y.max()) + 1
        feats, labels, classes = self._shadow_predictions(x, y)
        self.top_k_ = min(self.top_k, self.num_classes_)
        yc = np.concatenate(classes)
        X = np.vstack([prediction_features(p, c, self.top_k_, self.num_classes_)
                       for p, c in zip(feats, classes)])
        m = np.concatenate(labels)
        self.global_ = self._classifier(len(m), self.seed).fit(X, m)
        self.per_class_ = {}
        if self.per_class:
            for c in range(self.num_classes_):
                sel = yc == c
                if min(int(m[sel].sum()), int((1 - m[sel]).sum())) >= 10:
                    clf = self._classifier(int(sel.sum()), self.seed + 1 + c)
                    self.per_class_[c] = clf.fit(X[sel], m[sel])

    def score_samples(self, features) -> np.ndarray:
        """(n,) P(member) for ``features`` = (probs, y): the target model's probabilities
        (n, C) on records with labels y (n,)."""
        probs, y = _target_predictions(features)
        X = prediction_features(probs, y, self.top_k_, self.num_classes_)
        s = self.global_.predict_proba(X)[:, 1]
        for c, clf in self.per_class_.items():
            sel = y == c
            if sel.any():
                s[sel] = clf.predict_proba(X[sel])[:, 1]
        return s
