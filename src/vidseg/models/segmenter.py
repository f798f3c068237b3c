"""Image segmentation model: input normalisation and padding, backbone, decode head, upsampling.

Images are (B, 3, H, W) RGB, ``uint8`` in 0..255 or float in 0..1. They are normalised with the
backbone's mean/std and zero-padded at the bottom/right (zero = the mean colour after
normalisation) to a multiple of the backbone's ``size_divisor``; logits come back at the input
size with the padding cropped off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.errors import ConfigError
from vidseg.models.backbones import BACKBONES, Backbone, build_backbone
from vidseg.models.backbones.base import unknown_name_error
from vidseg.models.heads import HEADS, build_head

UPSAMPLE_MODES = ("bilinear", "bicubic")


@dataclass
class ModelConfig:
    """The ``model`` section of a training config (keys are named ``model.<field>`` in errors)."""

    backbone: str = "tiny_cnn"
    weights: str | None = None  # pretrained backbone weights: file, HF folder or cached hub id
    head: str = "upernet"  # "upernet" | "segformer"
    head_channels: int = 256
    dropout: float = 0.1
    drop_path: float = 0.0
    upsample: str = "bilinear"  # "bilinear" | "bicubic": logits to the input size

    def __post_init__(self) -> None:
        check_model_config(self)


def check_model_config(cfg: ModelConfig) -> None:
    """Raise a ConfigError naming the first invalid ``model.*`` value."""
    if cfg.backbone not in BACKBONES:
        raise unknown_name_error("backbone", cfg.backbone, list(BACKBONES), "model.backbone")
    if cfg.head not in HEADS:
        raise unknown_name_error("head", cfg.head, list(HEADS), "model.head")
    if cfg.head_channels < 1:
        raise ConfigError(f"model.head_channels must be >= 1, got {cfg.head_channels}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {cfg.dropout}")
    if not 0.0 <= cfg.drop_path < 1.0:
        raise ConfigError(f"model.drop_path must be in [0, 1), got {cfg.drop_path}")
    if cfg.upsample not in UPSAMPLE_MODES:
        raise ConfigError(
            f"model.upsample must be one of {', '.join(UPSAMPLE_MODES)}; got '{cfg.upsample}'"
        )


class Segmenter(nn.Module):
    """Backbone + decode head; ``forward(images)`` gives logits (B, C, H, W) at the input size."""

    def __init__(
        self, backbone: Backbone, head: nn.Module, num_classes: int, upsample: str = "bilinear"
    ):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ConfigError(
                f"upsample must be one of {', '.join(UPSAMPLE_MODES)}; got '{upsample}'"
            )
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes
        self.upsample = upsample
        # Not persistent: the backbone defines them, checkpoints need not carry them.
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)

    @property
    def encoder_channels(self) -> tuple[int, int, int, int]:
        return self.backbone.channels

    def normalize(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) uint8 0..255 or float 0..1 -> float, normalised by the backbone mean/std."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        elif not images.is_floating_point():
            raise ValueError(f"images must be uint8 (0..255) or float (0..1), got {images.dtype}")
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """Input size rounded up to a multiple of the backbone's ``size_divisor``."""
        d = self.backbone.size_divisor
        return -(-height // d) * d, -(-width // d) * d

    def encode(self, images: Tensor) -> list[Tensor]:
        """Normalise, zero-pad bottom/right to ``size_divisor``, run the backbone (4 levels)."""
        x = self.normalize(images)
        h, w = x.shape[-2:]
        ph, pw = self.padded_size(h, w)
        if (ph, pw) != (h, w):
            x = F.pad(x, (0, pw - w, 0, ph - h))
        return self.backbone(x)

    def decode(self, features: list[Tensor]) -> Tensor:
        """Logits at stride 4 of the padded input."""
        return self.head(features)

    def upsample_logits(self, logits: Tensor, height: int, width: int) -> Tensor:
        """Stride-4 logits of the padded input -> (B, C, height, width) logits of the input.

        Upsampling to the padded size and then cropping keeps every pixel where it was.
        """
        size = self.padded_size(height, width)
        logits = F.interpolate(logits, size=size, mode=self.upsample, align_corners=False)
        return logits[..., :height, :width]

    def forward(self, images: Tensor) -> Tensor:
        h, w = images.shape[-2:]
        return self.upsample_logits(self.decode(self.encode(images)), h, w)


def build_segmenter(cfg: ModelConfig, num_classes: int) -> Segmenter:
    """Build the model described by ``cfg`` (ConfigError on bad values) for ``num_classes``."""
    check_model_config(cfg)
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    backbone = build_backbone(cfg.backbone, weights=cfg.weights, drop_path=cfg.drop_path)
    head = build_head(cfg.head, backbone.channels, num_classes, cfg.head_channels, cfg.dropout)
    return Segmenter(backbone, head, num_classes, cfg.upsample)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones counted once); works on the meta device."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
