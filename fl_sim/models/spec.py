"""A model as the rest of the project passes it around: a spec that builds it, and the
one helper that turns a parameter snapshot (``name -> array``) back into a model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """Architecture ``name`` with ``options`` for inputs (n, *input_shape), ``num_classes``
    outputs. Plain data: it travels to Ray workers inside the client plan."""
    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    options: dict = field(default_factory=dict)

    def build(self) -> nn.Module:
        """A freshly initialised model (weights from the torch RNG state)."""
        from fl_sim.models import build_model

        return build_model(self.name, tuple(self.input_shape), self.num_classes, **self.options)


def get_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state_dict as numpy copies (parameters and buffers, in order)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def set_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    state = {k: torch.as_tensor(np.array(v)) for k, v in arrays.items()}
    model.load_state_dict(state, strict=True)


def model_from(spec: ModelSpec, arrays: Mapping[str, np.ndarray]) -> nn.Module:
    """Build ``spec`` and load ``arrays`` into it (strict: every key must match)."""
    model = spec.build()
    set_arrays(model, arrays)
    return model
