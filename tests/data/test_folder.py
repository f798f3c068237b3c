import os
import pickle
import re
import shutil

import cv2
import numpy as np
import pytest
from clipfolder_fixture import ClipSpec, make_info, write_clip_folder

from vidseg.data import folder
from vidseg.data.folder import Clip, FolderDataset, list_splits, open_dataset
from vidseg.data.info import write_dataset_info
from vidseg.errors import DataError
from vidseg.utils.io import save_npy, write_png


@pytest.fixture
def gappy(tmp_path):
    """Two clips; clip 'a' has a gap (3, 4 missing), labels, homographies and flows."""
    return write_clip_folder(
        tmp_path / "ds",
        {
            "a": ClipSpec(
                frames=[0, 1, 2, 5, 6],
                labelled=[0, 2, 5, 6],
                homographies=True,
                flows=[1, 2, 5, 6],
            ),
            "b": ClipSpec(frames=[10, 11, 12], labelled=[11], size=(8, 10)),
        },
        splits={"train": ["b", "a"], "val": ["a"]},
    )


def test_open_dataset_reads_back_what_was_written(gappy):
    ds = open_dataset(gappy.root, "train")
    assert isinstance(ds, FolderDataset)
    assert ds.split == "train"
    assert ds.root == gappy.root
    assert ds.info.name == "fixture"
    assert (ds.num_classes, ds.ignore_index) == (3, 255)
    assert ds.clip_ids == ["b", "a"]  # split-file order
    assert len(ds) == 2
    assert [c.id for c in ds] == ["b", "a"]
    a = ds.clip("a")
    assert ds[1] is a
    assert a.dir == gappy.root / "clips" / "a"
    assert a.frames == (0, 1, 2, 5, 6)
    assert a.labelled_frames == (0, 2, 5, 6)
    assert a.size == (12, 16)
    assert ds.clip("b").size == (8, 10)
    for (clip_id, n), image in gappy.images.items():
        got = ds.clip(clip_id).image(n)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, image)
    for (clip_id, n), label in gappy.labels.items():
        np.testing.assert_array_equal(ds.clip(clip_id).label(n), label)
    assert a.label(1) is None
    assert ds.clip("b").label(10) is None


def test_previous_never_skips_a_gap_nor_wraps(gappy):
    a = open_dataset(gappy.root, "val").clip("a")
    assert [a.previous(n) for n in a.frames] == [None, 0, 1, None, 5]
    assert a.has_frame(5)
    assert not a.has_frame(3)


def test_homography_entries_follow_sorted_frames(gappy):
    a = open_dataset(gappy.root, "val").clip("a")
    homs = gappy.homographies["a"]
    # Entry i belongs to frames[i]; frame 5 has no predecessor, so its entry is ignored.
    assert a.homography(0) is None
    np.testing.assert_array_equal(a.homography(1), homs[1])
    np.testing.assert_array_equal(a.homography(2), homs[2])
    assert a.homography(5) is None
    np.testing.assert_array_equal(a.homography(6), homs[4])
    assert a.homography(6).dtype == np.float64
    assert open_dataset(gappy.root, "train").clip("b").homography(11) is None


def test_flow_is_float32_and_only_with_a_predecessor(gappy):
    a = open_dataset(gappy.root, "val").clip("a")
    for n in (1, 2, 6):
        flow = a.flow(n)
        assert flow.dtype == np.float32
        np.testing.assert_array_equal(flow, gappy.flows["a", n].astype(np.float32))
    assert a.flow(5) is None  # file exists, but frame 4 does not
    assert a.flow(0) is None
    assert open_dataset(gappy.root, "train").clip("b").flow(11) is None


def test_unknown_frame_is_an_error(gappy):
    a = open_dataset(gappy.root, "val").clip("a")
    with pytest.raises(DataError, match=r"clip 'a' has no frame 3"):
        a.image(3)
    with pytest.raises(DataError, match=r"no clip 'zzz'"):
        open_dataset(gappy.root, "val").clip("zzz")


def test_frame_names_any_digits_jpeg_and_dotfiles(tmp_path):
    written = write_clip_folder(
        tmp_path, {"c": ClipSpec(frames=[2, 7, 30], digits=1, ext=".jpg", labelled=[7])}
    )
    frames_dir = tmp_path / "clips" / "c" / "frames"
    (frames_dir / ".000031.png.tmp").write_bytes(b"half-written")
    (tmp_path / "clips" / "c" / "labels" / ".x.png.tmp").write_bytes(b"")
    clip = open_dataset(tmp_path, "train").clip("c")
    assert clip.frames == (2, 7, 30)
    assert clip.frame_path(30).name == "30.jpg"
    assert clip.labelled_frames == (7,)
    # JPEG is lossy: compare with an independent decode of the same file (BGR -> RGB).
    decoded = cv2.imread(str(frames_dir / "7.jpg"))[..., ::-1]
    np.testing.assert_array_equal(clip.image(7), decoded)
    assert written.images["c", 7].shape == decoded.shape


