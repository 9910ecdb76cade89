"""ResNet for CIFAR (He et al. 2016): basic blocks, depth = 6n + 2 (20, 32, 44, 56, 110).

conv3x3(w) -> 3 stages of n basic blocks with w, 2w, 4w channels (strides 1, 2, 2) ->
ReLU'd output -> global avg pool -> Linear(num_classes). Shortcuts that change shape
use a 1x1 conv + norm projection (option B).
"""

from __future__ import annotations

from torch import nn

from fl_sim.errors import ConfigError
from fl_sim.models._common import check_image_shape, norm_layer


class BasicBlock(nn.Module):
    """(n, in_ch, h, w) -> (n, out_ch, h/stride, w/stride)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm_layer(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = norm_layer(norm, out_ch)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), norm_layer(norm, out_ch))

    def forward(self, x):
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        # out-of-place add: in-place would clobber tensors saved for per-example grads.
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Modules: ``conv1``, ``layer{1,2,3}.<i>.conv{1,2}``, ``...shortcut.0``, ``fc``."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, width: int, norm: str):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.norm1 = norm_layer(norm, width)
        self.relu = nn.ReLU()
        ch = width
        for i, (mult, stride) in enumerate([(1, 1), (2, 2), (4, 2)]):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(ch, width * mult, stride if j == 0 else 1, norm))
                ch = width * mult
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        """x: (n, C, H, W) float -> logits (n, num_classes)."""
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(self.flatten(self.pool(out)))


def build_resnet(input_shape: tuple[int, ...], num_classes: int, depth: int = 20,
                 width: int = 16, norm: str = "batch") -> ResNet:
    """Builder for ``resnet``; depth = 6n + 2 with n >= 1, width = base channels."""
    c, _, _ = check_image_shape("resnet", input_shape)
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"model resnet: depth must be 6n+2 with n >= 1 (e.g. 20, 32, 56), got {depth!r}")
    if not isinstance(width, int) or width < 1:
        raise ConfigError(f"model resnet: width must be a positive integer, got {width!r}")
    norm_layer(norm, 8)
    return ResNet(c, num_classes, depth, width, norm)
