"""Classical CPU flow from OpenCV: DIS (the default) and Farneback.

Both run on grey frames; ``scale < 1`` computes the flow at reduced resolution and brings it
back to full size (values rescaled, pixel-centre-correct resize), which trades accuracy on small
structures for speed on large frames.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from vidseg.errors import ConfigError
from vidseg.flow.base import FlowEstimator, check_pair

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def _grey(image: np.ndarray, scale: float) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if scale == 1.0:
        return grey
    h, w = grey.shape
    size = (max(round(w * scale), 1), max(round(h * scale), 1))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _to_full(flow: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a flow computed on a smaller grid to (height, width) and rescale its values."""
    h, w = flow.shape[:2]
    if (h, w) == (height, width):
        return flow
    out = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    out[..., 0] *= width / w
    out[..., 1] *= height / h
    return out


def _check_scale(scale: float) -> float:
    if not 0 < scale <= 1:
        raise ConfigError(f"flow scale must be in (0, 1], got {scale}")
    return float(scale)


class DisFlow(FlowEstimator):
    """OpenCV's Dense Inverse Search (Kroeger et al., ECCV 2016) with a preset.

    ``preset``: ``ultrafast``, ``fast`` or ``medium`` (more patches and refinement iterations,
    slower and more accurate). ``scale``: compute at this fraction of the resolution.
    """

    name = "dis"

    def __init__(self, preset: str = "medium", scale: float = 1.0) -> None:
        if preset not in DIS_PRESETS:
            raise ConfigError(f"unknown DIS preset '{preset}'; valid: {', '.join(DIS_PRESETS)}")
        self.preset = preset
        self.scale = _check_scale(scale)
        # DIS objects keep per-call buffers and are not thread-safe: one per estimator.
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        check_pair(src, dst)
        flow = self._dis.calc(_grey(src, self.scale), _grey(dst, self.scale), None)
        return _to_full(flow, *src.shape[:2]).astype(np.float32, copy=False)

    def settings(self) -> dict[str, Any]:
        return {"preset": self.preset, "scale": self.scale}


class FarnebackFlow(FlowEstimator):
    """OpenCV's Farneback polynomial-expansion flow (SCIA 2003), with OpenCV's usual settings."""

    name = "farneback"

    def __init__(
        self,
        scale: float = 1.0,
        levels: int = 5,
        pyr_scale: float = 0.5,
        winsize: int = 15,
        iterations: int = 3,
        poly_n: int = 5,
        poly_sigma: float = 1.2,
    ) -> None:
        if poly_n not in (5, 7):
            raise ConfigError(f"farneback poly_n must be 5 or 7, got {poly_n}")
        self.scale = _check_scale(scale)
        self.levels = int(levels)
        self.pyr_scale = float(pyr_scale)
        self.winsize = int(winsize)
        self.iterations = int(iterations)
        self.poly_n = int(poly_n)
        self.poly_sigma = float(poly_sigma)

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        check_pair(src, dst)
        flow = cv2.calcOpticalFlowFarneback(
            _grey(src, self.scale),
            _grey(dst, self.scale),
            None,
            self.pyr_scale,
            self.levels,
            self.winsize,
            self.iterations,
            self.poly_n,
            self.poly_sigma,
            0,
        )
        return _to_full(flow, *src.shape[:2]).astype(np.float32, copy=False)

    def settings(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "levels": self.levels,
            "pyr_scale": self.pyr_scale,
            "winsize": self.winsize,
            "iterations": self.iterations,
            "poly_n": self.poly_n,
            "poly_sigma": self.poly_sigma,
        }
