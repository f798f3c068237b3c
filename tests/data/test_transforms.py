import cv2
import numpy as np
import pytest

from vidseg.data.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    VideoSample,
    crop,
    crop_matrix,
    flip_matrix,
    hflip,
    resize,
    resize_matrix,
)
from vidseg.geometry.homography import apply_homography, homography_flow

H0, W0 = 72, 96


def texture(rng, h=H0, w=W0, sigma=3.0):
    """Smooth random RGB texture spanning 0..255 (smooth, so interpolation error stays small)."""
    noise = cv2.GaussianBlur(rng.normal(size=(h, w, 3)).astype(np.float32), (0, 0), sigma)
    noise = (noise - noise.min()) / (noise.max() - noise.min()) * 255
    return np.rint(noise).astype(np.uint8)


def similarity_with_perspective(angle, scale, tx, ty, px, py):
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty], [px, py, 1.0]])


# Rotation, zoom and perspective: a conjugation with a wrong A would not cancel out.
TEST_H = similarity_with_perspective(0.15, 1.08, 6.0, -4.0, 2e-4, -3e-4)


def pair_sample(rng, h=TEST_H):
    """Frame 2 = frame 1 warped by h (dst(p) = src(h^-1 p), pixel centres at integers)."""
    f1 = texture(rng)
    f2 = cv2.warpPerspective(f1, h, (W0, H0), flags=cv2.INTER_LINEAR)
    labels = rng.integers(0, 4, (H0, W0), dtype=np.uint8)
    labels[labels == 3] = 255
    return VideoSample(
        frames=[f1, f2],
        labels=[None, labels],
        homographies=[h],
        flows=[homography_flow(np.linalg.inv(h), H0, W0)],
        clip_id="c",
        frame_numbers=(4, 5),
    )


def grid(h, w):
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs, ys], axis=-1).astype(np.float64)


def inside(points, h, w, margin):
    x, y = points[..., 0], points[..., 1]
    return (x > margin) & (x < w - 1 - margin) & (y > margin) & (y < h - 1 - margin)


AUGMENT = Compose([RandomHorizontalFlip(0.5), RandomScaleCrop((40, 56), (0.6, 1.4))])


# -- affine maps: known answers ----------------------------------------------------------------


def test_flip_matrix_maps_known_points():
    pts = np.array([[0.0, 3.0], [9.0, 0.0], [4.5, 2.0], [-0.5, 1.0]])
    np.testing.assert_array_equal(
        apply_homography(flip_matrix(10), pts), [[9, 3], [0, 0], [4.5, 2], [9.5, 1]]
    )


def test_crop_matrix_maps_known_points():
    np.testing.assert_array_equal(
        apply_homography(crop_matrix(top=5, left=2), np.array([[2.0, 5.0], [10.0, 7.5]])),
        [[0, 0], [8, 2.5]],
    )


def test_resize_matrix_keeps_pixel_edges_and_centres():
    a = resize_matrix((4, 6), (8, 3))  # y doubled, x halved
    pts = np.array([[-0.5, -0.5], [5.5, 3.5], [0.5, 0.0], [2.5, 1.5]])
    # Image edges stay edges; source pixel (0.5 between pixels 0 and 1) lands on dst pixel 0.
    np.testing.assert_allclose(
        apply_homography(a, pts), [[-0.5, -0.5], [2.5, 7.5], [0.0, 0.5], [1.0, 3.5]]
    )


def test_accumulated_affine_of_flip_scale_crop():
    rng = np.random.default_rng(0)
    sample = pair_sample(rng)
    out = crop(resize(hflip(sample), (144, 48)), top=10, left=4, height=40, width=30)
    # x: flip (x -> 95 - x), halve (x -> x/2 - 1/4), crop (-4); y: double (y -> 2y + 1/2), -10.
    expected = np.array([[-0.5, 0.0, 95 / 2 - 0.25 - 4], [0.0, 2.0, 0.5 - 10], [0, 0, 1]])
    np.testing.assert_allclose(out.affine, expected)


# -- primitives move pixels where A says -------------------------------------------------------


