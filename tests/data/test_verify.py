import numpy as np

from vidseg.data.verify import label_agreement


def test_identity_agrees_everywhere():
    labels = np.random.default_rng(0).integers(0, 4, (20, 30)).astype(np.uint8)
    assert label_agreement(labels, labels, np.eye(3)) == 1.0


def test_known_answer_for_a_one_pixel_shift():
    # A vertical boundary at x = 10; the true motion is +1 px but H claims none.
    prev = np.zeros((8, 20), np.uint8)
    prev[:, 10:] = 1
    cur = np.zeros((8, 20), np.uint8)
    cur[:, 11:] = 1
    assert label_agreement(prev, cur, np.eye(3)) == 19 / 20
    shift = np.array([[1, 0, 1.0], [0, 1, 0], [0, 0, 1]])
    # With the right H, the first column (x = 0) is not covered; the rest agree.
    assert label_agreement(prev, cur, shift) == 1.0
