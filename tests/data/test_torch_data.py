import pickle

import cv2
import numpy as np
import pytest
import torch
from clipfolder_fixture import ClipSpec, write_clip_folder
from torch.utils.data import DataLoader

from vidseg.data.folder import open_dataset
from vidseg.data.samples import SampleRef, labelled_samples
from vidseg.data.torch_data import ClipSampleDataset, collate_samples, worker_init_fn
from vidseg.data.transforms import ColorJitter, Compose, RandomHorizontalFlip, RandomScaleCrop


@pytest.fixture
def written(tmp_path):
    return write_clip_folder(
        tmp_path,
        {
            "a": ClipSpec(
                frames=range(8), labelled=[1, 2, 4, 6, 7], homographies=True, flows=[2, 4, 5, 7]
            ),
            "b": ClipSpec(frames=range(20, 26), labelled=[21, 23, 25], size=(12, 16)),
        },
    )


@pytest.fixture
def dataset(written):
    return open_dataset(written.root, "train")


AUGMENT = Compose(
    [
        RandomHorizontalFlip(0.5),
        RandomScaleCrop((8, 12), (0.7, 1.3)),
        ColorJitter(0.3, 0.3, 0.3, 0.05, 0.2, p=0.8),
    ]
)


def test_item_layout_and_values_without_transform(dataset, written):
    samples = [SampleRef(0, (3, 4)), SampleRef(0, (0, 1, 2))]
    ds = ClipSampleDataset(dataset, samples, load_homographies=True, load_flows=True)
    item = ds[0]
    assert item["frames"].dtype == torch.uint8
    assert item["frames"].shape == (2, 3, 12, 16)
    expected = np.stack([written.images["a", 3], written.images["a", 4]]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(item["frames"].numpy(), expected)
    # Frame 3 is unlabelled: filled with ignore_index and masked out.
    assert item["labels"].dtype == torch.int64
    assert (item["labels"][0] == 255).all()
    np.testing.assert_array_equal(item["labels"][1].numpy(), written.labels["a", 4])
    assert item["label_mask"].tolist() == [False, True]
    assert item["homographies"].dtype == torch.float64
    np.testing.assert_array_equal(item["homographies"][0].numpy(), written.homographies["a"][4])
    assert item["homography_mask"].tolist() == [True]
    assert item["flows"].dtype == torch.float32
    np.testing.assert_array_equal(
        item["flows"][0].numpy(), written.flows["a", 4].astype(np.float32).transpose(2, 0, 1)
    )
    assert item["flow_mask"].tolist() == [True]
    assert item["clip_id"] == "a"
    assert item["frame_numbers"].tolist() == [3, 4]
    assert item["index"] == 0
    # Missing flows (frame 1 has none) are zeros with a False mask; H entries are present.
    item = ds[1]
    assert item["flow_mask"].tolist() == [False, True]
    assert not item["flows"][0].any()
    np.testing.assert_array_equal(item["homographies"][1].numpy(), written.homographies["a"][2])


def test_optional_keys_and_missing_homographies(dataset):
    ds = ClipSampleDataset(dataset, [SampleRef(1, (20, 21))], load_labels=False)
    assert set(ds[0]) == {"frames", "affine", "clip_id", "frame_numbers", "index"}
    # Untransformed: the item's pixel coordinates are the clip's.
    np.testing.assert_array_equal(ds[0]["affine"].numpy(), np.eye(3))
    ds = ClipSampleDataset(dataset, [SampleRef(1, (20, 21))], load_homographies=True)
    item = ds[0]
    np.testing.assert_array_equal(item["homographies"][0].numpy(), np.eye(3))
    assert item["homography_mask"].tolist() == [False]


def test_non_adjacent_frames_get_no_pair_data(dataset):
    ds = ClipSampleDataset(dataset, [SampleRef(0, (2, 4))], load_homographies=True, load_flows=True)
    item = ds[0]
    # The clip's entry for frame 4 maps 3 -> 4, not 2 -> 4.
    assert item["homography_mask"].tolist() == [False]
    assert item["flow_mask"].tolist() == [False]


def test_randomness_is_a_function_of_seed_epoch_index(dataset):
    samples = labelled_samples(dataset, num_prev=1)
    ds = ClipSampleDataset(dataset, samples, AUGMENT, seed=7, load_flows=True)
    first = ds[2]
    again = ClipSampleDataset(dataset, samples, AUGMENT, seed=7, load_flows=True)[2]
    for key in ("frames", "labels", "flows"):
        assert torch.equal(first[key], again[key])
    ds.set_epoch(1)
    assert ds.epoch == 1
    assert not torch.equal(ds[2]["frames"], first["frames"])
    other_seed = ClipSampleDataset(dataset, samples, AUGMENT, seed=8, load_flows=True)[2]
    assert not torch.equal(other_seed["frames"], first["frames"])
    # Equal to applying the transform by hand with the documented generator.
    by_hand = AUGMENT(ds.load(2), np.random.default_rng([7, 0, 2]))
    np.testing.assert_array_equal(
        first["frames"].numpy(), np.stack(by_hand.frames).transpose(0, 3, 1, 2)
    )


def batches(loader):
    return [{k: v for k, v in b.items() if k != "clip_id"} | {"ids": b["clip_id"]} for b in loader]


def assert_same_batches(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], torch.Tensor):
                assert torch.equal(x[key], y[key]), key
            else:
                assert x[key] == y[key]


