import numpy as np
import pytest
import torch

from vidseg.losses import temporal_consistency_loss


def shift_flow(dx, shape=(1, 2, 6, 8)):
    flow = torch.zeros(shape)
    flow[:, 0] = dx
    return flow


@pytest.mark.parametrize(("height", "width"), [(6, 8), (7, 9)])
def test_identical_frames_and_outputs_with_zero_flow_cost_nothing(height, width):
    torch.manual_seed(0)
    out = torch.randn(2, 4, height, width)
    frame = torch.rand(2, 3, height, width)
    zero = torch.zeros(2, 2, height, width)
    assert temporal_consistency_loss(out, out.clone(), zero, frame, frame).item() == 0.0
    official = temporal_consistency_loss(out, out.clone(), zero, frame, frame, official=True)
    # The official warp's stretch reads outside the last row and column at zero flow when the
    # size is even (zero logits there), and maps every pixel onto itself when it is odd.
    assert (official.item() > 0) == (width % 2 == 0)


def test_known_value_on_identical_frames():
    # Identical frames: weight 1; outputs differ by 0.5 everywhere: loss 0.25.
    frame = torch.rand(1, 3, 6, 8)
    out = torch.zeros(1, 4, 6, 8)
    loss = temporal_consistency_loss(out + 0.5, out, torch.zeros(1, 2, 6, 8), frame, frame)
    assert loss.item() == pytest.approx(0.25)


def test_weight_uses_channelwise_absolute_difference_unless_official():
    out = torch.ones(1, 1, 6, 8)
    prev = torch.zeros(1, 1, 6, 8)
    frame = torch.zeros(1, 3, 6, 8)
    prev_frame = frame.clone()
    prev_frame[:, 0], prev_frame[:, 1] = 0.3, -0.3  # opposite channel errors
    zero = torch.zeros(1, 2, 6, 8)
    ours = temporal_consistency_loss(out, prev, zero, frame, prev_frame)
    official = temporal_consistency_loss(out, prev, zero, frame, prev_frame, official=True)
    assert ours.item() == pytest.approx(np.exp(-0.6))
    # In the official (signed-sum) weight the two errors cancel: weight 1, loss 1.
    assert official.item() == pytest.approx(1.0)


def test_out_of_view_pixels_are_excluded_unless_official():
    # Everything moves 2 px right between t-1 and t: flow t -> t-1 is -2 px; the first 2 columns
    # of frame t come from outside frame t-1.
    prev_frame = torch.rand(1, 3, 6, 8)
    frame = torch.zeros_like(prev_frame)
    frame[..., 2:] = prev_frame[..., :-2]
    prev_out = torch.randn(1, 3, 6, 8)
    out = torch.zeros_like(prev_out)
    out[..., 2:] = prev_out[..., :-2]
    out[..., :2] = 5.0  # whatever the model says where nothing came from
    flow = shift_flow(-2.0)
    assert temporal_consistency_loss(out, prev_out, flow, frame, prev_frame).item() == 0.0
    official = temporal_consistency_loss(out, prev_out, flow, frame, prev_frame, official=True)
    assert official.item() > 1.0  # zero logits pulled towards the 5s at the border


def test_gradients_reach_both_outputs_not_the_flow():
    torch.manual_seed(1)
    out = torch.randn(1, 3, 6, 8, requires_grad=True)
    prev = torch.randn(1, 3, 6, 8, requires_grad=True)
    flow = shift_flow(1.0).requires_grad_(True)
    frame = torch.rand(1, 3, 6, 8)
    for probabilities in (False, True):
        loss = temporal_consistency_loss(out, prev, flow, frame, frame, probabilities=probabilities)
        loss.backward()
    assert out.grad.abs().sum() > 0
    assert prev.grad.abs().sum() > 0
    assert flow.grad is None


def test_probabilities_bound_the_loss():
    out = torch.full((1, 3, 6, 8), 100.0)
    out[:, 0] = -100
    prev = -out
    frame = torch.rand(1, 3, 6, 8)
    zero = torch.zeros(1, 2, 6, 8)
    assert temporal_consistency_loss(out, prev, zero, frame, frame).item() > 1e3
    assert temporal_consistency_loss(out, prev, zero, frame, frame, probabilities=True) <= 1.0
