"""Record splits: who trains on what, and what the attacker knows and is judged on.

A split is a pure function of (number of records, config, seed). It is saved in the run
directory (``split.json``) so that training, attacks and re-attacks all use the same one.

Layout (all index sets disjoint):
- ``train[i]``            participant i's training set (members of i), ``records_per_participant`` each
- ``known_members[i]``    the part of ``train[i]`` the attacker knows (supervision)
- ``eval_members[i]``     the rest of ``train[i]`` (the attacker is judged on these)
- ``known_nonmembers``    non-members the attacker knows (same distribution, never trained on)
- ``eval_nonmembers``     non-members the attacker is judged on
- ``reference``           records nobody trains on, free for shadow / reference models
Target test accuracy is measured on ``eval_nonmembers`` + ``known_nonmembers`` (never trained on).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fl_sim.errors import ConfigError
from fl_sim.io import atomic_write_bytes


@dataclass
class Split:
    train: list[list[int]]
    known_members: list[list[int]]
    eval_members: list[list[int]]
    known_nonmembers: list[int]
    eval_nonmembers: list[int]
    reference: list[int] = field(default_factory=list)
    seed: int = 0

    @property
    def participants(self) -> int:
        return len(self.train)

    @property
    def test(self) -> list[int]:
        return self.known_nonmembers + self.eval_nonmembers

    def save(self, path: Path) -> None:
        atomic_write_bytes(Path(path), json.dumps(asdict(self)).encode())

    @classmethod
    def load(cls, path: Path) -> "Split":
        return cls(**json.loads(Path(path).read_text()))

    def balanced(self, members: list[int], nonmembers: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Indices and 0/1 labels of a balanced set: min(|members|, |nonmembers|) of each."""
        k = min(len(members), len(nonmembers))
        idx = np.array(members[:k] + nonmembers[:k], dtype=np.int64)
        lab = np.r_[np.ones(k), np.zeros(k)].astype(np.int64)
        return idx, lab


@dataclass(frozen=True)
class TargetSets:
    """The records one attack infers membership of, as balanced (indices, 0/1 labels):
    ``known`` is the attacker's supervision, ``eval`` what it is judged on (disjoint)."""
    known: np.ndarray
    known_labels: np.ndarray
    eval: np.ndarray
    eval_labels: np.ndarray

    def all_indices(self) -> np.ndarray:
        """Known then evaluation records: every record an active attacker targets."""
        return np.concatenate([self.known, self.eval])


def target_sets(split: Split, participants: list[int]) -> TargetSets:
    """The balanced target sets of the members of ``participants`` (in that order) against
    the split's non-members. One participant: a victim's sets; all but the local attacker:
    the union a local attacker infers. Used alike by the active step and the evaluation."""
    known, known_lab = split.balanced([i for p in participants for i in split.known_members[p]],
                                      split.known_nonmembers)
    evals, eval_lab = split.balanced([i for p in participants for i in split.eval_members[p]],
                                     split.eval_nonmembers)
    return TargetSets(known, known_lab, evals, eval_lab)


def make_split(n_records: int, participants: int, records_per_participant: int,
               known_fraction: float, seed: int, reference_fraction: float = 0.0) -> Split:
    """Assign records to participants, non-member pools and a reference pool.

    The non-member pools are sized to balance the largest member set any attack needs (the
    local attacker's target is the union of the other participants' data), as far as the
    records allow; the rest goes to ``reference``.
    """
    need = participants * records_per_participant
    if need >= n_records:
        raise ConfigError(
            f"data.records_per_participant={records_per_participant} x federation.participants="
            f"{participants} = {need} records, but the dataset has only {n_records} "
            "(some must stay out as non-members)")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_records).tolist()
    n_known = max(1, int(round(known_fraction * records_per_participant)))
    train, known, evals = [], [], []
    for i in range(participants):
        part = perm[i * records_per_participant:(i + 1) * records_per_participant]
        train.append(sorted(part))
        # the order inside known/eval is the shuffled order, so prefixes are random samples
        known.append(part[:n_known])
        evals.append(part[n_known:])
    rest = perm[need:]
    n_ref = int(round(reference_fraction * len(rest)))
    reference, rest = rest[:n_ref], rest[n_ref:]
    # balance against the largest attack (local attacker: all but one participant)
    others = max(1, participants - 1)
    want_known = others * n_known
    want_eval = others * (records_per_participant - n_known)
    if len(rest) >= want_known + want_eval:
        kn, ev = rest[:want_known], rest[want_known:want_known + want_eval]
        reference = reference + rest[want_known + want_eval:]
    else:
        cut = int(round(len(rest) * want_known / (want_known + want_eval)))
        kn, ev = rest[:cut], rest[cut:]
    return Split(train, known, evals, kn, ev, reference, seed)
