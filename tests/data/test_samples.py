import logging

import pytest
from clipfolder_fixture import ClipSpec, write_clip_folder

from vidseg.data import folder
from vidseg.data.folder import open_dataset
from vidseg.data.samples import (
    SampleIndex,
    SampleRef,
    labelled_samples,
    pair_samples,
    window_samples,
)


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    write_clip_folder(
        tmp_path,
        {
            # Labelled frame 0 has no predecessor: SSP's list indexing would wrap to frame 9.
            "a": ClipSpec(frames=[0, 1, 2, 5, 6, 7, 9], labelled=[0, 2, 5, 7, 9], size=(4, 4)),
            "b": ClipSpec(frames=[3, 4, 5, 6], labelled=[4, 6], size=(4, 4)),
        },
    )
    ds = open_dataset(tmp_path, "train")

    def no_io(*args, **kwargs):
        raise AssertionError("sample builders must not read images")

    monkeypatch.setattr(folder, "read_rgb", no_io)
    monkeypatch.setattr(folder, "read_gray", no_io)
    return ds


def test_labelled_samples_with_one_previous_frame(dataset):
    index = labelled_samples(dataset, num_prev=1)
    assert isinstance(index, SampleIndex)
    assert index.samples == [
        SampleRef(0, (1, 2)),
        SampleRef(0, (6, 7)),
        SampleRef(1, (3, 4)),
        SampleRef(1, (5, 6)),
    ]
    assert index.skipped == 3
    assert index.skipped_refs == [("a", 0), ("a", 5), ("a", 9)]
    assert len(index) == 4
    assert index[1].target == 7
    assert list(index) == index.samples


def test_labelled_samples_with_two_previous_frames(dataset):
    index = labelled_samples(dataset, num_prev=2)
    assert index.samples == [
        SampleRef(0, (0, 1, 2)),
        SampleRef(0, (5, 6, 7)),
        SampleRef(1, (4, 5, 6)),
    ]
    assert index.skipped_refs == [("a", 0), ("a", 5), ("a", 9), ("b", 4)]


def test_labelled_samples_single_frames(dataset):
    index = labelled_samples(dataset, num_prev=0)
    expected = [(0, n) for n in (0, 2, 5, 7, 9)] + [(1, n) for n in (4, 6)]
    assert [(s.clip, s.target) for s in index] == expected
    assert all(len(s.frames) == 1 for s in index)
    assert index.skipped == 0


@pytest.mark.parametrize("num_prev", [1, 2, 3])
def test_labelled_samples_match_a_naive_enumeration(dataset, num_prev):
    kept, skipped = [], []
    for ci, clip in enumerate(dataset):
        frames = set(clip.frames)
        for n in clip.labelled_frames:
            window = list(range(n - num_prev, n + 1))
            if set(window) <= frames:
                kept.append(SampleRef(ci, tuple(window)))
            else:
                skipped.append((clip.id, n))
    index = labelled_samples(dataset, num_prev=num_prev)
    assert index.samples == kept
    assert index.skipped_refs == skipped
    assert len(index) + index.skipped == sum(len(c.labelled_frames) for c in dataset)


def test_pair_samples(dataset):
    index = pair_samples(dataset)
    pairs = [(s.clip, s.frames) for s in index]
    assert pairs == [
        (0, (0, 1)),
        (0, (1, 2)),
        (0, (5, 6)),
        (0, (6, 7)),
        (1, (3, 4)),
        (1, (4, 5)),
        (1, (5, 6)),
    ]
    assert index.skipped_refs == [("a", 0), ("a", 5), ("a", 9), ("b", 3)]


def test_pair_samples_every_k_per_clip(dataset):
    index = pair_samples(dataset, every=2)
    assert [(s.clip, s.frames) for s in index] == [
        (0, (0, 1)),
        (0, (5, 6)),
        (1, (3, 4)),
        (1, (5, 6)),
    ]
    assert index.skipped == 4  # subsampling by `every` is not skipping


def test_pair_samples_labelled_only(dataset):
    index = pair_samples(dataset, labelled_only=True)
    assert [(s.clip, s.frames) for s in index] == [
        (0, (1, 2)),
        (0, (6, 7)),
        (1, (3, 4)),
        (1, (5, 6)),
    ]
    assert index.skipped_refs == [("a", 0), ("a", 5), ("a", 9)]


def test_window_samples_need_every_frame_of_the_window(dataset):
    pairs = pair_samples(dataset, every=2)
    same = window_samples(dataset, 1, every=2)
    assert [(s.clip, s.frames) for s in pairs] == [(s.clip, s.frames) for s in same]
    triples = window_samples(dataset, 2)
    for ref in triples:
        clip = dataset[ref.clip]
        assert ref.frames == (ref.target - 2, ref.target - 1, ref.target)
        assert all(clip.has_frame(n) for n in ref.frames)
    # Every frame n with n-1 and n-2 present is a target, and only those.
    expected = [
        (ci, n)
        for ci, clip in enumerate(dataset)
        for n in clip.frames
        if clip.has_frame(n - 1) and clip.has_frame(n - 2)
    ]
    assert [(s.clip, s.target) for s in triples] == expected
    assert triples.skipped == sum(len(clip.frames) for clip in dataset) - len(expected)


def test_builders_log_one_info_line(dataset, caplog):
    with caplog.at_level(logging.INFO, logger="vidseg.data.samples"):
        labelled_samples(dataset)
        pair_samples(dataset, every=3)
    messages = [r.getMessage() for r in caplog.records if r.name == "vidseg.data.samples"]
    assert messages == [
        "labelled samples (num_prev=1): 4 from 2 clips, 3 skipped (previous frames missing)",
        "frame windows (num_prev=1, every=3): 3 from 2 clips, 4 skipped (previous frames missing)",
    ]


def test_invalid_arguments(dataset):
    with pytest.raises(ValueError, match="num_prev must be >= 0, got -1"):
        labelled_samples(dataset, num_prev=-1)
    with pytest.raises(ValueError, match="every must be >= 1, got 0"):
        pair_samples(dataset, every=0)
