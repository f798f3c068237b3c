"""KD-SSP's distillation: the soft-label KL loss, temporally consistent teacher targets, and
teacher logits resampled onto augmented training frames.

Shapes: logits (B, C, H, W); flows (B, 2, H, W) in pixels on the grid of the logits they warp
(channel 0 = dx; ``flow_a_to_b`` sends pixel p of frame a to ``p + flow[p]`` in frame b);
3x3 matrices map pixel coordinates in the pixel-centre convention.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vidseg.geometry.warp import occlusion_mask, ssp_flowwarp, warp_flow, warp_homography

Reduction = Literal["batchmean", "pixelmean"]


def kd_loss(
    student: Tensor,
    teacher: Tensor,
    temperature: float = 2.0,
    reduction: Reduction = "batchmean",
    class_weights: Tensor | None = None,
) -> Tensor:
    """``tau^2 * KL(softmax(teacher / tau) || softmax(student / tau))`` over the class axis.

    ``student`` and ``teacher`` are (B, C, H, W) logits of the same size; every pixel counts (a
    teacher has no ignore label) and only ``student`` receives gradients. ``reduction``:

    - ``"batchmean"`` (official, ``KLDivLoss(reduction="batchmean")``): the sum over C, H, W,
      divided by B. It grows with the number of pixels, which is why the official weight of
      the temporal consistency loss beside it is 135000 ~ 0.25 * 736^2;
    - ``"pixelmean"``: the sum divided by B * H * W, independent of the crop size. The same
      balance as the official one is ``lambda_official = lambda_pixelmean * H * W``.

    ``class_weights`` (C,) weighs each pixel's KL by the weight of the teacher's class there, as
    a class-weighted cross-entropy does; "pixelmean" then divides by the summed weights.
    """
    if student.shape != teacher.shape or student.ndim != 4:
        raise ValueError(
            f"student and teacher logits must both be (B, C, H, W), got {tuple(student.shape)} "
            f"and {tuple(teacher.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    # At least float32: under mixed precision a sum over every pixel in half precision would
    # lose most of its digits.
    dtype = torch.promote_types(student.dtype, torch.float32)
    log_q = F.log_softmax(student.to(dtype) / temperature, dim=1)
    log_p = F.log_softmax(teacher.detach().to(dtype) / temperature, dim=1)
    # log_target keeps p * log p finite where the teacher's probability underflows to 0.
    batch, _, height, width = student.shape
    if class_weights is None:
        total = F.kl_div(log_q, log_p, reduction="sum", log_target=True)
        pixels: Tensor | int = batch * height * width
    else:
        per_pixel = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(1)
        weight = class_weights.to(dtype)[teacher.detach().argmax(1)]
        total = (weight * per_pixel).sum()
        pixels = weight.sum()
    if reduction == "batchmean":
        count = batch
    elif reduction == "pixelmean":
        count = pixels
    else:
        raise ValueError(f"reduction must be 'batchmean' or 'pixelmean', got '{reduction}'")
    return total / count * temperature**2


@torch.no_grad()
def consistent_targets(
    t_cur: Tensor,
    t_prev: Tensor,
    flow_cur_to_prev: Tensor,
    flow_prev_to_cur: Tensor,
    *,
    official: bool = False,
) -> tuple[Tensor, Tensor]:
    """Teacher logits of frames t and t-1 made consistent with each other: ``(t_cur', t_prev')``.

    Where a pixel of frame t is visible in frame t-1, ``t_cur' = (t_cur + t_prev~) / 2`` with
    ``t_prev~`` the logits of t-1 backward-warped onto frame t through ``flow_cur_to_prev``
    (nearest sampling, so no logits are blended); elsewhere ``t_cur`` is kept. ``t_prev'``
    likewise, mirrored. Both averages use the original logits of the other frame.

    Visibility is a forward-backward check (:func:`~vidseg.geometry.warp.occlusion_mask`),
    made per direction: for frame t on ``flow_cur_to_prev`` against the backward flow sampled
    where it lands, for frame t-1 the mirror; a pixel whose flow leaves the other frame is
    occluded. ``official=True`` reproduces KD-SSP exactly: one mask, occluded where
    ``|f_a + f_b|^2 > 0.01 (|f_a|^2 + |f_b|^2) + 0.5`` with both flows taken at the same pixel
    (``f_b`` not warped), used for both frames, and the official ``flowwarp``
    (:func:`~vidseg.geometry.warp.ssp_flowwarp`, zeros outside the frame).
    """
    if t_cur.shape != t_prev.shape:
        raise ValueError(
            f"teacher logits differ in shape: {tuple(t_cur.shape)} vs {tuple(t_prev.shape)}"
        )
    if flow_cur_to_prev.shape[-2:] != t_cur.shape[-2:]:
        raise ValueError(
            f"flows are {tuple(flow_cur_to_prev.shape[-2:])} but the logits are "
            f"{tuple(t_cur.shape[-2:])}; resize the flows with resize_flow first"
        )
    if official:
        occluded = occlusion_mask(flow_cur_to_prev, flow_prev_to_cur, warp_backward=False)
        prev_on_cur = ssp_flowwarp(t_prev, flow_cur_to_prev)
        cur_on_prev = ssp_flowwarp(t_cur, flow_prev_to_cur)
        visible_cur = visible_prev = ~occluded
    else:
        # occlusion_mask also marks pixels whose flow leaves the frame (bilinear bounds, which
        # are stricter than the nearest sample's), so every visible pixel has a sample.
        prev_on_cur, _ = warp_flow(t_prev, flow_cur_to_prev, mode="nearest")
        cur_on_prev, _ = warp_flow(t_cur, flow_prev_to_cur, mode="nearest")
        visible_cur = ~occlusion_mask(flow_cur_to_prev, flow_prev_to_cur)
        visible_prev = ~occlusion_mask(flow_prev_to_cur, flow_cur_to_prev)
    new_cur = torch.where(visible_cur, (t_cur + prev_on_cur) / 2, t_cur)
    new_prev = torch.where(visible_prev, (t_prev + cur_on_prev) / 2, t_prev)
    return new_cur, new_prev


def align_teacher(
    teacher: Tensor,
    grid_to_frame: np.ndarray | Tensor,
    frame_affine: np.ndarray | Tensor,
    size: tuple[int, int],
) -> Tensor:
    """Teacher logits (B, C, h, w) resampled onto augmented training frames of ``size`` (H, W).

    ``grid_to_frame`` (B or 1, 3, 3) maps the logits' grid to native frame pixels (as stored by
    :mod:`vidseg.data.teacher_logits`); ``frame_affine`` (B or 1, 3, 3) maps native frame pixels
    to the augmented frame's (``VideoSample.affine``). Bilinear, with border padding so that
    pixels near the edges of a crop take the nearest teacher value. Returns (B, C, H, W) float32.
    """
    grid = torch.as_tensor(grid_to_frame, dtype=torch.float64, device=teacher.device)
    affine = torch.as_tensor(frame_affine, dtype=torch.float64, device=teacher.device)
    warped, _ = warp_homography(
        teacher.float(), affine @ grid, size=size, mode="bilinear", padding="border"
    )
    return warped
