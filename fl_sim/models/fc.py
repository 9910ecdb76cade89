"""Fully connected net of Nasr et al. (2019) for Purchase100 / Texas100.

Default hidden widths 1024-512-256-128 with Tanh, then a Linear to the classes.
Input (n, *input_shape) is flattened to (n, d) with d = prod(input_shape).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from fl_sim.errors import ConfigError

DEFAULT_WIDTHS = (1024, 512, 256, 128)


class FCNet(nn.Module):
    """Flatten -> [Linear -> Tanh] * len(widths) -> Linear(num_classes).

    Modules are named ``hidden.0``, ``hidden.2``, ... (Linear layers) and ``classifier``.
    """

    def __init__(self, in_features: int, num_classes: int, widths: Sequence[int] = DEFAULT_WIDTHS):
        super().__init__()
        self.flatten = nn.Flatten()
        layers: list[nn.Module] = []
        prev = in_features
        for w in widths:
            layers += [nn.Linear(prev, w), nn.Tanh()]
            prev = w
        self.hidden = nn.Sequential(*layers)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x):
        """x: (n, *input_shape) float -> logits (n, num_classes)."""
        return self.classifier(self.hidden(self.flatten(x)))


def build_fc(input_shape: tuple[int, ...], num_classes: int, widths: Sequence[int] | None = None) -> FCNet:
    """Builder for ``fc``; ``widths`` overrides the hidden widths (list of positive ints)."""
    widths = tuple(DEFAULT_WIDTHS if widths is None else widths)
    if not all(isinstance(w, int) and w > 0 for w in widths):
        raise ConfigError(f"model fc: widths must be positive integers, got {list(widths)}")
    return FCNet(math.prod(input_shape), num_classes, widths)
