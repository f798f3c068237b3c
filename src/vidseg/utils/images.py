"""Input checks and conversions for pairs and batches of RGB frames (flow, registration)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vidseg.errors import ConfigError


def check_rgb_pair(a: Any, b: Any, what: str, names: tuple[str, str]) -> None:
    """ConfigError unless ``a`` and ``b`` are equal-sized (H, W, 3) uint8 arrays.

    ``what`` and ``names`` label the message, e.g. ``flow input src: ...``.
    """
    for name, image in zip(names, (a, b), strict=True):
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", type(image).__name__)
            raise ConfigError(f"{what} input {name}: expected an (H, W, 3) RGB array, got {shape}")
        if image.dtype != np.uint8:
            raise ConfigError(f"{what} input {name}: expected uint8 RGB, got dtype {image.dtype}")
    if a.shape != b.shape:
        raise ConfigError(
            f"{what} inputs differ in size: {names[0]} {a.shape[:2]}, {names[1]} {b.shape[:2]}"
        )


def tensor_to_rgb_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) uint8, or float in 0..1, tensor -> (B, H, W, 3) uint8 array on the CPU."""
    if images.dtype != torch.uint8:
        images = (images.detach().float() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