def make_loader(ds, workers, **kw):
    return DataLoader(
        ds,
        batch_size=3,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_samples,
        worker_init_fn=worker_init_fn if workers else None,
        **kw,
    )


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_batches_do_not_depend_on_workers_or_start_method(dataset, start_method):
    samples = labelled_samples(dataset, num_prev=1)
    ds = ClipSampleDataset(dataset, samples, AUGMENT, seed=3, load_homographies=True)
    reference = {}
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        reference[epoch] = batches(make_loader(ds, 0))
    assert not torch.equal(reference[0][0]["frames"], reference[1][0]["frames"])
    assert sum(len(b["ids"]) for b in reference[0]) == len(samples)

    ds.set_epoch(0)
    assert_same_batches(
        batches(make_loader(ds, 2, multiprocessing_context=start_method)), reference[0]
    )
    # Persistent workers hold their own copy of the dataset: the epoch must still reach them.
    loader = make_loader(ds, 2, persistent_workers=True, multiprocessing_context=start_method)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        assert_same_batches(batches(loader), reference[epoch])


def test_dataset_pickles(dataset):
    ds = ClipSampleDataset(dataset, labelled_samples(dataset), AUGMENT, seed=1)
    ds.set_epoch(4)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.epoch == 4
    assert torch.equal(copy[0]["frames"], ds[0]["frames"])


def test_collate_stacks_tensors_and_lists_strings(dataset):
    ds = ClipSampleDataset(dataset, [SampleRef(0, (0, 1)), SampleRef(0, (6, 7))], load_flows=True)
    batch = collate_samples([ds[0], ds[1]])
    assert batch["frames"].shape == (2, 2, 3, 12, 16)
    assert torch.equal(batch["frames"][1], ds[1]["frames"])
    assert batch["clip_id"] == ["a", "a"]
    assert batch["index"].tolist() == [0, 1]
    assert batch["frame_numbers"].tolist() == [[0, 1], [6, 7]]
    assert batch["flow_mask"].tolist() == [[False], [True]]


def test_collate_names_clips_of_different_sizes(tmp_path):
    write_clip_folder(tmp_path, {"x": ClipSpec([0], size=(4, 4)), "y": ClipSpec([0], size=(4, 6))})
    ds = open_dataset(tmp_path, "train")
    items = ClipSampleDataset(ds, [SampleRef(0, (0,)), SampleRef(1, (0,))], load_labels=False)
    with pytest.raises(ValueError, match=r"'frames' of different shapes \(x: .*, y: .*\)"):
        collate_samples([items[0], items[1]])


def test_worker_init_fn_limits_threads():
    cv_threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads()
    try:
        worker_init_fn(0)
        assert cv2.getNumThreads() == 1
        assert torch.get_num_threads() == 1
    finally:
        cv2.setNumThreads(cv_threads)
        torch.set_num_threads(torch_threads)


def test_index_out_of_range(dataset):
    ds = ClipSampleDataset(dataset, [SampleRef(0, (0, 1))])
    with pytest.raises(IndexError, match=r"sample index 1 out of range 0\.\.0"):
        ds[1]


def test_forked_workers_start_after_the_parent_used_opencv_threads(tmp_path):
    """worker_init_fn must not hang in a fork of a process whose OpenCV thread pool ran."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import cv2, numpy as np, torch
        from vidseg.data.torch_data import worker_init_fn
        image = np.random.rand(512, 512, 3).astype(np.float32)
        for _ in range(3):
            cv2.warpPerspective(image, np.eye(3), (512, 512))  # starts OpenCV's pool
        data = torch.utils.data.TensorDataset(torch.arange(8))
        for _ in range(3):
            loader = torch.utils.data.DataLoader(
                data, batch_size=2, num_workers=2, worker_init_fn=worker_init_fn,
                multiprocessing_context="fork",
            )
            assert sum(int(b[0].sum()) for b in loader) == 28
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], timeout=60, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
