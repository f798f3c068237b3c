"""Pictures of videos, labels and flow for docs, reports and debugging."""

from __future__ import annotations

import cv2
import numpy as np


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code a flow field (h, w, 2): hue = direction, saturation = magnitude; uint8 RGB.

    Magnitudes are scaled by ``max_magnitude`` (default: the field's own maximum), so pass a
    shared value to compare several fields.
    """
    dx, dy = flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32)
    magnitude, angle = cv2.cartToPolar(dx, dy, angleInDegrees=True)
    scale = float(max_magnitude if max_magnitude is not None else magnitude.max()) or 1.0
    hsv = np.empty((*flow.shape[:2], 3), np.float32)
    hsv[..., 0] = angle  # degrees in [0, 360): OpenCV's float HSV convention
    hsv[..., 1] = np.clip(magnitude / scale, 0, 1)
    hsv[..., 2] = 1.0
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255 + 0.5, 0, 255).astype(np.uint8)


def grid(rows: list[list[np.ndarray]], gap: int = 4, background: int = 255) -> np.ndarray:
    """Tile equally sized RGB images into one picture, ``gap`` pixels apart."""
    h, w = rows[0][0].shape[:2]
    ncols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + gap) - gap, ncols * (w + gap) - gap, 3), background, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            if image.shape[:2] != (h, w):
                raise ValueError(f"image ({i}, {j}) is {image.shape[:2]}, expected {(h, w)}")
            out[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = image
    return out
