"""Decode-head registry: ``build_head(name, in_channels, num_classes, channels, dropout=0.1)``.

Every head maps the 4 backbone levels to logits at the stride of level 0 (4) and splits into
``decode_features(features)`` (decoder features before the classifier) and ``classify(x)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from vidseg.models.backbones.base import unknown_name_error
from vidseg.models.heads.segformer import SegFormerHead
from vidseg.models.heads.upernet import UPerNetHead

HEADS: dict[str, type[nn.Module]] = {"upernet": UPerNetHead, "segformer": SegFormerHead}


def build_head(
    name: str, in_channels: Sequence[int], num_classes: int, channels: int, dropout: float = 0.1
) -> nn.Module:
    """Build decode head ``name`` for backbone levels with ``in_channels`` channels."""
    if name not in HEADS:
        raise unknown_name_error("head", name, list(HEADS))
    if num_classes < 1 or channels < 1:
        raise ValueError(f"num_classes and channels must be >= 1, got {num_classes}, {channels}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return HEADS[name](in_channels, num_classes, channels, dropout)


__all__ = ["HEADS", "SegFormerHead", "UPerNetHead", "build_head"]
