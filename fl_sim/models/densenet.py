"""DenseNet-BC for CIFAR (Huang et al. 2017), as used by Nasr et al. (DenseNet-BC 100-12).

conv3x3(2k) -> [dense block -> transition] x2 -> dense block -> norm -> ReLU ->
global avg pool -> Linear(num_classes), with k = growth_rate and (depth - 4) / 6
bottleneck layers per block (norm-ReLU-conv1x1(4k)-norm-ReLU-conv3x3(k), concatenated).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fl_sim.errors import ConfigError
from fl_sim.models._common import check_image_shape, norm_layer


class Bottleneck(nn.Module):
    """Input (n, c, h, w) -> (n, c + growth_rate, h, w)."""

    def __init__(self, in_ch: int, growth_rate: int, norm: str):
        super().__init__()
        inner = 4 * growth_rate
        self.norm1 = norm_layer(norm, in_ch)
        self.conv1 = nn.Conv2d(in_ch, inner, kernel_size=1, bias=False)
        self.norm2 = norm_layer(norm, inner)
        self.conv2 = nn.Conv2d(inner, growth_rate, kernel_size=3, padding=1, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.conv1(self.relu(self.norm1(x)))
        out = self.conv2(self.relu(self.norm2(out)))
        return torch.cat([x, out], dim=1)


class Transition(nn.Module):
    """Input (n, c, h, w) -> (n, c_out, ceil(h/2), ceil(w/2))."""

    def __init__(self, in_ch: int, out_ch: int, norm: str):
        super().__init__()
        self.norm = norm_layer(norm, in_ch)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False)
        # ceil_mode keeps a 1x1 map at 1x1 (small inputs); on even sizes it is plain /2.
        self.pool = nn.AvgPool2d(2, ceil_mode=True)

    def forward(self, x):
        return self.pool(self.conv(self.relu(self.norm(x))))


class DenseNet(nn.Module):
    """Modules: ``conv1``, ``block{1,2,3}.<i>.conv{1,2}``, ``trans{1,2}.conv``, ``classifier``."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, growth_rate: int,
                 reduction: float, norm: str):
        super().__init__()
        n_layers = (depth - 4) // 6
        ch = 2 * growth_rate
        self.conv1 = nn.Conv2d(in_channels, ch, kernel_size=3, padding=1, bias=False)
        blocks: list[tuple[str, nn.Module]] = []
        for b in range(3):
            layers = []
            for _ in range(n_layers):
                layers.append(Bottleneck(ch, growth_rate, norm))
                ch += growth_rate
            blocks.append((f"block{b + 1}", nn.Sequential(*layers)))
            if b < 2:
                out_ch = max(1, int(math.floor(ch * reduction)))
                blocks.append((f"trans{b + 1}", Transition(ch, out_ch, norm)))
                ch = out_ch
        for name, module in blocks:
            self.add_module(name, module)
        self._order = [name for name, _ in blocks]
        self.norm = norm_layer(norm, ch)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(ch, num_classes)

    def forward(self, x):
        """x: (n, C, H, W) float -> logits (n, num_classes)."""
        out = self.conv1(x)
        for name in self._order:
            out = getattr(self, name)(out)
        out = self.pool(self.relu(self.norm(out)))
        return self.classifier(self.flatten(out))


def build_densenet(input_shape: tuple[int, ...], num_classes: int, depth: int = 100,
                   growth_rate: int = 12, reduction: float = 0.5, norm: str = "batch") -> DenseNet:
    """Builder for ``densenet``; depth must be 6m + 4 (m >= 1 bottlenecks per block)."""
    c, _, _ = check_image_shape("densenet", input_shape)
    if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ConfigError(f"model densenet: depth must be 6m+4 with m >= 1 (e.g. 40, 100), got {depth!r}")
    if not isinstance(growth_rate, int) or growth_rate < 1:
        raise ConfigError(f"model densenet: growth_rate must be a positive integer, got {growth_rate!r}")
    if not (0 < reduction <= 1):
        raise ConfigError(f"model densenet: reduction must be in (0, 1], got {reduction!r}")
    norm_layer(norm, 8)  # validates the name early with a clear message
    return DenseNet(c, num_classes, depth, growth_rate, float(reduction), norm)
