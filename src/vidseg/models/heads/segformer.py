"""SegFormer's all-MLP decode head.

Module names follow the SegFormer checkpoints (``decode_head.linear_c.{i}.proj``,
``linear_fuse``, ``batch_norm``, ``classifier``); the levels are concatenated deepest first, as
there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Module):
    """Per-pixel linear projection of a (B, C, H, W) map (a ``Linear`` on the channels)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SegFormerHead(nn.Module):
    """Project every level to ``channels``, upsample to level 0, concat, fuse with 1x1 conv-BN-ReLU.

    ``decode_features`` returns the fused features (``channels`` at the stride of level 0, i.e.
    4); ``classify`` applies dropout and the 1x1 classifier; ``forward`` does both.
    """

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, channels: int, dropout: float = 0.1
    ):
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.channels = channels
        self.num_classes = num_classes
        self.linear_c = nn.ModuleList(MLP(c, channels) for c in self.in_channels)
        self.linear_fuse = nn.Conv2d(len(self.in_channels) * channels, channels, 1, bias=False)
        self.batch_norm = nn.BatchNorm2d(channels)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def decode_features(self, features: Sequence[Tensor]) -> Tensor:
        """Decoder features (B, channels, H0, W0) at the resolution of ``features[0]``."""
        if len(features) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(features)}")
        size = features[0].shape[-2:]
        projected = [
            F.interpolate(mlp(f), size=size, mode="bilinear", align_corners=False)
            for mlp, f in zip(self.linear_c, features, strict=True)
        ]
        fused = self.linear_fuse(torch.cat(projected[::-1], dim=1))
        return self.activation(self.batch_norm(fused))

    def classify(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes, h, w) from decoder features (B, channels, h, w)."""
        return self.classifier(self.dropout(x))

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return self.classify(self.decode_features(features))
