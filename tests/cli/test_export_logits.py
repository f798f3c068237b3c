"""``vidseg export-logits`` on a tiny run: files, manifest, summary, rerun, errors."""

import json

import numpy as np
import pytest
import torch

from vidseg.cli.main import main
from vidseg.config import load_config, save_config
from vidseg.data import synthesize
from vidseg.data.teacher_logits import MANIFEST, TeacherLogits
from vidseg.models import SSP, build_segmenter
from vidseg.training import checkpoint
from vidseg.training.checkpoint import CONFIG_FILE, MODEL_FILE, save_weights
from vidseg.training.config import TrainConfig


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A teacher run (random tiny model) whose frames are resized from 40x56 to 32x48."""
    base = tmp_path_factory.mktemp("export_cli")
    options = {"val_clips": 0, "test_clips": 0, "show_progress": False}
    root = synthesize(base / "data", clips=2, frames=3, size=(40, 56), seed=4, **options)
    overrides = ["model.backbone=tiny_cnn", "model.head_channels=16", f"data.root={root}"]
    cfg = load_config(TrainConfig, None, [*overrides, "data.resize=[32,48]"])
    torch.manual_seed(0)
    model = build_segmenter(cfg.model, 8)
    path = base / "run"
    path.mkdir()
    save_config(path / CONFIG_FILE, cfg)
    save_weights(path / MODEL_FILE, model.state_dict(), {"num_classes": 8, "step": 0})
    return path


def run(capsys, *argv):
    code = main(["-q", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), " ".join(err.split())


def test_export_writes_clips_manifest_and_summary_and_reruns_as_a_no_op(run_dir, capsys, tmp_path):
    code, out, err = run(capsys, "export-logits", run_dir, "--json", tmp_path / "s.json")
    assert code == 0, err
    folder = run_dir / "logits" / "train-last"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["resize"] == [32, 48]
    assert manifest["resolution"] == "stride4"
    assert manifest["teacher"]["run_dir"] == str(run_dir.resolve())
    assert manifest["teacher"]["weights"] == "last"
    assert sorted(p.name for p in folder.glob("*.npy")) == ["train-000.npy", "train-001.npy"]
    reader = TeacherLogits(folder)
    reader.verify()
    # tiny_cnn pads 32x48 to 32x64; the stride-4 grid is 8x16.
    assert reader.read("train-000", 0).shape == (8, 8, 16)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 6
    assert summary["clips"] == 2
    assert summary["bytes"] == sum(p.stat().st_size for p in folder.glob("*.npy"))
    assert summary["official_bytes"] == 6 * 8 * 40 * 56 * 4
    assert f"{summary['ratio']:.1f}x smaller than the official" in out
    assert out.startswith(f"6 frames of 2 clips in {folder}")
    assert "2 clips computed, 0 already done" in out

    mtimes = {p: p.stat().st_mtime_ns for p in folder.glob("*.npy")}
    code, out, _ = run(capsys, "export-logits", run_dir)
    assert code == 0
    assert "0 clips computed, 2 already done" in out
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*.npy")} == mtimes


def test_full_resolution_to_another_folder(run_dir, capsys, tmp_path):
    code, _, err = run(capsys, "export-logits", run_dir, "--resolution", "full", "--out", tmp_path)
    assert code == 0, err
    reader = TeacherLogits(tmp_path)
    assert reader.read("train-001", 2).shape == (8, 32, 48)
    np.testing.assert_allclose(
        reader.grid_to_frame("train-001"), [[7 / 6, 0, 1 / 12], [0, 1.25, 0.125], [0, 0, 1]]
    )


def test_a_video_model_or_a_missing_run_is_a_one_line_error(run_dir, capsys, tmp_path, monkeypatch):
    code, _, err = run(capsys, "export-logits", tmp_path / "nope")
    assert code == 2
    assert err.startswith("error:")
    assert "does not exist" in err

    load = checkpoint.load_run_model

    def load_video(path, weights="last"):
        model, cfg = load(path, weights)
        return SSP(model), cfg

    monkeypatch.setattr(checkpoint, "load_run_model", load_video)
    code, _, err = run(capsys, "export-logits", run_dir, "--out", tmp_path / "v")
    assert code == 2
    assert err.startswith("error:")
    assert "holds a video model (SSP)" in err
    assert "Traceback" not in err
    assert not (tmp_path / "v").exists()
