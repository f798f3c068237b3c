"""Batched, differentiable warping in torch, in the pixel-centre convention of the contract.

Pixel ``(x, y)``: x right, y down, ``(0, 0)`` the centre of the top-left pixel. Every
``grid_sample`` call here uses ``align_corners=True`` together with the matching normalisation
``2x / (W - 1) - 1``, so pixel centres land exactly on sample points and an integer flow gives an
exact shifted copy (the official SSP code mixes ``align_corners=False`` with this normalisation,
a systematic stretch of up to half a pixel).

Flows are (B, 2, H, W) float tensors, channel 0 = dx, channel 1 = dy; ``flow_a_to_b`` sends the
point at pixel p of frame a to ``p + flow[p]`` in frame b. Homographies are (3, 3) or (B, 3, 3),
NumPy or torch, and map pixel coordinates of the source frame to the target frame.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Mode = Literal["bilinear", "nearest"]
Padding = Literal["zeros", "border"]

# Forward-backward consistency thresholds of Sundaram et al. (ECCV 2010), as used by the RAFT
# and ETC lines of work and by KD-SSP's consistent teacher labels.
FB_ALPHA1 = 0.01
FB_ALPHA2 = 0.5


def pixel_grid(
    height: int, width: int, *, device: torch.device | str | None = None, dtype=torch.float32
) -> Tensor:
    """(1, 2, H, W) pixel-centre coordinates: channel 0 = x, channel 1 = y."""
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy])[None]


def _check_flow(x: Tensor, flow: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected an image batch (B, C, H, W), got shape {tuple(x.shape)}")
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"expected a flow batch (B, 2, H, W), got shape {tuple(flow.shape)}")
    if flow.shape[0] != x.shape[0] and flow.shape[0] != 1:
        raise ValueError(f"batch sizes differ: image {x.shape[0]}, flow {flow.shape[0]}")


def sample(
    x: Tensor,
    coords: Tensor,
    *,
    mode: Mode = "bilinear",
    padding: Padding = "zeros",
) -> tuple[Tensor, Tensor]:
    """Sample ``x`` (B, C, H, W) at pixel coordinates ``coords`` (B, 2, H', W').

    Returns the samples (B, C, H', W') and a validity mask (B, 1, H', W') of bool that is True
    where the sample point lies inside ``x``: within ``[0, W-1] x [0, H-1]`` for bilinear
    sampling (no blending with padding), at an in-range rounded index for nearest sampling.
    """
    height, width = x.shape[-2:]
    # align_corners=True: -1 and +1 are the centres of the first and last pixel.
    if width > 1 and height > 1:
        scale = coords.new_tensor([2 / (width - 1), 2 / (height - 1)])[:, None, None]
        grid = (coords * scale - 1).permute(0, 2, 3, 1)  # (B, H', W', 2), as grid_sample wants
    else:
        # A size-1 axis has a single centre; map every coordinate on it to 0 so that only the
        # exact centre is valid.
        cx, cy = coords[:, 0], coords[:, 1]
        gx = 2 * cx / (width - 1) - 1 if width > 1 else torch.where(cx == 0, 0.0, 2.0).to(cx)
        gy = 2 * cy / (height - 1) - 1 if height > 1 else torch.where(cy == 0, 0.0, 2.0).to(cy)
        grid = torch.stack([gx, gy], dim=-1)
    grid = grid.to(x.dtype if x.is_floating_point() else torch.float32)
    source = x if x.is_floating_point() else x.float()
    out = F.grid_sample(source, grid, mode=mode, padding_mode=padding, align_corners=True)
    # torch rounds half to even in nearest mode; the validity test must agree with its index.
    picked = torch.round(coords) if mode == "nearest" else coords
    last = coords.new_tensor([width - 1, height - 1])[:, None, None]
    inside = (picked >= 0) & (picked <= last)
    valid = (inside[:, 0] & inside[:, 1])[:, None]
    if not x.is_floating_point():
        out = out.round().to(x.dtype)
    return out, valid


def warp_flow(
    x: Tensor,
    flow: Tensor,
    *,
    mode: Mode = "bilinear",
    padding: Padding = "zeros",
) -> tuple[Tensor, Tensor]:
    """Backward-warp ``x`` (B, C, H, W) by ``flow`` (B or 1, 2, H, W).

    ``out[p] = x[p + flow[p]]``: with ``flow = flow_a_to_b`` and ``x`` a map of frame b, the
    result lies on frame a's grid. Returns ``(warped, valid)``; see :func:`sample` for validity.
    Differentiable in ``x`` and (bilinear) in ``flow``.
    """
    _check_flow(x, flow)
    if flow.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"flow is {tuple(flow.shape[-2:])} but the warped map is {tuple(x.shape[-2:])}; "
            "resize the flow with resize_flow first"
        )
    grid = pixel_grid(*flow.shape[-2:], device=flow.device, dtype=flow.dtype)
    coords = grid + flow
    if coords.shape[0] != x.shape[0]:
        coords = coords.expand(x.shape[0], -1, -1, -1)
    return sample(x, coords, mode=mode, padding=padding)


def _as_tensor(h: np.ndarray | Tensor, device: torch.device) -> Tensor:
    h = torch.as_tensor(h, dtype=torch.float64, device=device)
    if h.shape[-2:] != (3, 3) or h.ndim not in (2, 3):
        raise ValueError(f"expected homographies (3, 3) or (B, 3, 3), got {tuple(h.shape)}")
    return h if h.ndim == 3 else h[None]


def _map_grid(hom: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Pixel centres of an H x W grid and their images under ``hom`` (B, 3, 3), both float64
    (B or 1, 2, H*W): float64 so that large images lose no precision before the final cast."""
    grid = pixel_grid(height, width, device=hom.device, dtype=torch.float64).flatten(2)
    mapped = hom @ torch.cat([grid, torch.ones_like(grid[:, :1])], dim=1)  # (B, 3, H*W)
    return grid, mapped[:, :2] / mapped[:, 2:3]


