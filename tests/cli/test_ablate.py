"""``vidseg ablate``: every row trained from the same image run, scored alike, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidseg.cli.main import main
from vidseg.config import load_config
from vidseg.data import synthesize
from vidseg.training.config import TrainConfig
from vidseg.training.trainer import train

BASE = [
    "data.num_workers=0",
    "data.crop=[48,48]",
    "model.backbone=tiny_cnn",
    "model.head_channels=16",
    "model.dropout=0.0",
    "trainer.batch_size=4",
    "trainer.epochs=1",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablate")
    root = synthesize(
        tmp / "synth",
        clips=3,
        frames=6,
        size=64,
        label_every=2,
        val_clips=1,
        test_clips=0,
        seed=2,
        show_progress=False,
    )
    cfg = load_config(TrainConfig, None, [f"data.root={root}", f"trainer.out_dir={tmp}", *BASE])
    return root, train(cfg, name="image"), tmp


def test_rows_are_scored_and_resumed(setup, capsys):
    root, image_run, tmp = setup
    out = tmp / "out"
    # A learning rate of ~0 and frozen batch norm keep the image model as it was, so the "no
    # interpolation" row (sim = 0) must score exactly like the image run.
    argv = [
        "-q",
        "ablate",
        "--image-run",
        str(image_run),
        "--rows",
        "no_interpolation,reuse_check",
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    assert "unknown row 'reuse_check'" in " ".join(capsys.readouterr().err.split())
    argv[5] = "no_interpolation,no_consistency_loss"
    overrides = [f"data.root={root}", *BASE, "optim.lr=1e-20", "trainer.freeze_bn=true"]
    assert main([*argv, *overrides]) == 0
    report = json.loads((out / "ablation.json").read_text())
    rows = report["rows"]
    assert list(rows) == ["image", "no_interpolation", "no_consistency_loss"]
    image, frozen = rows["image"], rows["no_interpolation"]
    for key in ("miou", "tc_ssp", "tc_clean", "mvc8"):
        assert frozen[key] == pytest.approx(image[key], abs=1e-12), key
    # The conv similarity op adds parameters; sim = 0 ("constant") adds none.
    assert frozen["params"] == image["params"] < rows["no_consistency_loss"]["params"]
    table = (out / "ablation.md").read_text()
    assert "| No interpolation | `video.ssp.sim_op=constant` |" in table
    # A second run reuses both rows; other overrides train them again.
    capsys.readouterr()
    assert main([*argv, *overrides]) == 0
    assert capsys.readouterr().out.count("reusing") == 2
    assert main([*argv, *overrides, "loss.temporal.weight=0.1"]) == 0
    assert "reusing" not in capsys.readouterr().out
    assert len(list((out / "runs").iterdir())) == 4


def test_the_paper_rows_are_known():
    from vidseg.cli.ablate import ABLATIONS, PAPER_ROWS

    assert set(PAPER_ROWS) <= set(ABLATIONS)
    for row in ABLATIONS.values():
        load_config(TrainConfig, Path("configs/video/synth_ssp.yaml"), row[1])
