"""The data pipeline end to end on synthetic clips: augmented samples keep exact geometry."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vidseg.data import (
    ClipSampleDataset,
    Compose,
    RandomHorizontalFlip,
    RandomScaleCrop,
    labelled_samples,
    open_dataset,
    synthesize,
)
from vidseg.data.synth.world import HUMAN, VEHICLE
from vidseg.geometry import homography_flow


@pytest.fixture(scope="module")
def val_split(tmp_path_factory):
    root = synthesize(
        tmp_path_factory.mktemp("pipe") / "ds", clips=3, frames=8, size=256, show_progress=False
    )
    return open_dataset(root, "val")


def test_augmented_homographies_and_flows_stay_exact(val_split):
    transform = Compose([RandomHorizontalFlip(0.5), RandomScaleCrop((192, 160), (0.8, 1.5))])
    samples = labelled_samples(val_split, num_prev=2)
    assert len(samples) == 6
    assert samples.skipped == 2  # frames 0 and 1 lack two predecessors
    data = ClipSampleDataset(
        val_split, samples, transform, seed=1, load_homographies=True, load_flows=True
    )
    flipped = 0
    for index in range(len(data)):
        item = data[index]
        labels = item["labels"].numpy().astype(np.uint8)
        assert labels.shape == (3, 192, 160)
        assert item["homography_mask"].all()
        assert item["flow_mask"].all()
        for i in range(2):
            hom = item["homographies"][i].numpy()
            warped = cv2.warpPerspective(labels[i], hom, (160, 192), flags=cv2.INTER_NEAREST)
            covered = cv2.warpPerspective(
                np.ones((192, 160), np.uint8), hom, (160, 192), flags=cv2.INTER_NEAREST
            ).astype(bool)
            assert (warped[covered] == labels[i + 1][covered]).mean() >= 0.95
            flow = item["flows"][i].numpy().transpose(1, 2, 0)
            expected = homography_flow(np.linalg.inv(hom), 192, 160)
            moving = np.isin(labels[i + 1], (HUMAN, VEHICLE)).astype(np.uint8)
            static = ~cv2.dilate(moving, np.ones((7, 7))).astype(bool)
            # Resampling the flow field (bilinear/area) is the only error left.
            assert np.median(np.abs(flow - expected)[static]) < 0.02
        # The same draw as the dataset's, to learn whether this sample was mirrored.
        sample = transform(data.load(index), np.random.default_rng([1, 0, index]))
        np.testing.assert_array_equal(sample.labels[-1], labels[-1])
        flipped += int(sample.affine[0, 0] < 0)
    assert 0 < flipped < len(data)  # both mirrored and unmirrored samples were checked
