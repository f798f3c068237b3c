"""Pure functions on 3x3 homographies (float64) in the pixel-centre convention."""

from __future__ import annotations

import numpy as np


def normalize_homography(h: np.ndarray) -> np.ndarray:
    """Scale a homography so that ``h[2, 2] == 1`` (it must be non-zero)."""
    h = np.asarray(h, np.float64)
    if h.shape != (3, 3):
        raise ValueError(f"a homography is 3x3, got shape {h.shape}")
    if h[2, 2] == 0:
        raise ValueError("cannot normalise a homography whose h[2, 2] is 0")
    return h / h[2, 2]


def apply_homography(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points (..., 2) through ``h``: ``[x', y', 1] ~ h [x, y, 1]``; returns float64."""
    pts = np.asarray(points, np.float64)
    x, y = pts[..., 0], pts[..., 1]
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    xo = (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w
    yo = (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w
    return np.stack([xo, yo], axis=-1)


def homography_flow(h: np.ndarray, height: int, width: int) -> np.ndarray:
    """Dense displacement field (height, width, 2) float32 of ``h`` on a pixel grid.

    ``flow[y, x] = h(x, y) - (x, y)``. With ``h = H_a_to_b`` this is ``flow_a_to_b`` on frame a's
    grid, in the contract's flow convention (channel 0 = dx, channel 1 = dy).
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    grid = np.stack([xs, ys], axis=-1)
    return (apply_homography(h, grid) - grid).astype(np.float32)


def conjugate_homography(
    h: np.ndarray, a_src: np.ndarray, a_dst: np.ndarray | None = None
) -> np.ndarray:
    """Express ``h`` in transformed pixel coordinates: ``a_dst @ h @ inv(a_src)``.

    If both frames went through the same geometric transform ``a`` (a shared flip, scale or crop,
    as a 3x3 matrix acting on pixel coordinates), the homography between the transformed frames
    is ``a @ h @ inv(a)``; pass ``a_dst`` when the two frames were transformed differently.
    """
    a_dst = a_src if a_dst is None else a_dst
    return normalize_homography(a_dst @ np.asarray(h, np.float64) @ np.linalg.inv(a_src))


def resize_matrix(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """3x3 map from pixel coordinates of an image of size ``src_hw`` to the same image resized
    to ``dst_hw`` (``cv2.resize`` / ``F.interpolate(align_corners=False)``).

    Pixel areas scale, so centres map as ``x' = (x + 0.5) * W'/W - 0.5`` (likewise for y).
    """
    (h0, w0), (h1, w1) = src_hw, dst_hw
    if min(h0, w0, h1, w1) <= 0:
        raise ValueError(f"sizes must be positive, got {src_hw} -> {dst_hw}")
    sx, sy = w1 / w0, h1 / h0
    return np.array(
        [[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]], np.float64
    )


def stride_matrix(stride: float) -> np.ndarray:
    """3x3 map from image pixel coordinates to those of a feature map at ``stride``.

    Feature pixel u covers image pixels ``[u*s, (u+1)*s)``, so its centre is at image coordinate
    ``u*s + (s-1)/2`` and ``u = (x + 0.5)/s - 0.5``. Bottom/right padding does not change this.
    """
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    s = 1.0 / stride
    return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5], [0.0, 0.0, 1.0]])


def rescale_homography(h: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """A homography between two frames, expressed after both were rescaled by ``scale``.

    ``scale`` is a 3x3 pixel-coordinate map such as :func:`resize_matrix` or
    :func:`stride_matrix`; the result is ``S @ h @ inv(S)``. ``h`` may be (3, 3) or a stack
    (..., 3, 3). To go from a homography found at reduced resolution back to full resolution,
    pass ``inv(S)`` (or ``resize_matrix(small, full)``).
    """
    h = np.asarray(h, np.float64)
    scale = np.asarray(scale, np.float64)
    out = scale @ h @ np.linalg.inv(scale)
    return out / out[..., 2:3, 2:3]