def homography_to_flow(h: np.ndarray | Tensor, height: int, width: int, *, device=None) -> Tensor:
    """Displacement field (B, 2, H, W) float32 of ``h`` (B or 1 homographies) on an H x W grid.

    ``flow[p] = h(p) - p``; with ``h = H_a_to_b`` this is ``flow_a_to_b`` on frame a's grid.
    """
    hom = _as_tensor(h, torch.device(device) if device is not None else torch.device("cpu"))
    grid, xy = _map_grid(hom, height, width)
    return (xy - grid).reshape(-1, 2, height, width).float()


def homography_coords(
    h_src_to_dst: np.ndarray | Tensor,
    size: tuple[int, int],
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """(B, 2, H', W') float32: the source pixel ``inv(h)(q)`` of each pixel q of the target grid.

    ``h_src_to_dst`` is (3, 3) or (B, 3, 3) (B = 1 then); ``size`` = (H', W'). The coordinates
    for :func:`sample`, computed once to sample several maps on the same grid. The inverse is
    taken in float64, the coordinates are evaluated in float32: within a few float32 ulps of the
    float64 evaluation (measured on near-identity homographies: at most 6e-5 px at 256 px and
    1.5e-3 px at 4096 px, where casting the float64 result to float32 alone costs 1.5e-5 and
    2.4e-4 px); identities and integer shifts stay exact.
    """
    rows, cols = size
    device = torch.device(device) if device is not None else torch.device("cpu")
    inv = torch.linalg.inv(_as_tensor(h_src_to_dst, device)).float()  # (B, 3, 3)
    xs = torch.arange(cols, device=device, dtype=torch.float32)
    ys = torch.arange(rows, device=device, dtype=torch.float32)
    a, b, c = (inv[:, :, j, None, None] for j in range(3))  # columns of inv, (B, 3, 1, 1)
    # inv applied to every homogeneous pixel (x, y, 1), (B, 3, H', W'), without building the grid.
    mapped = a * xs + (b * ys[:, None] + c)
    return mapped[:, :2] / mapped[:, 2:]


def warp_homography(
    x: Tensor,
    h_src_to_dst: np.ndarray | Tensor,
    *,
    size: tuple[int, int] | None = None,
    mode: Mode = "bilinear",
    padding: Padding = "zeros",
) -> tuple[Tensor, Tensor]:
    """Warp ``x`` (B, C, H, W) from its own grid onto the target grid of ``h_src_to_dst``.

    Equals ``cv2.warpPerspective(x, h_src_to_dst, (W', H'))``: target pixel q takes the value of
    ``x`` at ``inv(h)(q)`` (:func:`homography_coords`). ``size`` = (H', W') of the target grid,
    default the size of ``x``. Use :func:`rescale_homography
    <vidseg.geometry.rescale_homography>` for maps at a stride. Returns ``(warped, valid)`` as
    :func:`sample`.
    """
    out_h, out_w = size if size is not None else x.shape[-2:]
    coords = homography_coords(h_src_to_dst, (out_h, out_w), device=x.device)
    if coords.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"batch sizes differ: image {x.shape[0]}, homographies {coords.shape[0]}")
    return sample(x, coords.expand(x.shape[0], -1, -1, -1), mode=mode, padding=padding)


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a flow field (B, 2, H, W) to ``size`` = (H', W'), scaling dx and dy with the axes.

    Bilinear, ``align_corners=False``: displacements scale exactly by W'/W and H'/H under the
    pixel-area convention of ``cv2.resize``.
    """
    height, width = flow.shape[-2:]
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([size[1] / width, size[0] / height], dtype=out.dtype, device=out.device)
    return out * scale[None, :, None, None]


def occlusion_mask(
    flow_fw: Tensor,
    flow_bw: Tensor,
    *,
    alpha1: float = FB_ALPHA1,
    alpha2: float = FB_ALPHA2,
    warp_backward: bool = True,
) -> Tensor:
    """Forward-backward check: (B, 1, H, W) bool, True where ``flow_fw`` is not trustworthy.

    ``flow_fw = flow_a_to_b`` and ``flow_bw = flow_b_to_a``, both (B, 2, H, W). A pixel p of
    frame a is occluded when ``|fw + bw'|^2 > alpha1 (|fw|^2 + |bw'|^2) + alpha2`` with
    ``bw' = flow_bw`` sampled at ``p + fw(p)`` (bilinear), or when ``p + fw(p)`` leaves frame b.
    ``warp_backward=False`` reproduces KD-SSP's variant, which adds ``flow_bw`` at p itself
    without warping (only right for near-zero motion) and has no out-of-view test.
    """
    if flow_fw.shape != flow_bw.shape:
        raise ValueError(
            f"forward and backward flows differ in shape: {tuple(flow_fw.shape)} vs "
            f"{tuple(flow_bw.shape)}"
        )
    if warp_backward:
        bw, inside = warp_flow(flow_bw, flow_fw, mode="bilinear", padding="border")
    else:
        bw, inside = flow_bw, torch.ones_like(flow_fw[:, :1], dtype=torch.bool)
    diff = (flow_fw + bw).square().sum(1, keepdim=True)
    bound = alpha1 * (flow_fw.square().sum(1, keepdim=True) + bw.square().sum(1, keepdim=True))
    return (diff > bound + alpha2) | ~inside


def photometric_weight(image: Tensor, warped: Tensor, *, signed_sum: bool = False) -> Tensor:
    """Per-pixel weight exp(-||I - I'||_1) over channels, (B, 1, H, W); 1 where images agree.

    ``image`` and ``warped`` are (B, C, H, W) in any common scale (the weight depends on it: SSP
    feeds ImageNet-normalised frames). ``signed_sum=True`` reproduces the official SSP loss,
    exp(-|sum_c (I - I')|), where channel errors of opposite sign cancel.
    """
    diff = image - warped
    dist = diff.sum(1, keepdim=True).abs() if signed_sum else diff.abs().sum(1, keepdim=True)
    return torch.exp(-dist)


def ssp_flowwarp(x: Tensor, flow: Tensor, mode: Mode = "nearest") -> Tensor:
    """The official SSP ``flowwarp``, reproduced for comparable numbers: (B, C, H, W) float.

    ``flow`` (B, 2, H, W) is ``flow_a_to_b`` and ``x`` a map of frame b. The grid is normalised
    as ``2x / (W - 1) - 1`` but sampled with ``align_corners=False``, so pixel x of frame a reads
    ``x_b`` at ``(x + dx) W / (W - 1) - 0.5`` (a stretch of up to half a pixel; nearest rounds
    ties to even); outside the image it reads 0. Use :func:`warp_flow` for the correct warp.
    """
    height, width = x.shape[-2:]
    coords = pixel_grid(height, width, device=flow.device, dtype=flow.dtype) + flow
    gx = 2.0 * coords[:, 0] / max(width - 1, 1) - 1.0
    gy = 2.0 * coords[:, 1] / max(height - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
