import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidseg.data import open_dataset, synthesize
from vidseg.geometry import (
    apply_homography,
    homography_flow,
    homography_to_flow,
    occlusion_mask,
    photometric_weight,
    rescale_homography,
    resize_flow,
    resize_matrix,
    stride_matrix,
    warp_flow,
    warp_homography,
)


def smooth_image(height, width, channels=3, seed=0):
    """Low-frequency sinusoids: gradients below 0.03 per pixel, so interpolation schemes agree."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    out = np.zeros((height, width, channels))
    for c in range(channels):
        for _ in range(3):
            fx, fy = rng.uniform(-1, 1, 2) * 2 * np.pi / 300
            out[..., c] += np.sin(fx * xs + fy * ys + rng.uniform(0, 6)) / 3
    return out.astype(np.float32)


def to_tensor(image):
    return torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_integer_flow_gives_an_exact_shifted_copy(mode):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(0, 1, (2, 3, 9, 12)).astype(np.float32))
    flow = torch.zeros(2, 2, 9, 12)
    flow[:, 0], flow[:, 1] = 3, -2  # out[y, x] = x[y - 2, x + 3]
    out, valid = warp_flow(x, flow, mode=mode)
    torch.testing.assert_close(out[:, :, 2:, :-3], x[:, :, :-2, 3:], rtol=0, atol=1e-6)
    expected_valid = torch.zeros(9, 12, dtype=torch.bool)
    expected_valid[2:, :-3] = True
    assert torch.equal(valid[:, 0], expected_valid.expand(2, -1, -1))
    assert torch.all(out[:, :, :2] == 0)  # zero padding outside the source
    assert torch.all(out[:, :, :, -3:] == 0)


def test_nearest_shift_is_bit_exact_and_keeps_integer_labels():
    labels = torch.randint(0, 7, (1, 1, 16, 20), dtype=torch.uint8)
    flow = torch.zeros(1, 2, 16, 20)
    flow[:, 0] = -4
    out, _ = warp_flow(labels, flow, mode="nearest")
    assert out.dtype == torch.uint8
    assert torch.equal(out[..., 4:], labels[..., :-4])


def test_bilinear_half_pixel_flow_averages_neighbours():
    x = torch.arange(6, dtype=torch.float32).reshape(1, 1, 1, 6)
    flow = torch.zeros(1, 2, 1, 6)
    flow[:, 0] = 0.5
    out, valid = warp_flow(x, flow)
    torch.testing.assert_close(out[0, 0, 0, :5], torch.arange(5) + 0.5)
    assert valid[0, 0, 0].tolist() == [True] * 5 + [False]


def test_bilinear_warp_is_differentiable_in_image_and_flow():
    torch.manual_seed(0)
    x = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    flow = (torch.rand(1, 2, 5, 6, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, f: warp_flow(a, f)[0], (x, flow))


def test_homography_warp_matches_opencv_on_a_smooth_image():
    image = smooth_image(96, 128)
    h = np.array([[1.02, 0.03, -4.2], [-0.02, 0.99, 3.1], [1e-4, -5e-5, 1.0]])
    expected = cv2.warpPerspective(image, h, (128, 96), flags=cv2.INTER_LINEAR)
    out, valid = warp_homography(to_tensor(image), h)
    out = out[0].permute(1, 2, 0).numpy()
    valid = valid[0, 0].numpy()
    # OpenCV blends in its zero border on the outermost half pixel; compare where both sample
    # only image pixels.
    inner = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert inner.mean() > 0.85
    assert np.abs(out[inner] - expected[inner]).max() < 1e-3


def test_homography_warp_nearest_matches_opencv_exactly_on_labels():
    labels = np.random.default_rng(3).integers(0, 8, (40, 50), dtype=np.uint8)
    h = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -5.0], [0.0, 0.0, 1.0]])
    expected = cv2.warpPerspective(labels, h, (50, 40), flags=cv2.INTER_NEAREST)
    out, _ = warp_homography(torch.from_numpy(labels)[None, None], h, mode="nearest")
    assert np.array_equal(out[0, 0].numpy(), expected)


def test_homography_warp_equals_flow_warp_with_the_inverse_homography_flow():
    image = to_tensor(smooth_image(32, 40))
    h = np.array([[0.98, 0.01, 1.5], [0.02, 1.01, -2.0], [0.0, 0.0, 1.0]])
    by_h, valid_h = warp_homography(image, h)
    flow = homography_to_flow(np.linalg.inv(h), 32, 40)
    by_flow, valid_f = warp_flow(image, flow)
    torch.testing.assert_close(by_h, by_flow, atol=1e-5, rtol=0)
    assert torch.equal(valid_h, valid_f)


def test_batched_homographies_warp_each_sample_with_its_own():
    image = to_tensor(smooth_image(24, 30)).expand(3, -1, -1, -1)
    hs = np.stack(
        [np.eye(3), [[1, 0, 2], [0, 1, 0], [0, 0, 1]], [[1, 0, 0], [0, 1, -3], [0, 0, 1]]]
    )
    out, _ = warp_homography(image, torch.from_numpy(hs))
    for i in range(3):
        single, _ = warp_homography(image[i : i + 1], hs[i])
        torch.testing.assert_close(out[i : i + 1], single)
    torch.testing.assert_close(out[1, :, :, 2:], image[1, :, :, :-2], atol=1e-6, rtol=0)


def test_homography_to_flow_matches_numpy():
    h = np.array([[1.01, 0.02, 2.0], [-0.01, 0.98, -1.0], [2e-4, 1e-4, 1.0]])
    expected = homography_flow(h, 20, 30)
    got = homography_to_flow(h, 20, 30)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_homography_flow_matches_the_synthetic_ground_truth_flow(tmp_path):
    root = synthesize(
        tmp_path / "synth", clips=1, val_clips=0, test_clips=0, frames=6, size=96, seed=4
    )
    clip = open_dataset(root, "train")[0]
    checked = 0
    for n in clip.frames[1:]:
        gt = torch.from_numpy(clip.flow(n)).permute(2, 0, 1)[None]  # frame n -> n-1
        from_h = homography_to_flow(np.linalg.inv(clip.homography(n)), *clip.size)
        # Moving actors follow their own motion; everything else follows the camera exactly
        # (up to float16 storage).
        close = (gt - from_h).abs().amax(1) < 0.02
        assert close.float().mean() > 0.9
        checked += 1
    assert checked == 5


def test_stride_matrix_follows_average_pooled_pixel_centres():
    # Average-pooling a ramp f = x by s gives, at feature pixel u, the mean image x-coordinate
    # of its cell: the cell centre. stride_matrix must map that centre to u.
    ramp = torch.arange(32, dtype=torch.float64).expand(1, 1, 8, 32)
    for s in (2, 4, 8):
        centres = F.avg_pool2d(ramp, s)[0, 0, 0].numpy()
        pts = np.stack([centres, np.zeros_like(centres)], -1)
        mapped = apply_homography(stride_matrix(s), pts)[:, 0]
        np.testing.assert_allclose(mapped, np.arange(32 // s), atol=1e-12)
    np.testing.assert_allclose(stride_matrix(4), resize_matrix((64, 96), (16, 24)))


def test_rescaled_homography_maps_feature_centres_like_the_full_resolution_one():
    h = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])  # zoom about pixel (0, 0)
    h4 = rescale_homography(h, stride_matrix(4))
    # Feature centre u sits at image x = 4u + 1.5, maps to 8u + 3, which is feature 2u + 0.375.
    u = np.array([[0.0, 0.0], [3.0, 5.0]])
    np.testing.assert_allclose(apply_homography(h4, u), 2 * u + 0.375, atol=1e-12)
    # The official SSP conjugation diag(s, s, 1) H diag(1/s, 1/s, 1) drops the half-pixel term.
    naive = np.diag([0.25, 0.25, 1.0]) @ h @ np.diag([4.0, 4.0, 1.0])
    assert np.abs(apply_homography(naive, u) - (2 * u + 0.375)).max() == pytest.approx(0.375)


def test_feature_warp_at_stride_agrees_with_warping_at_full_resolution():
    image = smooth_image(128, 128, channels=2)
    h = np.array([[1.03, 0.02, -6.0], [-0.01, 0.97, 5.0], [5e-5, 0.0, 1.0]])
    full, _ = warp_homography(to_tensor(image), h)
    pooled_after = F.avg_pool2d(full, 4)
    feats, valid = warp_homography(
        F.avg_pool2d(to_tensor(image), 4), rescale_homography(h, stride_matrix(4))
    )
    inner = valid[0, 0].numpy().astype(np.uint8)
    inner = cv2.erode(inner, np.ones((5, 5), np.uint8)).astype(bool)
    diff = (feats - pooled_after)[0].abs().amax(0).numpy()
    assert diff[inner].max() < 5e-3


def test_resize_flow_scales_values_with_the_axes():
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0], flow[:, 1] = 2.0, 1.0
    out = resize_flow(flow, (16, 32))
    assert out.shape == (1, 2, 16, 32)
    torch.testing.assert_close(out[:, 0], torch.full((1, 16, 32), 8.0))
    torch.testing.assert_close(out[:, 1], torch.full((1, 16, 32), 2.0))


def square_motion(height=20, width=30, box=(5, 12, 4, 10), dx=5):
    """A box (y0, y1, x0, x1) moving right by dx over a still background: exact fw/bw flows."""
    y0, y1, x0, x1 = box
    fw = torch.zeros(1, 2, height, width)
    fw[0, 0, y0:y1, x0:x1] = dx
    bw = torch.zeros(1, 2, height, width)
    bw[0, 0, y0:y1, x0 + dx : x1 + dx] = -dx
    return fw, bw


def test_forward_backward_check_finds_exactly_the_covered_background():
    fw, bw = square_motion()
    occluded = occlusion_mask(fw, bw)[0, 0]
    # Background pixels that the box covers in the next frame are occluded; the box itself and
    # the rest of the background are consistent.
    expected = torch.zeros(20, 30, dtype=torch.bool)
    expected[5:12, 10:15] = True
    assert torch.equal(occluded, expected)


def test_unwarped_check_of_kd_ssp_also_flags_part_of_the_visible_box():
    fw, bw = square_motion()
    official = occlusion_mask(fw, bw, warp_backward=False)[0, 0]
    assert official[5:12, 4:9].all()  # box pixels where bw(p) = 0 although they stay visible
    assert not occlusion_mask(fw, bw)[0, 0, 5:12, 4:9].any()


def test_forward_backward_check_flags_motion_out_of_view():
    fw = torch.zeros(1, 2, 6, 8)
    fw[:, 0] = 3
    bw = -fw
    occluded = occlusion_mask(fw, bw)[0, 0]
    assert occluded[:, -3:].all()
    assert not occluded[:, :-3].any()


def test_photometric_weight_known_values():
    a = torch.zeros(1, 3, 2, 2)
    b = torch.zeros(1, 3, 2, 2)
    b[:, 0], b[:, 1], b[:, 2] = 0.1, -0.1, 0.2
    w = photometric_weight(a, b)
    torch.testing.assert_close(w, torch.full((1, 1, 2, 2), float(np.exp(-0.4))))
    w_official = photometric_weight(a, b, signed_sum=True)
    torch.testing.assert_close(w_official, torch.full((1, 1, 2, 2), float(np.exp(-0.2))))
