"""SSP's temporal consistency loss: the current output against the previous frame's output
brought onto the current frame by optical flow, weighted by photometric agreement."""

from __future__ import annotations

import torch
from torch import Tensor

from vidseg.geometry.warp import photometric_weight, ssp_flowwarp, warp_flow


def temporal_consistency_loss(
    out: Tensor,
    prev_out: Tensor,
    flow_cur_to_prev: Tensor,
    frame: Tensor,
    prev_frame: Tensor,
    *,
    official: bool = False,
    probabilities: bool = False,
) -> Tensor:
    """Weighted squared difference between ``out`` and the flow-warped ``prev_out``.

    ``out`` and ``prev_out`` are (B, C, H, W) logits of frames t and t-1 (``prev_out`` raw and
    unwarped); ``flow_cur_to_prev`` (B, 2, H, W) is the flow from frame t to t-1 (no gradient
    flows through it); ``frame`` and ``prev_frame`` (B, 3, H, W) are the images in the scale the
    weight should see (SSP uses ImageNet-normalised frames). With the weight
    ``w = exp(-||I_t - warp(I_{t-1})||_1)`` (no gradient) and ``d = out - warp(prev_out)``, the
    loss is ``mean(w * d^2)`` over B, C, H, W; both outputs receive gradients, as officially.

    ``official=True`` reproduces SSP exactly: nearest sampling with its align-corners stretch,
    zero logits where the flow leaves the frame (counted), and the weight
    ``exp(-|sum_c (I_t - warp(I_{t-1}))|)`` whose channel errors of opposite sign cancel.
    The default corrects these: the pixel-centre nearest warp, pixels whose flow leaves the frame
    excluded (the mean runs over the rest), and the channel-wise absolute difference.
    ``probabilities=True`` compares softmax probabilities instead of logits, which bounds each
    term and ignores the logits' scale.
    """
    flow = flow_cur_to_prev.detach()
    if probabilities:
        out, prev_out = out.softmax(1), prev_out.softmax(1)
    if official:
        warped = ssp_flowwarp(prev_out, flow)
        with torch.no_grad():
            weight = photometric_weight(frame, ssp_flowwarp(prev_frame, flow), signed_sum=True)
        return (weight * (out - warped).square()).mean()
    warped, valid = warp_flow(prev_out, flow, mode="nearest")
    with torch.no_grad():
        warped_frame, _ = warp_flow(prev_frame, flow, mode="nearest")
        weight = photometric_weight(frame, warped_frame) * valid
    count = valid.sum() * out.shape[1]
    return (weight * (out - warped).square()).sum() / count.clamp(min=1)
