"""KD-SSP distillation: the KL loss, consistent teacher targets, teacher alignment."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidseg.data.transforms import crop_matrix, flip_matrix
from vidseg.geometry.homography import stride_matrix
from vidseg.losses import align_teacher, consistent_targets, kd_loss


def numpy_kd(student, teacher, tau):
    """tau^2 * sum over everything of p (log p - log q), computed independently in float64."""

    def log_softmax(x):
        x = x / tau
        x = x - x.max(axis=1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    log_p, log_q = log_softmax(teacher), log_softmax(student)
    return tau**2 * float((np.exp(log_p) * (log_p - log_q)).sum())


def test_kd_loss_matches_numpy_for_both_reductions():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 3, 4, generator=gen, dtype=torch.float64) * 3
    teacher = torch.randn(2, 5, 3, 4, generator=gen, dtype=torch.float64) * 3
    total = numpy_kd(student.numpy(), teacher.numpy(), 2.0)
    assert kd_loss(student, teacher).item() == pytest.approx(total / 2, rel=1e-12)
    pixelmean = kd_loss(student, teacher, reduction="pixelmean").item()
    assert pixelmean == pytest.approx(total / (2 * 3 * 4), rel=1e-12)
    assert kd_loss(student, teacher, temperature=0.7).item() == pytest.approx(
        numpy_kd(student.numpy(), teacher.numpy(), 0.7) / 2, rel=1e-12
    )


def test_class_weighted_kd_loss_weighs_pixels_by_the_teachers_class():
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(2, 4, 3, 5, generator=gen, dtype=torch.float64) * 2
    teacher = torch.randn(2, 4, 3, 5, generator=gen, dtype=torch.float64) * 2
    weights = torch.tensor([1.0, 4.0, 0.5, 2.0], dtype=torch.float64)
    # Per-pixel KL computed independently, weighted by the teacher's argmax class.
    s, t = student.numpy(), teacher.numpy()
    per_pixel = np.zeros((2, 3, 5))
    for b in range(2):
        for y in range(3):
            for x in range(5):
                per_pixel[b, y, x] = numpy_kd(s[b, :, y, x][None], t[b, :, y, x][None], 2.0)
    w = weights.numpy()[t.argmax(axis=1)]
    weighted = kd_loss(student, teacher, reduction="pixelmean", class_weights=weights).item()
    assert weighted == pytest.approx((w * per_pixel).sum() / w.sum(), rel=1e-12)
    batchmean = kd_loss(student, teacher, class_weights=weights).item()
    assert batchmean == pytest.approx((w * per_pixel).sum() / 2, rel=1e-12)
    # Equal weights change nothing under pixelmean.
    equal = kd_loss(student, teacher, reduction="pixelmean", class_weights=torch.full((4,), 3.0))
    assert equal.item() == pytest.approx(kd_loss(student, teacher, reduction="pixelmean").item())


def test_kd_loss_is_zero_for_equal_logits_and_scales_with_tau_squared():
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(3, 4, 5, 6, generator=gen)
    teacher = torch.randn(3, 4, 5, 6, generator=gen)
    assert kd_loss(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-6)
    # Logits scaled by tau at temperature tau give the temperature-1 divergence, times tau^2.
    tau = 3.0
    scaled = kd_loss(student * tau, teacher * tau, temperature=tau)
    torch.testing.assert_close(scaled, tau**2 * kd_loss(student, teacher, temperature=1.0))
    # batchmean = pixelmean * H * W.
    torch.testing.assert_close(
        kd_loss(student, teacher), kd_loss(student, teacher, reduction="pixelmean") * 5 * 6
    )


def test_only_the_student_receives_gradients():
    student = torch.randn(1, 3, 2, 2, requires_grad=True)
    teacher = torch.randn(1, 3, 2, 2, requires_grad=True)
    kd_loss(student, teacher.half()).backward()
    assert teacher.grad is None
    assert student.grad is not None
    assert student.grad.abs().sum() > 0
    # Half-precision logits are summed in float32.
    assert kd_loss(student.detach().bfloat16(), teacher.detach()).dtype == torch.float32


def test_kd_loss_rejects_mismatched_shapes_and_reductions():
    with pytest.raises(ValueError, match="both be"):
        kd_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 3))
    with pytest.raises(ValueError, match="reduction"):
        kd_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), reduction="mean")


def row_flows(dx_cur_to_prev, dx_prev_to_cur):
    """Flows of a one-row image: horizontal displacements, no vertical ones; (1, 2, 1, W)."""

    def flow(dx):
        dx = torch.tensor(dx, dtype=torch.float32)[None, None, None]
        return torch.cat([dx, torch.zeros_like(dx)], dim=1)

    return flow(dx_cur_to_prev), flow(dx_prev_to_cur)


def row(values):
    return torch.tensor(values, dtype=torch.float32)[None, None, None]


@pytest.mark.parametrize("official", [False, True])
def test_zero_flow_averages_both_targets(official):
    gen = torch.Generator().manual_seed(2)
    # 5 x 5: the official warp's stretch (x -> 1.25 x - 0.5) rounds back onto every pixel.
    t_cur = torch.randn(2, 3, 5, 5, generator=gen)
    t_prev = torch.randn(2, 3, 5, 5, generator=gen)
    zero = torch.zeros(2, 2, 5, 5)
    new_cur, new_prev = consistent_targets(t_cur, t_prev, zero, zero, official=official)
    torch.testing.assert_close(new_cur, (t_cur + t_prev) / 2)
    torch.testing.assert_close(new_prev, (t_cur + t_prev) / 2)


def test_pixels_whose_flow_leaves_the_frame_keep_their_logits():
    gen = torch.Generator().manual_seed(3)
    t_cur = torch.randn(1, 3, 4, 6, generator=gen)
    t_prev = torch.randn(1, 3, 4, 6, generator=gen)
    out = torch.zeros(1, 2, 4, 6)
    out[:, 0] = 10.0
    new_cur, new_prev = consistent_targets(t_cur, t_prev, out, -out)
    torch.testing.assert_close(new_cur, t_cur)
    torch.testing.assert_close(new_prev, t_prev)


# One row of 5 pixels. Pixel 2 of frame t claims to move 4 px right (out of the frame) and the
# backward flow at the same position claims 4 px left; pixel 4 of frame t-1 moves 9 px right.
T_CUR = [0.0, 10.0, 20.0, 30.0, 40.0]
T_PREV = [100.0, 110.0, 120.0, 130.0, 140.0]
FLOWS = ([0.0, 0.0, 4.0, 0.0, 0.0], [0.0, 0.0, -4.0, 0.0, 9.0])


def test_official_variant_on_a_hand_computed_case():
    new_cur, new_prev = consistent_targets(
        row(T_CUR), row(T_PREV), *row_flows(*FLOWS), official=True
    )
    # One mask from the unwarped sum f_a + f_b: pixel 2 (4 - 4 = 0) passes, pixel 4
    # (|0 + 9|^2 = 81 > 0.01 * 81 + 0.5) is occluded, in both frames. The official warp reads
    # zeros outside the frame: pixel 2 averages with 0 in both frames.
    torch.testing.assert_close(new_cur, row([50.0, 60.0, 10.0, 80.0, 40.0]))
    torch.testing.assert_close(new_prev, row([50.0, 60.0, 60.0, 80.0, 140.0]))


def test_corrected_variant_checks_each_direction_where_the_flow_lands():
    new_cur, new_prev = consistent_targets(row(T_CUR), row(T_PREV), *row_flows(*FLOWS))
    # Frame t: pixel 2 leaves the frame (kept); pixel 4 lands on itself, where the backward
    # flow says 9 (kept). Frame t-1: pixels 2 and 4 leave the frame (kept).
    torch.testing.assert_close(new_cur, row([50.0, 60.0, 20.0, 80.0, 40.0]))
    torch.testing.assert_close(new_prev, row([50.0, 60.0, 120.0, 80.0, 140.0]))


def test_corrected_variant_follows_a_consistent_shift():
    # Frame t is frame t-1 moved 1 px right: pixel p of t is p - 1 of t-1.
    t_prev = torch.arange(6.0).view(1, 1, 1, 6)
    t_cur = torch.cat([torch.zeros(1, 1, 1, 1), t_prev[..., :-1]], dim=-1) + 100
    to_prev, to_cur = row_flows([-1.0] * 6, [1.0] * 6)
    new_cur, new_prev = consistent_targets(t_cur, t_prev, to_prev, to_cur)
    # Pixel 0 of t and pixel 5 of t-1 have no counterpart (kept); the others are averaged.
    torch.testing.assert_close(new_cur, row([100.0, 50.0, 51.0, 52.0, 53.0, 54.0]))
    torch.testing.assert_close(new_prev, row([50.0, 51.0, 52.0, 53.0, 54.0, 5.0]))


def test_align_teacher_with_identity_affine_is_the_bilinear_upsampling():
    gen = torch.Generator().manual_seed(4)
    teacher = torch.randn(2, 3, 5, 6, generator=gen).half()
    grid = np.linalg.inv(stride_matrix(4))
    out = align_teacher(teacher, grid[None], np.eye(3)[None], (20, 24))
    assert out.dtype == torch.float32
    expected = F.interpolate(teacher.float(), size=(20, 24), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_align_teacher_follows_flips_and_crops_per_sample():
    gen = torch.Generator().manual_seed(5)
    teacher = torch.randn(2, 3, 5, 6, generator=gen)
    grid = np.repeat(np.linalg.inv(stride_matrix(4))[None], 2, axis=0)
    plain = align_teacher(teacher, grid, np.eye(3), (20, 24))
    affines = np.stack([flip_matrix(24), crop_matrix(4, 8)])
    out = align_teacher(teacher, grid, affines, (20, 24))
    torch.testing.assert_close(out[0], plain[0].flip(-1), atol=1e-5, rtol=1e-5)
    # A crop at (top 4, left 8) shows the frame from there on; past the frame's end, border
    # padding repeats the last teacher value.
    torch.testing.assert_close(out[1, :, :16, :16], plain[1, :, 4:, 8:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        out[1, :, :16, 16:], plain[1, :, 4:, -1:].expand(-1, -1, 8), atol=1e-5, rtol=1e-5
    )
