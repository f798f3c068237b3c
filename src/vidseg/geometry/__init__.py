"""Geometry: homographies, registration and warping in the pixel-centre convention of the contract.

Pixel ``(x, y)`` has x to the right, y down, and ``(0, 0)`` is the centre of the top-left pixel.
"""

from vidseg.geometry.homography import (
    apply_homography,
    conjugate_homography,
    homography_flow,
    normalize_homography,
    rescale_homography,
    resize_matrix,
    stride_matrix,
)
from vidseg.geometry.registration import (
    Registrar,
    RegistrationConfig,
    RegistrationInfo,
    RegistrationStats,
    check_homography,
    corner_error,
    estimate_homography,
    make_registration_config,
)
from vidseg.geometry.registration_cache import HomographyCache
from vidseg.geometry.warp import (
    homography_to_flow,
    occlusion_mask,
    photometric_weight,
    pixel_grid,
    resize_flow,
    sample,
    ssp_flowwarp,
    warp_flow,
    warp_homography,
)

__all__ = [
    "HomographyCache",
    "Registrar",
    "RegistrationConfig",
    "RegistrationInfo",
    "RegistrationStats",
    "apply_homography",
    "check_homography",
    "conjugate_homography",
    "corner_error",
    "estimate_homography",
    "homography_flow",
    "homography_to_flow",
    "make_registration_config",
    "normalize_homography",
    "occlusion_mask",
    "photometric_weight",
    "pixel_grid",
    "rescale_homography",
    "resize_flow",
    "resize_matrix",
    "sample",
    "ssp_flowwarp",
    "stride_matrix",
    "warp_flow",
    "warp_homography",
]
