"""Check a clip's geometric ground truth against its labels (used by ``vidseg data verify``).

Two checks, for every consecutive pair (n-1, n) that has what they need:

- label agreement: frame n-1's labels warped by ``H_{n-1 -> n}`` (nearest) agree with frame n's
  labels on the pixels whose source lies inside frame n-1 ("covered" pixels);
- flow vs homography: away from movable objects (classes in ``moving_classes``, dilated), the
  backward flow n -> n-1 equals the displacement of ``inv(H_{n-1 -> n})``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from vidseg.data.folder import Clip
from vidseg.geometry.homography import homography_flow


@dataclass
class PairCheck:
    frame: int
    label_agreement: float | None  # fraction of covered pixels, None without both labels
    static_flow_error: float | None  # max |flow - homography flow| in px on static pixels
    moving_fraction: float | None  # share of pixels whose flow departs from H by > 0.5 px


@dataclass
class ClipCheck:
    clip: str
    pairs: list[PairCheck] = field(default_factory=list)

    def _values(self, name: str) -> list[float]:
        return [v for p in self.pairs if (v := getattr(p, name)) is not None]

    @property
    def min_label_agreement(self) -> float | None:
        values = self._values("label_agreement")
        return min(values) if values else None

    @property
    def mean_label_agreement(self) -> float | None:
        values = self._values("label_agreement")
        return float(np.mean(values)) if values else None

    @property
    def max_static_flow_error(self) -> float | None:
        values = self._values("static_flow_error")
        return max(values) if values else None

    @property
    def mean_moving_fraction(self) -> float | None:
        values = self._values("moving_fraction")
        return float(np.mean(values)) if values else None


def label_agreement(
    prev_labels: np.ndarray, labels: np.ndarray, h_prev_to_cur: np.ndarray
) -> float:
    """Share of frame n's covered pixels where the warped labels of frame n-1 agree."""
    hh, ww = labels.shape
    warped = cv2.warpPerspective(prev_labels, h_prev_to_cur, (ww, hh), flags=cv2.INTER_NEAREST)
    covered = cv2.warpPerspective(
        np.ones_like(prev_labels), h_prev_to_cur, (ww, hh), flags=cv2.INTER_NEAREST, borderValue=0
    ).astype(bool)
    if not covered.any():
        return float("nan")
    return float((warped[covered] == labels[covered]).mean())


def check_clip(clip: Clip, moving_classes: tuple[int, ...] = (), dilate: int = 2) -> ClipCheck:
    """Run both checks over every consecutive pair of ``clip`` (see the module docstring)."""
    result = ClipCheck(clip.id)
    kernel = np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8)
    for n in clip.frames:
        hom = clip.homography(n)
        if hom is None:
            continue
        labels, prev = clip.label(n), clip.label(n - 1)
        agreement = (
            label_agreement(prev, labels, hom) if labels is not None and prev is not None else None
        )
        flow = clip.flow(n)
        error = moving = None
        if flow is not None:
            h, w = flow.shape[:2]
            expected = homography_flow(np.linalg.inv(hom), h, w)
            deviation = np.abs(flow - expected).max(axis=-1)
            moving = float((deviation > 0.5).mean())
            if labels is not None:
                movable = cv2.dilate(
                    np.isin(labels, moving_classes).astype(np.uint8), kernel
                ).astype(bool)
                static = ~movable
                error = float(deviation[static].max()) if static.any() else None
        result.pairs.append(PairCheck(n, agreement, error, moving))
    return result
