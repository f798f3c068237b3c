"""Training video methods (SSP) with `vidseg train`: windows, homographies, losses, freezing."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseg.config import load_config
from vidseg.data import open_dataset, synthesize
from vidseg.data.torch_data import collate_samples
from vidseg.errors import ConfigError, DataError
from vidseg.evaluation.video import EvalOptions, evaluate_video
from vidseg.geometry.registration import corner_error
from vidseg.losses import temporal_consistency_loss
from vidseg.models import SSP
from vidseg.training.checkpoint import load_run_model, load_weights
from vidseg.training.config import TrainConfig
from vidseg.training.objectives import Objective, imagenet_normalise
from vidseg.training.trainer import build_train_model, train, train_transform


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return synthesize(
        tmp_path_factory.mktemp("data") / "synth",
        clips=4,
        frames=8,
        size=64,
        label_every=2,
        val_clips=1,
        test_clips=0,
        seed=5,
        show_progress=False,
    )


def overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"data.root={root}",
        "data.num_workers=0",
        "data.crop=[48,48]",
        "data.scale_range=[1.0,1.5]",
        "data.scale_p=1.0",
        "model.backbone=tiny_cnn",
        "model.head_channels=16",
        "model.dropout=0.0",
        "optim.lr=3e-3",
        "optim.warmup_epochs=0",
        "trainer.batch_size=4",
        "trainer.log_every=1",
        f"trainer.out_dir={out}",
        *extra,
    ]


SSP_KEYS = (
    "video.method=ssp",
    "video.ssp.registration={method: identity}",
    "video.homographies=dataset",
    "loss.temporal.weight=0.5",
    "loss.temporal.flow=gt",
)


@pytest.fixture(scope="module")
def image_run(root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(TrainConfig, None, overrides(root, out, "trainer.epochs=1"))
    return train(cfg, name="image")


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_ssp_run_fine_tunes_the_image_model_and_streams(root, image_run, tmp_path):
    cfg = load_config(
        TrainConfig,
        None,
        overrides(
            root, tmp_path, *SSP_KEYS, "trainer.epochs=2", f"video.image_weights={image_run}"
        ),
    )
    run_dir = train(cfg, name="ssp")
    records = _metrics(run_dir)
    steps = [r for r in records if "loss" in r]
    assert steps
    assert all(np.isfinite(r["loss"]) for r in steps)
    for r in steps:
        # The logged total is CE plus lambda times the temporal term.
        assert r["loss"] == pytest.approx(r["loss_ce"] + 0.5 * r["loss_tc"], rel=1e-5)
        assert 0 < r["sim_mean"] < 1
    model, loaded = load_run_model(run_dir)
    assert isinstance(model, SSP)
    assert loaded == cfg
    # The image model was fine-tuned (the paper's setting), not left as loaded.
    image_state, _ = load_weights(image_run / "model.safetensors")
    changed = [
        k
        for k, v in model.segmenter.state_dict().items()
        if v.dtype.is_floating_point and not torch.equal(v, image_state[k])
    ]
    assert changed
    # Validation scored the model by streaming: the same mIoU as evaluating the saved run.
    val = open_dataset(root, "val")
    evaluator = evaluate_video(
        model, val, options=EvalOptions(tc_protocols=()), show_progress=False
    )
    last_val = [r for r in records if "val_miou" in r][-1]
    assert last_val["val_miou"] == pytest.approx(evaluator.result(val.info.class_names)["miou"])


def test_freeze_image_trains_only_the_similarity_op(root, image_run, tmp_path):
    cfg = load_config(
        TrainConfig,
        None,
        overrides(
            root,
            tmp_path,
            *SSP_KEYS,
            "trainer.epochs=1",
            f"video.image_weights={image_run}",
            "video.freeze_image=true",
        ),
    )
    run_dir = train(cfg, name="frozen")
    model, _ = load_run_model(run_dir)
    image_state, _ = load_weights(image_run / "model.safetensors")
    # Weights and batch-norm statistics of the image model are exactly as loaded.
    for key, value in model.segmenter.state_dict().items():
        assert torch.equal(value, image_state[key]), key
    fresh = build_train_model(cfg, model.num_classes)
    assert any(
        not torch.equal(v, fresh.sim_op.state_dict()[k])
        for k, v in model.sim_op.state_dict().items()
        if v.dtype.is_floating_point
    )


def _objective_batch(root: Path, out: Path, *extra: str):
    cfg = load_config(TrainConfig, None, overrides(root, out, *SSP_KEYS, *extra))
    data = open_dataset(root, "train")
    objective = Objective(cfg, data.num_classes, data.ignore_index)
    samples = objective.samples(data)
    dataset = objective.dataset(data, samples, train_transform(cfg.data), seed=0)
    objective.setup(torch.device("cpu"))
    batch = collate_samples([dataset[i] for i in range(4)])
    torch.manual_seed(0)
    model = build_train_model(cfg, data.num_classes)
    return cfg, objective, batch, model


def test_unrolled_steps_use_the_fused_previous_output(root, tmp_path):
    _, objective, batch, model = _objective_batch(root, tmp_path, "video.unroll=2")
    assert batch["frames"].shape[1] == 3
    assert batch["homographies"].shape[1] == 2
    model.train()
    losses = objective.losses(model, batch, torch.device("cpu"))
    # The temporal term compares the last two outputs of the recursion (the previous one fused
    # from its own predecessor, as at inference), recomputed here independently.
    with torch.no_grad():
        frames = batch["frames"].transpose(0, 1)
        outputs = model(frames, batch["homographies"].transpose(0, 1))["outputs"]
        expected = temporal_consistency_loss(
            outputs[2],
            outputs[1],
            batch["flows"][:, -1],
            imagenet_normalise(frames[2]),
            imagenet_normalise(frames[1]),
        )
        raw_prev = model.segmenter(frames[1])
    assert not torch.allclose(outputs[1], raw_prev)
    assert float(losses.parts["loss_tc"].detach()) == pytest.approx(float(expected), rel=1e-5)
    (losses.summed / losses.count + losses.mean).backward()
    assert model.sim_op.net[0].weight.grad is not None
    assert model.sim_op.net[0].weight.grad.abs().sum() > 0


def test_registered_homographies_follow_the_augmentation(root, tmp_path):
    """ORB on the raw frames, then moved analytically with the crop/scale/flip, agrees with the
    dataset's ground truth moved the same way."""
    _, _, gt_batch, _ = _objective_batch(root, tmp_path)
    _, _, reg_batch, _ = _objective_batch(
        root,
        tmp_path,
        "video.homographies=model",
        "video.ssp.registration={method: orb, scale: 1.0}",
    )
    assert torch.equal(gt_batch["frames"], reg_batch["frames"])
    assert torch.equal(gt_batch["affine"], reg_batch["affine"])
    size = tuple(gt_batch["frames"].shape[-2:])
    errors = [
        corner_error(r.numpy(), g.numpy(), size)
        for r, g in zip(
            reg_batch["homographies"][:, 0], gt_batch["homographies"][:, 0], strict=True
        )
    ]
    assert np.median(errors) < 1.0
    # The augmentation really moved them: the affine is not the identity for every sample.
    assert not all(torch.allclose(a, torch.eye(3, dtype=a.dtype)) for a in gt_batch["affine"])