def test_split_file_parsing(tmp_path):
    write_clip_folder(tmp_path, {"a": ClipSpec([0]), "b": ClipSpec([0]), "c": ClipSpec([0])})
    (tmp_path / "splits" / "mixed.txt").write_text("# comment\n\n  b  \r\n\t\na\n#c\nc")
    assert open_dataset(tmp_path, "mixed").clip_ids == ["b", "a", "c"]
    assert list_splits(tmp_path) == ["mixed", "train"]


def test_directory_is_scanned_once_per_clip(gappy, monkeypatch):
    calls = []
    real_scandir = os.scandir

    def counting_scandir(path):
        calls.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(folder.os, "scandir", counting_scandir)
    ds = open_dataset(gappy.root, "train")
    after_open = len(calls)
    assert after_open <= 4 * len(ds)  # frames, labels, flow and flow_valid folders
    for clip in ds:
        for n in clip.frames:
            clip.image(n)
            clip.label(n)
            clip.flow(n)
            clip.flow_valid(n)
            clip.homography(n)
            clip.previous(n)
    assert len(calls) == after_open


def test_pickle_round_trip_after_use(gappy):
    ds = open_dataset(gappy.root, "train")
    a = ds.clip("a")
    a.image(1)
    a.homography(2)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.clip_ids == ds.clip_ids
    np.testing.assert_array_equal(copy.clip("a").image(6), gappy.images["a", 6])
    np.testing.assert_array_equal(copy.clip("a").homography(6), gappy.homographies["a"][4])
    clip = pickle.loads(pickle.dumps(Clip("b", gappy.root / "clips" / "b", 3, 255)))
    assert clip.frames == (10, 11, 12)


# -- errors ------------------------------------------------------------------------------------


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"dataset root not found: .*nowhere"):
        open_dataset(tmp_path / "nowhere", "train")


def test_missing_or_invalid_dataset_yaml(gappy):
    (gappy.root / "dataset.yaml").write_text("name: x\n")
    with pytest.raises(DataError, match=r"dataset\.yaml: missing key 'classes'"):
        open_dataset(gappy.root, "train")
    (gappy.root / "dataset.yaml").unlink()
    with pytest.raises(DataError, match=r"dataset\.yaml: file not found"):
        open_dataset(gappy.root, "train")


def test_unknown_split_lists_available_ones(gappy):
    with pytest.raises(DataError, match=r"unknown split 'test'.*available splits.*: train, val$"):
        open_dataset(gappy.root, "test")


def test_split_lists_missing_clip_with_line_number(gappy):
    (gappy.root / "splits" / "train.txt").write_text("a\n\nghost\n")
    with pytest.raises(DataError, match=r"train\.txt:3: clip 'ghost' not found"):
        open_dataset(gappy.root, "train")


def test_duplicate_clip_id_in_split(gappy):
    (gappy.root / "splits" / "train.txt").write_text("a\nb\na\n")
    with pytest.raises(
        DataError, match=r"train\.txt:3: duplicate clip id 'a' \(already on line 1\)"
    ):
        open_dataset(gappy.root, "train")


def test_empty_split(gappy):
    (gappy.root / "splits" / "train.txt").write_text("# nothing yet\n")
    with pytest.raises(DataError, match=r"train\.txt: lists no clips"):
        open_dataset(gappy.root, "train")


def test_clip_without_frames(gappy):
    shutil.rmtree(gappy.root / "clips" / "b" / "frames")
    with pytest.raises(DataError, match=r"clip 'b' has no frames: .*b[/\\]frames"):
        open_dataset(gappy.root, "train")


