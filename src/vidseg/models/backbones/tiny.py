"""Small plain-PyTorch CNN backbones for tests and the CPU demo (no pretrained weights)."""

from __future__ import annotations

import itertools

from torch import Tensor, nn

from vidseg.errors import ConfigError
from vidseg.models.backbones.base import Backbone


def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias, BN follows), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class TinyCNN(Backbone):
    """Conv-BN-ReLU stages; each stage halves the resolution with a stride-2 conv.

    The stem (two stride-2 convs) brings the first level to stride 4; every stage then adds one
    stride-1 conv, so level i has ``widths[i]`` channels at stride ``4 * 2**i``.
    """

    def __init__(self, widths: tuple[int, int, int, int], name: str, drop_path: float = 0.0):
        super().__init__()
        if drop_path:
            raise ConfigError(
                f"drop_path={drop_path}: {name} has no residual branches to drop; use 0"
            )
        self.name = name
        self.channels = tuple(widths)
        stem_width = max(widths[0] // 2, 8)
        self.stem = nn.Sequential(
            conv_bn_relu(3, stem_width, stride=2), conv_bn_relu(stem_width, widths[0], stride=2)
        )
        stages = [conv_bn_relu(widths[0], widths[0])]
        for prev, width in itertools.pairwise(widths):
            stages.append(
                nn.Sequential(conv_bn_relu(prev, width, stride=2), conv_bn_relu(width, width))
            )
        self.stages = nn.ModuleList(stages)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
