"""Reusable network layers."""

from vidseg.models.layers.window_attention import (
    MixFFN,
    WindowAttention,
    WindowTransformerLayer,
    effective_window,
    relative_position_index,
    window_partition,
    window_reverse,
)

__all__ = [
    "MixFFN",
    "WindowAttention",
    "WindowTransformerLayer",
    "effective_window",
    "relative_position_index",
    "window_partition",
    "window_reverse",
]