def test_video_options_need_a_video_method(tmp_path):
    with pytest.raises(ConfigError, match=r"loss\.temporal\.weight needs a video method"):
        load_config(TrainConfig, None, ["loss.temporal.weight=0.5"])
    with pytest.raises(ConfigError, match=r"video\.unroll > 1 needs a video method"):
        load_config(TrainConfig, None, ["video.unroll=2"])
    with pytest.raises(ConfigError, match=r"distill\.class_weighted needs loss\.class_weights"):
        load_config(TrainConfig, None, ["distill.class_weighted=true"])
    with pytest.raises(ConfigError, match=r"unknown similarity op 'convv'.*conv"):
        load_config(TrainConfig, None, ["video.method=ssp", "video.ssp.sim_op=convv"])


def test_missing_image_weights_are_named(root, tmp_path):
    cfg = load_config(
        TrainConfig,
        None,
        overrides(root, tmp_path, *SSP_KEYS, f"video.image_weights={tmp_path / 'nope'}"),
    )
    with pytest.raises(ConfigError, match=r"video\.image_weights: .*nope does not exist"):
        train(cfg, name="bad")


@pytest.fixture(scope="module")
def teacher_logits(root, image_run, tmp_path_factory) -> Path:
    from vidseg.data.teacher_logits import export_logits

    model, _ = load_run_model(image_run)
    out = tmp_path_factory.mktemp("logits") / "train"
    export_logits(model, open_dataset(root, "train"), out)
    return out


