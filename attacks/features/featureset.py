"""FeatureSet: the white-box features of n records under one model snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class FeatureSet:
    """Features of n records under one snapshot; all arrays float32, row i = record i.

    outputs: layer name -> (n, d) flattened layer output; key ``"logits"`` is always
        present and holds the final layer's output (n, num_classes), pre-softmax.
    loss:    (n,) cross-entropy of record i in nats.
    label:   (n, num_classes) one-hot of the true class.
    grads:   per-example gradient of record i's own loss (no batch averaging):
        ``"<module>.weight"`` -> (n, rows, cols), Linear (out, in), Conv2d
        (out, in/groups * kh * kw); ``"<module>.bias"`` -> (n, out).
    reference_loss: optional (n, R) cross-entropy of record i under R reference models
        observed at the same time that did not train on the records (in federated
        learning: the other participants' uploads of the same round); None when absent.
    """

    outputs: dict[str, np.ndarray]
    loss: np.ndarray
    label: np.ndarray
    grads: dict[str, np.ndarray]
    reference_loss: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.loss.shape[0])

    def grad_norms(self) -> dict[str, np.ndarray]:
        """Parameter name -> (n,) L2 norm of each record's gradient (float32)."""
        return {k: np.sqrt(np.square(g, dtype=np.float64).reshape(len(g), -1).sum(1)).astype(np.float32)
                for k, g in self.grads.items()}

    def subset(self, idx) -> FeatureSet:
        """Rows ``idx`` (int array, bool mask or slice) of every array, as a new FeatureSet."""
        if isinstance(idx, (int, np.integer)):
            idx = [idx]  # keep the leading record axis
        if not isinstance(idx, slice):
            idx = np.asarray(idx)
        return FeatureSet(
            outputs={k: v[idx] for k, v in self.outputs.items()},
            loss=self.loss[idx],
            label=self.label[idx],
            grads={k: v[idx] for k, v in self.grads.items()},
            reference_loss=None if self.reference_loss is None else self.reference_loss[idx],
        )

    def with_reference(self, reference_loss: np.ndarray) -> FeatureSet:
        """A copy carrying ``reference_loss`` (n, R) (arrays shared, not copied)."""
        ref = np.asarray(reference_loss, dtype=np.float32)
        if ref.ndim != 2 or ref.shape[0] != len(self):
            raise ValueError(f"reference_loss must be (n={len(self)}, R), got {ref.shape}")
        return FeatureSet(self.outputs, self.loss, self.label, self.grads, ref)

    @staticmethod
    def concat(parts: Sequence[FeatureSet]) -> FeatureSet:
        """Stack FeatureSets with the same keys along the record axis."""
        parts = list(parts)
        if not parts:
            raise ValueError("FeatureSet.concat needs at least one FeatureSet")
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        for p in parts[1:]:
            if p.outputs.keys() != first.outputs.keys() or p.grads.keys() != first.grads.keys():
                raise ValueError("FeatureSet.concat: parts have different output or gradient keys")
        refs = [p.reference_loss for p in parts]
        if any(r is None for r in refs) != all(r is None for r in refs) or \
                len({r.shape[1] for r in refs if r is not None}) > 1:
            raise ValueError("FeatureSet.concat: parts differ in their reference losses")
        return FeatureSet(
            outputs={k: np.concatenate([p.outputs[k] for p in parts]) for k in first.outputs},
            loss=np.concatenate([p.loss for p in parts]),
            label=np.concatenate([p.label for p in parts]),
            grads={k: np.concatenate([p.grads[k] for p in parts]) for k in first.grads},
            reference_loss=None if refs[0] is None else np.concatenate(refs),
        )
