"""The interface every membership-inference attack implements, in scikit-learn's manner.

``attack.fit(features, is_member=None) -> attack``
    Learns from ``features`` of n records; ``is_member`` is an (n,) 0/1 array (1 =
    member) or None. Returns ``self``. Sets ``threshold_`` (on the score scale) and any
    other fitted attributes, all named with a trailing underscore.
``attack.score_samples(features) -> np.ndarray``
    (n,) float scores, one per record of ``features``, higher = more member-like.
``attack.predict(features) -> np.ndarray``
    (n,) int64 0/1: ``score_samples(features) >= threshold_``.

``needs_labels`` (class attribute) says whether ``fit`` needs ``is_member``:

- True (supervised attacks): ``fit`` learns from the attacker's known members and
  non-members and raises ``ValueError`` when ``is_member`` is None.
- False: ``fit`` works without labels, typically on the very (unlabelled) records it
  will score; a given ``is_member`` is used only to choose ``threshold_`` where the
  attack documents so, and ignored otherwise.

What ``features`` is depends on the attack: a list of FeatureSet (one per snapshot) for
the white-box attacks, ``(probs, y)`` for the black-box shadow-model attack, an
(n, 1 + R) array for LiRA (see each class).

Constructor parameters are stored unchanged and checked by :meth:`_validate_params`
(at the start of every ``fit``) against the class's ``_param_rules``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Rule:
    """A parameter check: ``check(value)`` is truthy when the value is allowed; ``text``
    completes "<name> ..." in the error message."""

    check: Callable[[Any], bool]
    text: str


def positive() -> Rule:
    return Rule(lambda v: v > 0, "must be > 0")


def at_least(low) -> Rule:
    return Rule(lambda v: v >= low, f"must be at least {low}")


def in_interval(low, high, *, closed_high: bool = False) -> Rule:
    """low <= value < high (or <= high with ``closed_high``)."""
    bracket = "]" if closed_high else ")"
    return Rule(lambda v: low <= v <= high if closed_high else low <= v < high,
                f"must be in [{low}, {high}{bracket}")


def one_of(*values) -> Rule:
    return Rule(lambda v: v in values, f"must be one of {values}")


class MembershipAttack:
    """Base class: the contract of the module docstring, :meth:`predict`, and parameter
    validation from ``_param_rules``.

    ``_param_rules`` maps a constructor parameter to a :class:`Rule` or to a tuple /
    set / frozenset of allowed values; rules of base classes are inherited (a subclass
    entry overrides one of the same name).
    """

    needs_labels: bool = True
    _param_rules: dict[str, Rule | tuple | set | frozenset] = {}

    def _rules(self) -> dict:
        rules: dict = {}
        for cls in reversed(type(self).__mro__):
            rules.update(vars(cls).get("_param_rules", {}))
        return rules

    def _validate_params(self) -> None:
        """Raise ValueError naming the first parameter that breaks its rule."""
        for name, rule in self._rules().items():
            value = getattr(self, name)
            if not isinstance(rule, Rule):
                rule = one_of(*rule)
            try:
                ok = bool(rule.check(value))
            except TypeError:  # e.g. None > 0
                ok = False
            if not ok:
                raise ValueError(f"{type(self).__name__}: {name}={value!r}; {name} {rule.text}")

    def _require_labels(self, is_member) -> None:
        if is_member is None:
            raise ValueError(f"{type(self).__name__}.fit needs is_member (0/1 per known record)")

    def fit(self, features, is_member=None) -> MembershipAttack:
        raise NotImplementedError

    def score_samples(self, features) -> np.ndarray:
        raise NotImplementedError

    def predict(self, features) -> np.ndarray:
        """(n,) int64 0/1: 1 where ``score_samples(features) >= threshold_``."""
        return (self.score_samples(features) >= self.threshold_).astype(np.int64)
