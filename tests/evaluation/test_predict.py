import numpy as np
import pytest
import torch

from vidseg.cli.main import main
from vidseg.config import load_config, save_config
from vidseg.data import open_dataset, synthesize
from vidseg.models import build_segmenter
from vidseg.training.checkpoint import CONFIG_FILE, MODEL_FILE, save_weights
from vidseg.training.config import TrainConfig
from vidseg.utils.io import read_gray, write_png
from vidseg.utils.video import VideoWriter, read_video


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict") / "data"
    synthesize(root, clips=2, val_clips=1, test_clips=0, frames=6, size=64, seed=5)
    return root


def make_run(path, data_root, seed):
    cfg = load_config(
        TrainConfig,
        None,
        ["model.backbone=tiny_cnn", "model.head_channels=16", f"data.root={data_root}"],
    )
    torch.manual_seed(seed)
    model = build_segmenter(cfg.model, 8).eval()
    path.mkdir()
    save_config(path / CONFIG_FILE, cfg)
    save_weights(path / MODEL_FILE, model.state_dict(), {"num_classes": 8, "step": 0})
    return path, model


def frames_of(data):
    clip = open_dataset(data, "val")[0]
    return [clip.image(n) for n in clip.frames]


def test_predict_a_frame_folder_writes_the_models_labels_and_an_overlay(data, tmp_path):
    run, model = make_run(tmp_path / "run", data, 0)
    frames = frames_of(data)
    folder = tmp_path / "frames"
    # Numbered names that sort wrongly as text: frame_10 must come after frame_9.
    numbers = [1, 2, 9, 10, 11, 100]
    for n, image in zip(numbers, frames, strict=True):
        write_png(folder / f"frame_{n}.png", image)
    out = tmp_path / "out"
    assert main(["-q", "predict", str(folder), "--run", str(run), "--out", str(out)]) == 0
    for i, image in enumerate(frames):
        with torch.no_grad():
            expected = model(torch.from_numpy(image).permute(2, 0, 1)[None]).argmax(1)[0]
        got = read_gray(out / "labels" / "run" / f"{i:06d}.png")
        np.testing.assert_array_equal(got, expected.numpy())
    video = read_video(out / "overlay.mp4")
    assert len(video) == len(frames)
    assert video[0].shape == frames[0].shape


def test_two_runs_give_a_side_by_side_video(data, tmp_path):
    a, _ = make_run(tmp_path / "a", data, 1)
    b, _ = make_run(tmp_path / "b", data, 2)
    frames = frames_of(data)
    source = tmp_path / "clip.mp4"
    with VideoWriter(source, fps=10) as writer:
        for image in frames:
            writer.write(image)
    out = tmp_path / "out"
    argv = ["-q", "predict", str(source), "--run", str(a), "--run", str(b), "--out", str(out)]
    assert main([*argv, "--json", str(tmp_path / "p.json")]) == 0
    video = read_video(out / "compare.mp4")
    assert len(video) == len(frames)
    h, w = frames[0].shape[:2]
    assert video[0].shape == (h + 24, 2 * w, 3)  # two captioned panels
    for name in ("a", "b"):
        assert len(list((out / "labels" / name).glob("*.png"))) == len(frames)
    left = read_gray(out / "labels" / "a" / "000000.png")
    right = read_gray(out / "labels" / "b" / "000000.png")
    assert not np.array_equal(left, right)  # two different models


def test_predict_errors_are_one_line(data, tmp_path, capsys):
    run, _ = make_run(tmp_path / "run", data, 0)
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "nope.mp4")], "no such video file or frame folder"),
        ([str(tmp_path / "empty")], "no frames (.png or .jpg files)"),
    ]
    for argv, message in cases:
        code = main(["predict", *argv, "--run", str(run), "--out", str(tmp_path / "o")])
        assert code == 2
        err = " ".join(capsys.readouterr().err.split())
        assert err.startswith("error:")
        assert message in err
        assert "Traceback" not in err
