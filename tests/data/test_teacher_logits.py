"""Teacher logits on disk: exact roundtrip, geometry, resume, integrity checks, pickling."""

import json
import pickle
import re
import shutil

import numpy as np
import pytest
import torch

from vidseg.data import open_dataset, synthesize
from vidseg.data.teacher_logits import MANIFEST, TeacherLogits, export_logits
from vidseg.errors import ConfigError, DataError
from vidseg.models import ModelConfig, build_segmenter


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher") / "data"
    options = {"val_clips": 0, "test_clips": 0, "show_progress": False}
    synthesize(root, clips=2, frames=4, size=(40, 56), seed=2, **options)
    return open_dataset(root, "train")


@pytest.fixture(scope="module")
def teacher(dataset):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tiny_cnn", head_channels=16, dropout=0.0)
    return build_segmenter(cfg, dataset.num_classes).eval()


@pytest.fixture(scope="module")
def exported(dataset, teacher, tmp_path_factory):
    """A stride-4 export at the native size, one frame per forward pass."""
    out = tmp_path_factory.mktemp("export") / "logits"
    export_logits(teacher, dataset, out, batch_size=1, teacher={"run_dir": "r", "weights": "last"})
    return out


def as_input(image):
    return torch.from_numpy(image).permute(2, 0, 1)[None]


class CountingEncoder:
    """Stands in for ``Segmenter.encode``: counts calls and can fail at a given call."""

    def __init__(self, model, fail_at=None):
        self.encode = model.encode
        self.calls = 0
        self.fail_at = fail_at

    def __call__(self, images):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return self.encode(images)


def flip_a_byte(path, offset=-7):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_read_gives_the_decoders_logits_in_float16(dataset, teacher, exported):
    reader = TeacherLogits(exported)
    assert reader.resolution == "stride4"
    assert reader.num_classes == dataset.num_classes
    assert reader.class_names == dataset.info.class_names
    reader.check(dataset)
    reader.verify()
    with torch.no_grad():
        for clip in dataset:
            assert reader.frames(clip.id) == list(clip.frames)
            for n in clip.frames:
                x = as_input(clip.image(n))
                expected = teacher.decode(teacher.encode(x))[0].half().numpy()
                got = reader.read(clip.id, n)
                assert got.dtype == np.float16
                np.testing.assert_array_equal(got, expected)
                # The stored grid holds everything the full-size logits are made of.
                full = teacher.upsample_logits(torch.from_numpy(got)[None].float(), *clip.size)
                torch.testing.assert_close(full, teacher(x), atol=2e-3, rtol=2e-3)


