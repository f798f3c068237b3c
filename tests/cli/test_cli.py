"""The command line: help, outputs, exit codes and one-line errors."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from vidseg.cli.main import main
from vidseg.data.synth import SynthConfig, synthesize


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return synthesize(
        tmp_path_factory.mktemp("cli") / "ds",
        clips=3,
        frames=6,
        size=(256, 224),
        show_progress=False,
    )


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_synth_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "synth", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(SynthConfig):
        flag = "--" + field.name.replace("_", "-")
        assert flag in text, flag
        assert " ".join(field.metadata["help"].split())[:40] in text, flag
    for flag in ("--out", "--overwrite", "--json"):
        assert flag in text


def test_synth_writes_dataset_and_json(tmp_path, capsys):
    code, out, _ = run(
        capsys,
        "-q",
        "data",
        "synth",
        "--out",
        str(tmp_path / "ds"),
        "--clips",
        "3",
        "--frames",
        "4",
        "--size",
        "32,48",
        "--json",
        str(tmp_path / "s.json"),
    )
    assert code == 0
    assert "class frequency" in out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 12
    assert summary["config"]["size"] == [32, 48]
    image = cv2.imread(str(tmp_path / "ds/clips/train-000/frames/000003.png"))
    assert image.shape == (32, 48, 3)


def test_unknown_option_suggests_the_closest(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "synth", "--out", str(tmp_path), "--clip", "3"])
    assert exc.value.code == 2
    assert "--clip (did you mean --clips?)" in capsys.readouterr().err


def test_stats_counts_frames_labels_and_classes(dataset, capsys, tmp_path):
    code, _, _ = run(
        capsys, "-q", "data", "stats", str(dataset), "--json", str(tmp_path / "s.json")
    )
    assert code == 0
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["train"]["frames"] == 6
    assert stats["train"]["labelled_frames"] == 0  # label_every=10 > 6 frames
    assert stats["val"]["labelled_frames"] == 6
    assert stats["val"]["samples_with_previous_frame"] == 5
    assert stats["val"]["samples_skipped"] == 1  # frame 0 has no previous frame
    assert abs(sum(stats["val"]["class_frequency"].values()) - 1) < 1e-9


def test_verify_passes_on_synthetic_and_fails_on_a_broken_homography(dataset, capsys, tmp_path):
    code, out, _ = run(capsys, "-q", "data", "verify", str(dataset), "--split", "val")
    assert code == 0
    assert "val-000" in out
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(dataset, broken)
    path = broken / "clips/val-000/homographies.npy"
    homs = np.load(path)
    homs[1:, 0, 2] += 4.0  # every H off by 4 px
    np.save(path, homs)
    code, out, _ = run(capsys, "-q", "data", "verify", str(broken), "--split", "val")
    assert code == 1
    assert "FAIL" in out


def test_preview_writes_a_grid(dataset, capsys, tmp_path):
    out_png = tmp_path / "p.png"
    code, _, _ = run(
        capsys,
        "-q",
        "data",
        "preview",
        str(dataset),
        "--split",
        "val",
        "--frames",
        "1:6:2",
        "--out",
        str(out_png),
    )
    assert code == 0
    image = cv2.imread(str(out_png))
    # 3 columns (frames 1, 3, 5) and 4 rows (frames, labels, flow, validity), 4 px gaps.
    assert image.shape == (4 * 256 + 3 * 4, 3 * 224 + 2 * 4, 3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "stats", "{missing}"], "dataset root not found"),
        (["data", "stats", "{root}", "--split", "nope"], "unknown split 'nope'"),
        (
            [
                "data",
                "preview",
                "{root}",
                "--split",
                "val",
                "--clip",
                "zzz",
                "--out",
                "{tmp}/p.png",
            ],
            "has no clip 'zzz'",
        ),
        (["data", "verify", "{root}", "--moving-classes", "cars"], "unknown class 'cars'"),
        (["data", "synth", "--out", "{root}"], "is not empty; pass --overwrite"),
    ],
)
def test_errors_are_one_line_without_traceback(dataset, capsys, tmp_path, argv, message):
    argv = [a.format(root=dataset, missing=tmp_path / "missing", tmp=tmp_path) for a in argv]
    code, _, err = run(capsys, "-q", *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert "Traceback" not in err


def test_synth_config_file_and_overrides(tmp_path, capsys):
    config = tmp_path / "synth.yaml"
    config.write_text("clips: 3\nframes: 3\nsize: [32, 40]\nlabel-every: 2\nseed: 4\n")
    code, _, _ = run(
        capsys,
        "-q",
        "data",
        "synth",
        "--config",
        str(config),
        "--frames",
        "5",
        "--out",
        str(tmp_path / "ds"),
        "--json",
        str(tmp_path / "s.json"),
    )
    assert code == 0
    settings = json.loads((tmp_path / "s.json").read_text())["config"]
    assert settings["frames"] == 5  # the command line wins
    assert settings["size"] == [32, 40]
    assert settings["label_every"] == 2
    assert settings["seed"] == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("frame: 3\n", "unknown synthesis option 'frame' (did you mean 'frames'?)"),
        ("frames: '60'\n", "frames must be an integer, got '60'"),
        ("flow: 1\n", "flow must be true or false"),
        ("- 3\n", "expected a mapping"),
    ],
)
def test_bad_config_file_is_named(tmp_path, capsys, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    code, _, err = run(
        capsys, "-q", "data", "synth", "--config", str(config), "--out", str(tmp_path / "ds")
    )
    assert code == 2
    assert str(config) in err
    assert message in " ".join(err.split())
    assert not (tmp_path / "ds").exists()


def test_shipped_config_files_are_valid():
    from pathlib import Path

    from vidseg.data.synth import make_config
    from vidseg.utils.io import read_yaml

    files = sorted((Path(__file__).parents[2] / "configs" / "data").glob("synth-*.yaml"))
    assert files
    for path in files:
        make_config(**{k.replace("-", "_"): v for k, v in read_yaml(path).items()})


def test_bad_dataset_files_are_named_in_one_line(tmp_path, capsys):
    import shutil

    root = synthesize(
        tmp_path / "ds",
        clips=2,
        frames=4,
        size=32,
        test_clips=0,
        label_every=2,
        show_progress=False,
    )
    label = root / "clips/train-000/labels/000001.png"
    cv2.imwrite(str(label), np.full((32, 32), 99, np.uint8))
    code, _, err = run(capsys, "-q", "data", "stats", str(root))
    assert code == 2
    assert f"{label}: invalid class id 99" in " ".join(err.split())

    other = tmp_path / "other"
    shutil.copytree(root, other)
    (other / "clips/train-000/labels/000001.png").unlink()
    (other / "clips/val-000/frames/000002.png").write_bytes(b"not an image")
    code, _, err = run(
        capsys,
        "-q",
        "data",
        "preview",
        str(other),
        "--split",
        "val",
        "--out",
        str(tmp_path / "p.png"),
    )
    assert code == 2
    assert "000002.png: cannot decode image" in " ".join(err.split())

    (other / "clips/val-000/frames/000003.png").unlink()
    code, _, err = run(capsys, "-q", "data", "stats", str(other))
    assert code == 2
    assert "000003.png: label file for frame 3" in " ".join(err.split())


def test_demo_settings_match_the_shipped_config():
    from pathlib import Path

    from vidseg.cli.demo import DEMO_DATA
    from vidseg.data.synth import make_config
    from vidseg.utils.io import read_yaml

    shipped = read_yaml(Path(__file__).parents[2] / "configs/data/synth-demo.yaml")
    assert make_config(**shipped) == make_config(**DEMO_DATA)


@pytest.mark.parametrize(
    ("stage", "path"),
    [
        ("image", "configs/image/synth_demo.yaml"),
        ("ssp", "configs/video/synth_ssp.yaml"),
        ("teacher", "configs/image/synth_teacher.yaml"),
        ("kd_ssp", "configs/video/synth_kd_ssp.yaml"),
    ],
)
def test_demo_training_settings_match_the_shipped_config(tmp_path, stage, path):
    from pathlib import Path

    from vidseg.cli.demo import demo_overrides
    from vidseg.config import load_config
    from vidseg.training.config import TrainConfig

    shipped = Path(__file__).parents[2] / path
    from_file = load_config(TrainConfig, shipped, [f"trainer.out_dir={tmp_path}/runs"])
    from_demo = load_config(
        TrainConfig, None, demo_overrides(Path("data/synth"), tmp_path, [], stage)
    )
    assert from_file == from_demo


def test_demo_runs_end_to_end(tmp_path, capsys, monkeypatch):
    from vidseg.cli import demo
    from vidseg.data import open_dataset
    from vidseg.models import count_parameters
    from vidseg.training.checkpoint import load_run_model
    from vidseg.utils.video import read_video

    # The same code path on a smaller dataset and one epoch per stage, to keep the test fast.
    small = {**demo.DEMO_DATA, "clips": 6, "frames": 8}
    monkeypatch.setattr(demo, "DEMO_DATA", small)
    monkeypatch.setattr(demo, "QUICK_EPOCHS", dict.fromkeys(demo.QUICK_EPOCHS, 1))
    args = ["-q", "demo", "--quick", "--out", str(tmp_path), "--json", str(tmp_path / "d.json")]
    train = ["data.crop=[64,64]", "trainer.batch_size=2"]
    code, out, _ = run(capsys, *args, *train)
    assert code == 0
    for title in (
        "1. synthetic dataset",
        "2. ground-truth checks",
        "4. training SSP",
        "7. training KD-SSP",
        "9. results on the synthetic",
    ):
        assert title in out
    result = json.loads((tmp_path / "results.json").read_text())
    assert result == json.loads((tmp_path / "d.json").read_text())
    assert result["quick"] is True
    models = {m["key"]: m for m in result["models"]}
    assert list(models) == ["image", "ssp", "teacher", "kd_ssp"]
    for model in models.values():
        assert 0 <= model["miou"] <= 1
        assert 0 <= model["tc_ssp"] <= 1
        assert 0 <= model["tc_clean"] <= 1
        assert set(model["per_class_iou"]) == {c["name"] for c in demo_classes(tmp_path)}
        trained, _ = load_run_model(model["run_dir"])
        assert model["params"] == count_parameters(trained)
    assert models["image"]["latency_ratio"] == 1.0
    # SSP adds its similarity op to the image model; KD-SSP is the same network.
    assert models["image"]["params"] < models["ssp"]["params"] == models["kd_ssp"]["params"]
    assert models["teacher"]["params"] > models["image"]["params"]
    assert result["ssp_two_pass"]["ms_median"] > 0
    train_frames = sum(len(c.frames) for c in open_dataset(tmp_path / "data", "train"))
    assert result["teacher_logits"]["frames"] == train_frames
    assert 0 <= result["tc_labels"]["clean"] <= 1
    curves = cv2.imread(str(tmp_path / "training_curves.png"))
    assert curves is not None
    assert curves.std() > 10  # three drawn charts, not a blank image
    clip = open_dataset(tmp_path / "data", "val")[0]
    video = read_video(tmp_path / "val_clip.mp4")
    assert len(video) == len(clip.frames)
    assert video[0].shape[1] == 3 * clip.size[1]
    # The SSP panel of the first frame is the image model's (no previous frame yet): equal up
    # to the lossy codec.
    h, w = clip.size
    panels = video[0][-h:].astype(float)
    assert np.abs(panels[:, w : 2 * w] - panels[:, :w]).mean() < 3
    sims = cv2.imread(str(tmp_path / "similarity.png"))
    assert sims is not None
    assert sims.std() > 10

    # A second run reuses the identical dataset instead of regenerating it.
    code, out, _ = run(capsys, *args, *train)
    assert code == 0
    assert "reusing" in out


def demo_classes(root):
    from vidseg.utils.io import read_yaml

    return read_yaml(root / "data" / "dataset.yaml")["classes"]


def test_train_and_eval_errors_are_one_line(tmp_path, capsys):
    from pathlib import Path

    tiny = str(Path(__file__).parents[2] / "configs/image/synth_tiny.yaml")
    cases = [
        (["eval", str(tmp_path / "nope")], "run directory"),
        (["train", "--resume", str(tmp_path / "nope")], "does not exist"),
        (["train", tiny, "trainer.epohcs=3"], "did you mean 'trainer.epochs'?"),
        (["train", tiny, "model.backbone=hiera_smal", f"data.root={tmp_path}"], "hiera_small"),
        (["train"], "missing CONFIG"),
    ]
    for argv, expected in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        text = " ".join(err.split())
        assert text.startswith("error:"), err
        assert expected in text, (argv, err)
        assert "Traceback" not in err


def test_train_with_a_sam2_checkpoint_missing_trunk_keys_fails_in_one_line(
    tmp_path, capsys, dataset
):
    from pathlib import Path

    import torch

    ckpt = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": {"image_encoder.trunk.pos_embed": torch.zeros(1, 96, 7, 7)}}, ckpt)
    code, _, err = run(
        capsys,
        "train",
        str(Path(__file__).parents[2] / "configs/image/synth_tiny.yaml"),
        "model.backbone=hiera_tiny",
        f"model.weights={ckpt}",
        f"data.root={dataset}",
        f"trainer.out_dir={tmp_path}/runs",
    )
    assert code == 2
    text = " ".join(err.split())
    assert "sam2_hiera_tiny.pt" in text
    assert "missing" in text
    assert "Traceback" not in err
