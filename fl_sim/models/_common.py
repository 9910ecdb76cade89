"""Helpers shared by the convolutional builders: shape checks and the norm-layer choice."""

from __future__ import annotations

import math

from torch import nn

from fl_sim.errors import ConfigError

NORMS = ("batch", "group")


def check_image_shape(model: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Return (C, H, W) or raise ConfigError: conv models need a 3-dim image shape."""
    if len(input_shape) != 3 or not all(int(s) > 0 for s in input_shape):
        raise ConfigError(f"model {model}: input_shape must be (C, H, W), got {tuple(input_shape)}")
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


def norm_layer(kind: str, channels: int) -> nn.Module:
    """BatchNorm2d (the paper's choice) or GroupNorm (works with per-sample DP training).

    GroupNorm uses gcd(channels, 8) groups so any channel count divides evenly.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")