def test_stray_file_in_frames(gappy):
    (gappy.root / "clips" / "a" / "frames" / "frame_7.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"frame_7\.png: unexpected entry in a frame folder"):
        open_dataset(gappy.root, "val")


def test_two_files_with_the_same_frame_number(gappy):
    frames = gappy.root / "clips" / "a" / "frames"
    shutil.copy(frames / "000002.png", frames / "2.jpg")
    with pytest.raises(DataError, match=r"frame number 2 already used") as info:
        open_dataset(gappy.root, "val")
    assert "2.jpg" in str(info.value)
    assert "000002.png" in str(info.value)


def test_label_without_frame(gappy):
    write_png(gappy.root / "clips" / "a" / "labels" / "000004.png", np.zeros((12, 16), np.uint8))
    with pytest.raises(DataError, match=r"labels[/\\]000004\.png: label file for frame 4"):
        open_dataset(gappy.root, "val")


def test_corrupt_image(gappy):
    (gappy.root / "clips" / "a" / "frames" / "000002.png").write_bytes(b"not a png")
    clip = open_dataset(gappy.root, "val").clip("a")
    with pytest.raises(DataError, match=r"000002\.png: cannot decode image"):
        clip.image(2)


def test_frame_of_another_size(gappy):
    write_png(gappy.root / "clips" / "a" / "frames" / "000005.png", np.zeros((5, 6, 3), np.uint8))
    clip = open_dataset(gappy.root, "val").clip("a")
    with pytest.raises(
        DataError, match=r"000005\.png: frame is 5x6 but the first frame .*is 12x16"
    ):
        clip.image(5)


@pytest.mark.parametrize(("bad", "ok"), [(3, 2), (254, 0), (7, 255)])
def test_label_values_are_validated(tmp_path, bad, ok):
    write_clip_folder(tmp_path, {"a": ClipSpec([0, 1], labelled=[0, 1])})
    label = np.full((12, 16), ok, np.uint8)
    write_png(tmp_path / "clips" / "a" / "labels" / "000000.png", label)
    label[3, 4] = bad
    write_png(tmp_path / "clips" / "a" / "labels" / "000001.png", label)
    clip = open_dataset(tmp_path, "train").clip("a")
    np.testing.assert_array_equal(clip.label(0), np.full((12, 16), ok))
    pattern = (
        rf"000001\.png: invalid class id {bad} \(1 pixels\); valid ids are 0\.\.2 and ignore 255"
    )
    with pytest.raises(DataError, match=pattern):
        clip.label(1)


def test_label_validation_respects_a_custom_ignore_index(tmp_path):
    write_clip_folder(tmp_path, {"a": ClipSpec([0], labelled=[0])})
    write_dataset_info(tmp_path, make_info(num_classes=3, ignore_index=100))
    label = np.array([[0, 1, 2, 100], [0, 0, 0, 0]], np.uint8)
    shutil.rmtree(tmp_path / "clips" / "a")
    write_png(tmp_path / "clips" / "a" / "frames" / "000000.png", np.zeros((2, 4, 3), np.uint8))
    write_png(tmp_path / "clips" / "a" / "labels" / "000000.png", label)
    clip = open_dataset(tmp_path, "train").clip("a")
    np.testing.assert_array_equal(clip.label(0), label)
    label[1, 1] = 255
    write_png(tmp_path / "clips" / "a" / "labels" / "000000.png", label)
    with pytest.raises(DataError, match=r"invalid class id 255 .*ignore 100"):
        clip.label(0)


def test_label_of_another_size(gappy):
    path = gappy.root / "clips" / "a" / "labels" / "000002.png"
    write_png(path, np.zeros((6, 8), np.uint8))
    clip = open_dataset(gappy.root, "val").clip("a")
    with pytest.raises(
        DataError, match=r"000002\.png: label is 6x8 but frame .*000002\.png is 12x16"
    ):
        clip.label(2)


def test_colour_label_is_refused(gappy):
    path = gappy.root / "clips" / "a" / "labels" / "000002.png"
    cv2.imwrite(str(path), np.zeros((12, 16, 3), np.uint8))
    with pytest.raises(DataError, match=r"000002\.png: expected a single-channel label"):
        open_dataset(gappy.root, "val").clip("a").label(2)


def test_homographies_of_the_wrong_shape(gappy):
    path = gappy.root / "clips" / "a" / "homographies.npy"
    save_npy(path, np.tile(np.eye(3), (4, 1, 1)))
    clip = open_dataset(gappy.root, "val").clip("a")
    with pytest.raises(
        DataError, match=r"homographies\.npy: shape \(4, 3, 3\), expected \(5, 3, 3\)"
    ):
        clip.homography(1)


def test_flow_of_the_wrong_shape_or_dtype(gappy):
    flow_dir = gappy.root / "clips" / "a" / "flow"
    save_npy(flow_dir / "000001.npy", np.zeros((12, 15, 2), np.float32))
    save_npy(flow_dir / "000002.npy", np.zeros((12, 16, 2), np.float64))
    clip = open_dataset(gappy.root, "val").clip("a")
    with pytest.raises(DataError, match=re.escape("000001.npy: flow shape (12, 15, 2), expected")):
        clip.flow(1)
    with pytest.raises(DataError, match=r"000002\.npy: flow dtype float64"):
        clip.flow(2)