KD_KEYS = (*SSP_KEYS, "distill.flow=dis", "distill.reduction=pixelmean", "trainer.epochs=1")


def test_kd_ssp_trains_on_all_frames_against_the_teacher(root, image_run, teacher_logits, tmp_path):
    cfg = load_config(
        TrainConfig,
        None,
        overrides(
            root,
            tmp_path,
            *KD_KEYS,
            f"distill.logits={teacher_logits}",
            f"video.image_weights={image_run}",
        ),
    )
    data = open_dataset(root, "train")
    objective = Objective(cfg, data.num_classes, data.ignore_index)
    samples = objective.samples(data)
    # Every second window over all frames, labelled or not (the official train_skip_frames 2):
    # targets at clip positions 1, 3, 5, ... with their predecessors.
    expected = [(ci, (n - 1, n)) for ci, clip in enumerate(data) for n in clip.frames[1::2]]
    assert [(s.clip, s.frames) for s in samples] == expected
    run_dir = train(cfg, name="kd")
    steps = [r for r in _metrics(run_dir) if "loss" in r]
    for r in steps:
        assert r["loss"] == pytest.approx(
            r["loss_kd"] + r["loss_kd_prev"] + 0.5 * r["loss_tc"], rel=1e-5
        )
        assert "loss_ce" not in r
    # With distill.label_weight, labelled windows add their cross-entropy.
    labelled = train(replace(cfg, distill=replace(cfg.distill, label_weight=2.0)), name="kd-l")
    steps = [r for r in _metrics(labelled) if "loss" in r]
    assert any(r["loss_ce"] > 0 for r in steps)
    for r in steps:
        expected = r["loss_kd"] + r["loss_kd_prev"] + 0.5 * r["loss_tc"] + 2.0 * r["loss_ce"]
        assert r["loss"] == pytest.approx(expected, rel=1e-5)


def test_kd_student_equal_to_its_teacher_has_a_small_loss(
    root, image_run, teacher_logits, tmp_path
):
    """The image KD baseline started from the teacher itself, without augmentation: the aligned
    targets are the student's own logits up to fp16 rounding, so the KL is almost zero."""
    cfg = load_config(
        TrainConfig,
        None,
        overrides(
            root,
            tmp_path,
            f"distill.logits={teacher_logits}",
            "distill.reduction=pixelmean",
            "data.crop=null",
            "data.hflip_p=0.0",
        ),
    )
    data = open_dataset(root, "train")
    objective = Objective(cfg, data.num_classes, data.ignore_index)
    samples = objective.samples(data)
    dataset = objective.dataset(data, samples, train_transform(cfg.data), seed=0)
    objective.setup(torch.device("cpu"))
    batch = collate_samples([dataset[i] for i in range(4)])
    teacher, _ = load_run_model(image_run)
    with torch.no_grad():
        own = objective.losses(teacher, batch, torch.device("cpu")).parts["loss_kd"]
        torch.manual_seed(0)
        other = build_train_model(cfg, data.num_classes).eval()
        fresh = objective.losses(other, batch, torch.device("cpu")).parts["loss_kd"]
    assert float(own) < 1e-6
    assert float(fresh) > 100 * float(own)


def test_corrupt_or_missing_teacher_logits_are_named(root, image_run, teacher_logits, tmp_path):
    import shutil

    broken = tmp_path / "logits"
    shutil.copytree(teacher_logits, broken)
    files = sorted(broken.glob("*.npy"))
    data = bytearray(files[0].read_bytes())
    data[-10] ^= 0xFF
    files[0].write_bytes(bytes(data))
    cfg = load_config(
        TrainConfig,
        None,
        overrides(root, tmp_path, *KD_KEYS, f"distill.logits={broken}"),
    )
    with pytest.raises(DataError, match=re.escape(str(files[0]))):
        train(cfg, name="kd-corrupt")
    files[1].unlink()
    with pytest.raises(DataError, match=re.escape(str(files[1]))):
        train(cfg, name="kd-missing")
