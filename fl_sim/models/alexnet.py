"""AlexNet, CIFAR variant (as in Shokri et al.'s / Nasr et al.'s code).

conv 64 k11 s4 p5 -> ReLU -> maxpool 2 -> conv 192 k5 p2 -> ReLU -> maxpool 2 ->
conv 384 k3 p1 -> ReLU -> conv 256 k3 p1 -> ReLU -> conv 256 k3 p1 -> ReLU ->
adaptive max pool to 1x1 -> Linear(num_classes).

On 32x32 input the spatial sizes are 8 -> 4 -> 2 -> 1, exactly the original (its last
maxpool 2 on 2x2 equals the adaptive pool). The adaptive pool and ``ceil_mode`` on the
middle pools let smaller images (28x28, even 8x8) through without a zero-size map.
"""

from __future__ import annotations

from torch import nn

from fl_sim.errors import ConfigError
from fl_sim.models._common import check_image_shape

BASE_CHANNELS = (64, 192, 384, 256, 256)


class AlexNet(nn.Module):
    """Modules: ``features.{0,3,6,8,10}`` (Conv2d) and ``classifier`` (Linear)."""

    def __init__(self, in_channels: int, num_classes: int, channels=BASE_CHANNELS):
        super().__init__()
        c1, c2, c3, c4, c5 = channels
        # ReLU(inplace=False): in-place ops would overwrite tensors that hooks keep.
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=11, stride=4, padding=5),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(1),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(c5, num_classes)

    def forward(self, x):
        """x: (n, C, H, W) float -> logits (n, num_classes)."""
        return self.classifier(self.flatten(self.features(x)))


def build_alexnet(input_shape: tuple[int, ...], num_classes: int, width_mult: float = 1.0) -> AlexNet:
    """Builder for ``alexnet``; ``width_mult`` scales every channel count (min 1)."""
    c, _, _ = check_image_shape("alexnet", input_shape)
    if not (isinstance(width_mult, (int, float)) and width_mult > 0):
        raise ConfigError(f"model alexnet: width_mult must be > 0, got {width_mult!r}")
    channels = tuple(max(1, round(ch * width_mult)) for ch in BASE_CHANNELS)
    return AlexNet(c, num_classes, channels)
