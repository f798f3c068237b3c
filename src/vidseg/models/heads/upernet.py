"""UPerNet decode head (PPM + FPN) on a 4-level feature pyramid.

Module names follow ``transformers``' ``UperNetHead`` (``psp_modules``, ``bottleneck``,
``lateral_convs``, ``fpn_convs``, ``fpn_bottleneck``, ``classifier``), so that checkpoint keys of
that head line up. Parameters keep PyTorch's default initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POOL_SCALES = (1, 2, 3, 6)


class ConvModule(nn.Module):
    """Convolution without bias (BatchNorm follows), BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.batch_norm = nn.BatchNorm2d(out_channels)
        self.activation = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.batch_norm(self.conv(x)))


def _resize(x: Tensor, size: torch.Size | tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class UPerNetHead(nn.Module):
    """PPM on the deepest level, top-down FPN, fusion of all levels at the shallowest stride.

    ``decode_features`` returns the ``fpn_bottleneck`` output (``channels`` at the stride of
    level 0, i.e. 4); ``classify`` applies dropout and the 1x1 classifier; ``forward`` does both.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int,
        dropout: float = 0.1,
        pool_scales: Sequence[int] = POOL_SCALES,
    ):
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.channels = channels
        self.num_classes = num_classes
        deepest = self.in_channels[-1]
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), ConvModule(deepest, channels, 1))
            for scale in pool_scales
        )
        self.bottleneck = ConvModule(deepest + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(
            ConvModule(c, channels, 1) for c in self.in_channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(
            ConvModule(channels, channels, 3) for _ in self.in_channels[:-1]
        )
        self.fpn_bottleneck = ConvModule(len(self.in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def _psp(self, x: Tensor) -> Tensor:
        pooled = [_resize(module(x), x.shape[-2:]) for module in self.psp_modules]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))

    def decode_features(self, features: Sequence[Tensor]) -> Tensor:
        """Decoder features (B, channels, H0, W0) at the resolution of ``features[0]``."""
        if len(features) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(features)}")
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features, strict=False)]
        laterals.append(self._psp(features[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals, strict=False)]
        outs.append(laterals[-1])
        size = outs[0].shape[-2:]
        outs = [outs[0], *(_resize(o, size) for o in outs[1:])]
        return self.fpn_bottleneck(torch.cat(outs, dim=1))

    def classify(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes, h, w) from decoder features (B, channels, h, w)."""
        return self.classifier(self.dropout(x))

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return self.classify(self.decode_features(features))
