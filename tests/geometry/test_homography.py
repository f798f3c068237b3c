import cv2
import numpy as np
import pytest

from vidseg.geometry import (
    apply_homography,
    conjugate_homography,
    homography_flow,
    normalize_homography,
)


def random_homography(rng):
    h = np.eye(3) + rng.normal(0, [[0.05, 0.05, 3], [0.05, 0.05, 3], [1e-4, 1e-4, 0]])
    return normalize_homography(h)


def test_apply_matches_opencv():
    rng = np.random.default_rng(0)
    h = random_homography(rng)
    pts = rng.uniform(0, 100, (50, 2))
    expected = cv2.perspectiveTransform(pts[:, None, :], h)[:, 0]
    np.testing.assert_allclose(apply_homography(h, pts), expected, atol=1e-9)


def test_flow_of_a_translation_is_constant_and_follows_the_contract():
    h = np.array([[1, 0, 2.5], [0, 1, -1.0], [0, 0, 1]])
    flow = homography_flow(h, 4, 5)
    assert flow.shape == (4, 5, 2)
    assert flow.dtype == np.float32
    np.testing.assert_array_equal(flow[..., 0], 2.5)
    np.testing.assert_array_equal(flow[..., 1], -1.0)


def test_flow_matches_pointwise_mapping():
    rng = np.random.default_rng(1)
    h = random_homography(rng)
    flow = homography_flow(h, 6, 7)
    y, x = 4, 3
    np.testing.assert_allclose(
        flow[y, x], apply_homography(h, np.array([x, y])) - [x, y], atol=1e-4
    )


def test_conjugate_under_a_shared_flip_maps_flipped_points():
    rng = np.random.default_rng(2)
    h = random_homography(rng)
    width = 64
    flip = np.array([[-1, 0, width - 1.0], [0, 1, 0], [0, 0, 1]])
    h_flipped = conjugate_homography(h, flip)
    pts = rng.uniform(0, 63, (20, 2))
    # Map a flipped point with the conjugated H == flip the image of the original point.
    lhs = apply_homography(h_flipped, apply_homography(flip, pts))
    rhs = apply_homography(flip, apply_homography(h, pts))
    np.testing.assert_allclose(lhs, rhs, atol=1e-9)


def test_normalize_rejects_bad_input():
    with pytest.raises(ValueError, match="3x3"):
        normalize_homography(np.eye(2))
    with pytest.raises(ValueError, match="is 0"):
        normalize_homography(np.zeros((3, 3)))