def test_flip_and_crop_are_exact_and_follow_a():
    rng = np.random.default_rng(1)
    sample = pair_sample(rng)
    out = crop(hflip(sample), top=7, left=11, height=30, width=50)
    np.testing.assert_array_equal(out.frames[0], sample.frames[0][7:37, ::-1][:, 11:61])
    pts = grid(H0, W0).reshape(-1, 2)
    mapped = apply_homography(out.affine, pts)
    keep = inside(mapped, 30, 50, -0.5)
    src, dst = pts[keep].astype(int), np.rint(mapped[keep]).astype(int)
    np.testing.assert_array_equal(
        out.frames[1][dst[:, 1], dst[:, 0]], sample.frames[1][src[:, 1], src[:, 0]]
    )
    np.testing.assert_array_equal(
        out.labels[1][dst[:, 1], dst[:, 0]], sample.labels[1][src[:, 1], src[:, 0]]
    )


@pytest.mark.parametrize("size", [(144, 192), (36, 48), (100, 150)])
def test_resize_is_centre_aligned_with_a(size):
    """A horizontal ramp I(x) = 2x + 20 resized must equal I(A^-1 p) (up to uint8 rounding).

    Bilinear enlargement and integer-ratio area shrinking reproduce a linear ramp exactly; a
    missing (s - 1) / 2 offset would shift it by 0.3 grey levels or more on every pixel.
    """
    ramp = np.broadcast_to((2 * np.arange(W0) + 20)[None, :, None], (H0, W0, 3)).astype(np.uint8)
    sample = VideoSample([ramp.copy()], [None], [], [])
    out = resize(sample, size)
    src = apply_homography(np.linalg.inv(out.affine), grid(*size))
    expected = 2 * src[..., 0] + 20
    margin = 2
    interior = out.frames[0][:, margin:-margin, 0].astype(float)
    error = interior - expected[:, margin:-margin]
    assert np.abs(error).max() <= 0.5 + 1e-9
    # Exact ties (x.5) all round the same way; elsewhere rounding must be unbiased.
    untied = np.abs(np.abs(error) - 0.5) > 1e-6
    if untied.any():
        assert abs(error[untied].mean()) < 0.1


def test_label_resize_is_centre_aligned_nearest():
    """cv2's INTER_NEAREST picks floor(x' / s) (shifted); ours picks the pixel under A^-1 p."""
    labels = np.arange(18, dtype=np.uint8).reshape(6, 3)
    # Ratios where no destination centre falls on a source pixel edge (no rounding ties).
    sample = VideoSample([np.zeros((6, 3, 3), np.uint8)], [labels], [], [])
    out = resize(sample, (4, 8))
    src = np.rint(apply_homography(np.linalg.inv(out.affine), grid(4, 8))).astype(int)
    naive = labels[src[..., 1], src[..., 0]]
    np.testing.assert_array_equal(out.labels[0], naive)
    plain_nearest = cv2.resize(labels, (8, 4), interpolation=cv2.INTER_NEAREST)
    assert not np.array_equal(plain_nearest, naive)


# -- the key property: transformed H and flow describe the transformed frames ------------------


@pytest.mark.parametrize("seed", range(6))
def test_transformed_homography_maps_transformed_frames(seed):
    rng = np.random.default_rng(100 + seed)
    sample = pair_sample(rng)
    out = AUGMENT(sample, np.random.default_rng(seed))
    oh, ow = out.size
    assert (oh, ow) == (40, 56)
    h_new = out.homographies[0]
    warped = cv2.warpPerspective(out.frames[0], h_new, (ow, oh), flags=cv2.INTER_LINEAR)
    # Compare where both the new and the original correspondence lie well inside frame 1.
    p_new = grid(oh, ow)
    p_orig = apply_homography(np.linalg.inv(out.affine), p_new)
    valid = inside(apply_homography(np.linalg.inv(h_new), p_new), oh, ow, 3)
    valid &= inside(apply_homography(np.linalg.inv(TEST_H), p_orig), H0, W0, 3)
    assert valid.mean() > 0.4
    diff = np.abs(warped.astype(float) - out.frames[1])[valid]
    # A 0.5 pixel misregistration of this texture gives a mean error above 2.
    assert diff.mean() < 1.0
    assert diff.max() <= 8


