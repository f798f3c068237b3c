"""Geometry: homographies and affine maps in the pixel-centre convention of the contract.

Pixel ``(x, y)`` has x to the right, y down, and ``(0, 0)`` is the centre of the top-left pixel.
"""

from vidseg.geometry.homography import (
    apply_homography,
    conjugate_homography,
    homography_flow,
    normalize_homography,
)

__all__ = [
    "apply_homography",
    "conjugate_homography",
    "homography_flow",
    "normalize_homography",
]
