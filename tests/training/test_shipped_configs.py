"""The shipped configs load, and the video ones carry the official SSP values (ssp-method §8.2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidseg.config import load_config
from vidseg.training.config import TrainConfig

CONFIGS = Path(__file__).parents[2] / "configs"
SHIPPED = sorted(
    p
    for d in ("image", "video")
    for p in (CONFIGS / d).glob("*.yaml")
    if not p.name.startswith("_")
)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_config_loads(path):
    cfg = load_config(TrainConfig, path)
    assert (cfg.video.method == "ssp") == (path.parent.name == "video")


# name: (lambda, sim op, registration, image weights, epochs run/scheduled)
OFFICIAL = {
    "ssp_uavid": (0.5, "conv", "orb", "runs/base_uavid", 200, 250),
    "ssp_rural": (0.5, "conv", "orb", "runs/base_ruralscapes", 75, 100),
    "kd_ssp_uavid": (135000.0, "conv", "orb", "runs/base_uavid", 20, 25),
    "kd_ssp_rural": (135000.0, "conv", "orb", "runs/base_ruralscapes", 25, 30),
    "lambda_0.2": (0.2, "conv", "orb", "runs/base_uavid", 200, 250),
    "lambda_0.35": (0.35, "conv", "orb", "runs/base_uavid", 200, 250),
    "lambda_0.65": (0.65, "conv", "orb", "runs/base_uavid", 200, 250),
    "ablation_consistencyloss": (0.0, "conv", "orb", "runs/base_uavid", 200, 250),
    "ablation_cossim": (0.5, "cossim", "orb", "runs/base_uavid", 200, 250),
    "ablation_registration": (0.5, "conv", "identity", "runs/base_uavid", 200, 250),
    "ablation_interpolation": (0.5, "constant", "orb", "runs/base_uavid", 200, 250),
    "ablation_untrainedimage": (0.5, "conv", "orb", None, 200, 250),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_video_configs_mirror_the_official_values(name):
    cfg = load_config(TrainConfig, CONFIGS / "video" / f"{name}.yaml")
    lam, sim, registration, image, epochs, scheduled = OFFICIAL[name]
    assert cfg.loss.temporal.weight == lam
    assert cfg.video.ssp.sim_op == sim
    assert cfg.video.ssp.mixing_op == "id"
    assert cfg.video.ssp.registration["method"] == registration
    assert cfg.video.image_weights == image
    assert (cfg.trainer.epochs, cfg.optim.schedule_epochs) == (epochs, scheduled)
    assert cfg.optim.lr == 5e-5
    assert cfg.trainer.batch_size == 4
    assert cfg.model.backbone == "hiera_small"
    assert cfg.model.head_channels == 256
    assert cfg.data.resize == [736, 1280]
    assert cfg.data.crop == cfg.data.val_crop == [736, 736]
    assert cfg.video.unroll == 1
    kd = name.startswith("kd_")
    assert (cfg.distill.logits is not None) == kd
    if kd:
        assert (cfg.distill.temperature, cfg.distill.prev_weight, cfg.distill.every) == (
            2.0,
            1.0,
            2,
        )
        assert cfg.distill.reduction == "batchmean"
        assert cfg.distill.consistent