def test_flip_and_scale_cases_are_all_covered():
    flips, shrinks, enlarges = set(), set(), set()
    for seed in range(6):
        a = AUGMENT(pair_sample(np.random.default_rng(0)), np.random.default_rng(seed)).affine
        flips.add(a[0, 0] < 0)
        shrinks.add(abs(a[1, 1]) < 1)
        enlarges.add(abs(a[1, 1]) > 1)
    assert flips == {True, False}
    assert shrinks == {True, False}
    assert enlarges == {True, False}


@pytest.mark.parametrize(
    ("scale_range", "atol"),
    [
        ((1.05, 1.4), 1e-3),  # INTER_LINEAR reproduces a smooth field almost exactly
        ((0.5, 0.5), 1e-3),  # an integer ratio of INTER_AREA too
        # At other ratios area averaging of whole pixels deviates from the continuous average
        # by up to ~0.1 source pixel (zero-mean, not a geometric offset).
        ((0.55, 0.95), 0.03),
    ],
)
def test_transformed_flow_is_the_flow_of_the_transformed_homography(scale_range, atol):
    sample = pair_sample(np.random.default_rng(3))
    augment = Compose([RandomHorizontalFlip(0.5), RandomScaleCrop((34, 46), scale_range)])
    for seed in range(6):
        out = augment(sample, np.random.default_rng(seed))
        oh, ow = out.size
        expected = homography_flow(np.linalg.inv(out.homographies[0]), oh, ow)
        assert out.flows[0].dtype == np.float32
        np.testing.assert_allclose(out.flows[0][2:-2, 2:-2], expected[2:-2, 2:-2], atol=atol)


def test_flip_negates_dx():
    flow = np.zeros((4, 5, 2), np.float32)
    flow[1, 0] = (3.0, -2.0)
    sample = VideoSample([np.zeros((4, 5, 3), np.uint8)] * 2, [None, None], [None], [flow])
    out = hflip(sample)
    expected = np.zeros_like(flow)
    expected[1, 4] = (-3.0, -2.0)
    np.testing.assert_array_equal(out.flows[0], expected)
    assert out.homographies == [None]


def test_labels_keep_the_original_id_set():
    sample = pair_sample(np.random.default_rng(5))
    for seed in range(5):
        out = AUGMENT(sample, np.random.default_rng(seed))
        assert out.labels[0] is None
        assert out.labels[1].dtype == np.uint8
        assert set(np.unique(out.labels[1])) <= {0, 1, 2, 255}


def test_same_seed_same_output_other_seed_other_output():
    sample = pair_sample(np.random.default_rng(6))
    augment = Compose([AUGMENT, ColorJitter(0.3, 0.3, 0.3, 0.05, 0.2)])
    a = augment(sample, np.random.default_rng(42))
    b = augment(sample, np.random.default_rng(42))
    c = augment(sample, np.random.default_rng(43))
    for x, y in zip(
        a.frames + a.flows + a.homographies, b.frames + b.flows + b.homographies, strict=True
    ):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.frames[1], c.frames[1])
    # The input sample is never modified in place.
    np.testing.assert_array_equal(sample.homographies[0], TEST_H)


def test_scale_is_raised_so_that_the_crop_fits():
    sample = pair_sample(np.random.default_rng(7))
    out = RandomScaleCrop((70, 120), (0.5, 0.6))(sample, np.random.default_rng(0))
    assert out.size == (70, 120)
    # Width needs 120 / 96 = 1.25; both axes scale by that factor (rounded to whole pixels).
    np.testing.assert_allclose(np.diag(out.affine)[:2], [90 / 72, 120 / 96])


def test_scale_crop_with_p_zero_only_crops():
    sample = pair_sample(np.random.default_rng(8))
    out = RandomScaleCrop((40, 56), (0.5, 2.0), p=0.0)(sample, np.random.default_rng(0))
    top, left = -out.affine[1, 2], -out.affine[0, 2]
    np.testing.assert_array_equal(out.affine[:2, :2], np.eye(2))
    np.testing.assert_array_equal(
        out.frames[0], sample.frames[0][int(top) : int(top) + 40, int(left) : int(left) + 56]
    )