def test_full_resolution_with_resize_and_batches(dataset, teacher, tmp_path):
    out = tmp_path / "full"
    summary = export_logits(teacher, dataset, out, resolution="full", resize=(20, 28))
    reader = TeacherLogits(out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["resize"] == [20, 28]
    clip = dataset[0]
    assert manifest["clips"][clip.id]["input_size"] == [20, 28]
    assert manifest["clips"][clip.id]["frame_size"] == [40, 56]
    assert reader.read(clip.id, clip.frames[0]).shape == (dataset.num_classes, 20, 28)
    # Native -> input is an exact 2x reduction: centres map as x_native = 2 x + 0.5.
    np.testing.assert_allclose(
        reader.grid_to_frame(clip.id), [[2, 0, 0.5], [0, 2, 0.5], [0, 0, 1]], atol=1e-12
    )
    assert summary.frames == sum(len(c) for c in dataset)
    assert summary.official_bytes == summary.frames * dataset.num_classes * 40 * 56 * 4


def test_stride4_grid_to_frame_with_resize(dataset, teacher, tmp_path):
    export_logits(teacher, dataset, tmp_path, resize=(20, 28))
    reader = TeacherLogits(tmp_path)
    # Logit cell u covers input pixels 4u..4u+3 (centre 4u + 1.5), i.e. native pixels
    # 8u..8u+7 (centre 8u + 3.5).
    expected = [[8, 0, 3.5], [0, 8, 3.5], [0, 0, 1]]
    for clip_id in reader.clip_ids:
        np.testing.assert_allclose(reader.grid_to_frame(clip_id), expected, atol=1e-12)
        assert reader.grid_to_frame(clip_id).dtype == np.float64


def test_resume_skips_finished_clips_and_redoes_a_corrupted_one(dataset, teacher, tmp_path):
    out = tmp_path / "logits"
    export_logits(teacher, dataset, out, batch_size=2)
    first, second = (out / f"{c.id}.npy" for c in dataset)
    mtime = first.stat().st_mtime_ns
    counter = CountingEncoder(teacher)
    teacher.encode = counter
    try:
        summary = export_logits(teacher, dataset, out, batch_size=2)
        assert (counter.calls, summary.skipped_clips, summary.computed_clips) == (0, 2, 0)
        flip_a_byte(second)
        summary = export_logits(teacher, dataset, out, batch_size=2)
        assert (counter.calls, summary.skipped_clips, summary.computed_clips) == (2, 1, 1)
    finally:
        del teacher.encode
    assert first.stat().st_mtime_ns == mtime
    TeacherLogits(out).verify()


def test_an_interrupted_export_leaves_only_complete_clips(dataset, teacher, tmp_path):
    out = tmp_path / "logits"
    # Frames per clip are 4 at batch size 2: the 4th call is the second clip's second batch.
    teacher.encode = CountingEncoder(teacher, fail_at=4)
    try:
        with pytest.raises(KeyboardInterrupt):
            export_logits(teacher, dataset, out, batch_size=2)
    finally:
        del teacher.encode
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{dataset[0].id}.npy", MANIFEST])
    reader = TeacherLogits(out)
    assert reader.clip_ids == [dataset[0].id]
    with pytest.raises(DataError, match=f"no clip '{dataset[1].id}'"):
        reader.check(dataset)
    summary = export_logits(teacher, dataset, out, batch_size=2)
    assert (summary.skipped_clips, summary.computed_clips) == (1, 1)
    TeacherLogits(out).check(dataset)


def test_verify_names_missing_corrupted_and_truncated_files(exported, tmp_path):
    out = shutil.copytree(exported, tmp_path / "copy")
    reader = TeacherLogits(out)
    first, second = (out / f"{c}.npy" for c in reader.clip_ids)
    flip_a_byte(first)
    with pytest.raises(
        DataError, match=rf"{re.escape(first.name)} corrupted \(checksum mismatch\)"
    ):
        reader.verify()
    second.unlink()
    with pytest.raises(DataError, match=rf"{re.escape(second.name)} missing") as error:
        reader.verify()
    assert first.name in str(error.value)
    second.write_bytes((exported / second.name).read_bytes()[:-10])
    with pytest.raises(DataError, match=rf"{re.escape(second.name)} truncated"):
        reader.verify()
    with pytest.raises(DataError, match=rf"{re.escape(second.name)} truncated"):
        reader.read(reader.clip_ids[1], 0)


def test_check_names_a_clip_or_frame_absent_from_the_export(dataset, exported, tmp_path):
    root = shutil.copytree(dataset.root, tmp_path / "data")
    clip = dataset[1]
    frames = root / "clips" / clip.id / "frames"
    shutil.copy(frames / f"{clip.frames[-1]:06d}.png", frames / "000099.png")
    with pytest.raises(DataError, match=f"no frame 99 of clip '{clip.id}'"):
        TeacherLogits(exported).check(open_dataset(root, "train"))

    out = shutil.copytree(exported, tmp_path / "copy")
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["clips"][clip.id]
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=f"no clip '{clip.id}'") as error:
        TeacherLogits(out).check(dataset)
    assert str(out) in str(error.value)
    with pytest.raises(DataError, match="no frame 99"):
        TeacherLogits(exported).read(dataset[0].id, 99)


def test_a_missing_or_invalid_manifest_is_named(tmp_path):
    with pytest.raises(DataError, match=r"manifest\.json not found"):
        TeacherLogits(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match=r"manifest\.json: not valid JSON"):
        TeacherLogits(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match=r"manifest\.json: not a teacher-logits manifest"):
        TeacherLogits(tmp_path)


def test_an_export_with_other_settings_is_not_mixed_in(dataset, teacher, exported):
    with pytest.raises(ConfigError, match="resolution: 'stride4' there, 'full' now"):
        export_logits(teacher, dataset, exported, resolution="full")
    other = build_segmenter(ModelConfig(backbone="tiny_cnn", head_channels=16), teacher.num_classes)
    with pytest.raises(ConfigError, match="other teacher weights"):
        export_logits(other, dataset, exported)


def test_the_reader_pickles_without_its_open_files(dataset, exported):
    reader = TeacherLogits(exported)
    clip = dataset[0]
    before = reader.read(clip.id, clip.frames[1])
    copy = pickle.loads(pickle.dumps(reader))
    assert copy._arrays == {}
    np.testing.assert_array_equal(copy.read(clip.id, clip.frames[1]), before)
