"""Backbone registry: ``build_backbone(name, weights=None, drop_path=0.0)``.

Importing this package is cheap: the ``transformers`` model classes are imported only when a
transformer backbone is built.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from vidseg.errors import ConfigError
from vidseg.models.backbones.base import Backbone, unknown_name_error
from vidseg.models.backbones.convnext import CONVNEXT_SPECS, ConvNextBackbone
from vidseg.models.backbones.hiera import HIERA_SPECS, HieraBackbone
from vidseg.models.backbones.mit import MIT_SPECS, MiTBackbone
from vidseg.models.backbones.tiny import TinyCNN

# name -> factory(drop_path=...) building the backbone with random weights.
BACKBONES: dict[str, Callable[..., Backbone]] = {
    **{f"hiera_{size}": partial(HieraBackbone, size) for size in HIERA_SPECS},
    **{f"mit_{variant}": partial(MiTBackbone, variant) for variant in MIT_SPECS},
    **{f"convnext_{variant}": partial(ConvNextBackbone, variant) for variant in CONVNEXT_SPECS},
    "tiny_cnn": partial(TinyCNN, (16, 32, 64, 128), "tiny_cnn"),
    "small_cnn": partial(TinyCNN, (32, 64, 128, 256), "small_cnn"),
    "medium_cnn": partial(TinyCNN, (48, 96, 192, 384), "medium_cnn"),
}


def build_backbone(name: str, weights: str | None = None, drop_path: float = 0.0) -> Backbone:
    """Build backbone ``name``; load ``weights`` (file, HF folder or cached hub id) strictly.

    ``drop_path`` is the stochastic-depth rate of the deepest block (linearly increasing).
    """
    if name not in BACKBONES:
        raise unknown_name_error("backbone", name, list(BACKBONES))
    if not 0.0 <= drop_path < 1.0:
        raise ConfigError(f"drop_path must be in [0, 1), got {drop_path}")
    backbone = BACKBONES[name](drop_path=drop_path)
    if weights:
        backbone.load_weights(weights)
    return backbone


__all__ = ["BACKBONES", "Backbone", "build_backbone"]