def test_resize_and_center_crop_for_evaluation():
    sample = pair_sample(np.random.default_rng(9))
    out = Compose([Resize((36, 48)), CenterCrop((20, 30))])(sample, np.random.default_rng(0))
    assert out.size == (20, 30)
    expected = crop_matrix(8, 9) @ resize_matrix((72, 96), (36, 48))
    np.testing.assert_allclose(out.affine, expected)
    area = cv2.resize(sample.frames[0], (48, 36), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out.frames[0], area[8:28, 9:39])


def test_invalid_transform_arguments():
    with pytest.raises(ValueError, match=r"CenterCrop\(80, 30\) is larger than the 72x96 frames"):
        CenterCrop((80, 30))(pair_sample(np.random.default_rng(0)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="scale_range must satisfy"):
        RandomScaleCrop((10, 10), (1.2, 1.0))
    with pytest.raises(ValueError, match="p must be in"):
        RandomHorizontalFlip(1.5)
    with pytest.raises(ValueError, match="size must be two positive integers"):
        Resize((0, 10))
    with pytest.raises(ValueError, match="hue must be in"):
        ColorJitter(hue=0.7)


def test_video_sample_checks_lengths():
    frame = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="2 frames need 1 homographies and flows"):
        VideoSample([frame, frame], [None, None], [], [])
    with pytest.raises(ValueError, match=r"frame 1 is \(5, 4\)"):
        VideoSample([frame, np.zeros((5, 4, 3), np.uint8)], [None, None], [None], [None])


# -- photometric -------------------------------------------------------------------------------


def test_color_jitter_known_answers():
    frame = np.arange(0, 256, 4, dtype=np.uint8).reshape(4, 16, 1).repeat(3, axis=2)
    sample = VideoSample([frame], [None], [], [])
    rng = np.random.default_rng(0)
    out = ColorJitter(brightness=(0.5, 0.5))(sample, rng)
    np.testing.assert_array_equal(out.frames[0], np.rint(frame * 0.5).astype(np.uint8))
    out = ColorJitter(gamma=(2.0, 2.0))(sample, rng)
    np.testing.assert_array_equal(out.frames[0], np.rint((frame / 255.0) ** 2 * 255))
    out = ColorJitter(contrast=(0.0, 0.0))(sample, rng)
    # Contrast 0 gives the mean grey level everywhere.
    np.testing.assert_array_equal(out.frames[0], np.full_like(frame, round(frame.mean())))


def test_hue_jitter_keeps_value_and_chroma():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = ColorJitter(hue=0.5)(VideoSample([frame], [None], [], []), rng).frames[0]
    assert not np.array_equal(out, frame)
    # A hue rotation keeps each pixel's max and min channel (HSV value and chroma).
    np.testing.assert_allclose(out.max(axis=2), frame.max(axis=2), atol=1)
    np.testing.assert_allclose(out.min(axis=2), frame.min(axis=2), atol=1)


def test_color_jitter_same_or_independent_per_frame():
    frame = texture(np.random.default_rng(2), 16, 16)
    flow = np.ones((16, 16, 2), np.float32)
    label = np.ones((16, 16), np.uint8)
    sample = VideoSample([frame, frame.copy()], [label, None], [TEST_H], [flow])
    jitter = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, gamma=0.3)
    same = ColorJitter(**jitter)(sample, np.random.default_rng(3))
    np.testing.assert_array_equal(same.frames[0], same.frames[1])
    assert not np.array_equal(same.frames[0], frame)
    assert same.labels[0] is label
    assert same.flows[0] is flow
    assert same.homographies[0] is TEST_H
    independent = ColorJitter(**jitter, same_for_all_frames=False)(sample, np.random.default_rng(3))
    assert not np.array_equal(independent.frames[0], independent.frames[1])
    untouched = ColorJitter(**jitter, p=0.0)(sample, np.random.default_rng(3))
    np.testing.assert_array_equal(untouched.frames[0], frame)
