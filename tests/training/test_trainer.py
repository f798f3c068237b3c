"""The trainer end to end on a tiny synthetic dataset: learning, checkpoints, resume, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vidseg.config import load_config
from vidseg.data import open_dataset, synthesize
from vidseg.errors import ConfigError
from vidseg.training.checkpoint import (
    MODEL_FILE,
    STATE_FILE,
    create_run_dir,
    load_resume_point,
    load_run_model,
    load_weights,
    save_state,
    save_weights,
    truncate_metrics,
)
from vidseg.training.config import TrainConfig
from vidseg.training.trainer import Callback, train
from vidseg.utils.video import read_video

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return synthesize(
        tmp_path_factory.mktemp("data") / "synth",
        clips=4,
        frames=8,
        size=64,
        label_every=2,
        val_clips=1,
        test_clips=0,
        seed=3,
        show_progress=False,
    )


def overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"data.root={root}",
        "data.num_workers=0",
        "data.crop=[48,48]",
        "data.scale_range=[1.0,1.5]",
        "data.scale_p=0.5",
        "model.backbone=tiny_cnn",
        "model.head_channels=32",
        "optim.lr=3e-3",
        "optim.warmup_epochs=0.5",
        "trainer.batch_size=4",
        "trainer.log_every=1",
        f"trainer.out_dir={out}",
        *extra,
    ]


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_learns_and_writes_the_contract_files(tiny_root, tmp_path):
    cfg = load_config(TrainConfig, None, overrides(tiny_root, tmp_path, "trainer.epochs=6"))
    run_dir = train(cfg, name="tiny")
    assert run_dir.parent == tmp_path
    assert run_dir.name.startswith("tiny-")
    for name in ("config.yaml", MODEL_FILE, STATE_FILE, "metrics.jsonl", "best.safetensors"):
        assert (run_dir / name).is_file(), name
    assert load_config(TrainConfig, run_dir / "config.yaml") == cfg

    records = read_metrics(run_dir)
    losses = [r["loss"] for r in records if "loss" in r]
    # 12 train frames (3 clips x 4 labelled), batch 4: 3 steps per epoch, 6 epochs.
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 19))
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    vals = [r for r in records if "val_miou" in r]
    assert [r["epoch"] for r in vals] == [1, 2, 3, 4, 5, 6]
    # Warm-up: the first step uses lr * start_lr, the lr then rises linearly over 1.5 steps.
    lrs = [r["lr"] for r in records if "lr" in r]
    assert lrs[0] == pytest.approx(3e-3 * 1e-4)
    assert lrs[1] == pytest.approx(3e-3 * (1e-4 + (1 - 1e-4) / 2))

    best = json.loads((run_dir / "best.json").read_text())
    assert best["val_miou"] == pytest.approx(max(r["val_miou"] for r in vals))
    state = torch.load(run_dir / STATE_FILE, weights_only=True)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (18, 6, 0)

    # The saved weights score what validation measured, through the independent eval path.
    from vidseg.cli.main import main

    out_json = tmp_path / "eval.json"
    out = tmp_path / "eval"
    argv = ["eval", str(run_dir), "--weights", "best", "--json", str(out_json), "--out", str(out)]
    assert main([*argv, "--save-predictions", "--video"]) == 0
    result = json.loads(out_json.read_text())
    first_clip = open_dataset(tiny_root, "val")[0]
    assert len(read_video(out / "clip.mp4")) == len(first_clip.frames)
    page = (out / "report.html").read_text()
    assert "data:video/mp4;base64," in page
    assert page.count("data:image/png;base64,") == 4  # per-class IoU, 2 x TC, training curves
    assert result["miou"] == pytest.approx(best["val_miou"], abs=1e-12)
    assert result == json.loads((out / "eval.json").read_text())
    assert set(result["tc"]) == {"ssp", "clean"}
    assert 0 < result["tc"]["ssp"] <= result["tc"]["clean"] <= 1
    # The saved predictions, scored by `vidseg score`, give the same figures through the same
    # code: only the header differs.
    scored_json = tmp_path / "score.json"
    score_argv = ["score", str(out / "predictions"), "--data", str(tiny_root), "--json"]
    assert main([*score_argv, str(scored_json)]) == 0
    scored = json.loads(scored_json.read_text())
    for key in ("miou", "per_class_iou", "wiou", "tc", "mvc", "clips", "num_pixels"):
        assert scored[key] == result[key]
    model, _ = load_run_model(run_dir, "last")
    weights, meta = load_weights(run_dir / MODEL_FILE)
    assert meta["step"] == 18
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key])


def test_unique_run_directories(tmp_path):
    a = create_run_dir(tmp_path, "same")
    b = create_run_dir(tmp_path, "same")
    assert a != b
    assert a.is_dir()
    assert b.is_dir()


def test_resume_refuses_inconsistent_or_missing_checkpoints(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"run directory .*run does not exist"):
        load_resume_point(run)
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"state\.pt does not exist"):
        load_resume_point(run)
    save_weights(run / MODEL_FILE, {"w": torch.zeros(2)}, {"step": 7})
    save_state(run / STATE_FILE, {"step": 5})
    with pytest.raises(ConfigError, match=r"from step 7 but state\.pt from step 5"):
        load_resume_point(run)


def test_truncate_metrics_drops_records_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": s / 10}) for s in range(1, 6)]
    path.write_text("\n".join(lines) + '\n{"step": 6, "lo')  # the last line was cut by a kill
    truncate_metrics(path, 3)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]


SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    from vidseg.config import load_config
    from vidseg.training.config import TrainConfig
    from vidseg.training.trainer import Callback, train

    mode, out, *ovr = sys.argv[1:]

    class Probe(Callback):
        def on_checkpoint(self, run):
            # Die like a killed job: no cleanup, no exception handling.
            if mode == "kill" and run.step == 4:
                os.kill(os.getpid(), signal.SIGKILL)

        def on_fit_end(self, run):
            params = {k: v.tolist() for k, v in run.model.state_dict().items()}
            with open(os.path.join(out, f"params-rank{run.rank}.json"), "w") as f:
                json.dump({"run_dir": str(run.run_dir), "params": params}, f)

    cfg = load_config(TrainConfig, None, ovr)
    resume = os.environ.get("RESUME")
    train(cfg, name="t", resume=resume, callbacks=[Probe()])
    """
)


def run_script(tmp_path: Path, mode: str, out: Path, args: list[str], **env: str):
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, str(script), mode, str(out), *args],
        env={**ENV, **env},
        capture_output=True,
        text=True,
        timeout=240,
    )


def final_params(out: Path, rank: int = 0) -> tuple[Path, dict]:
    data = json.loads((out / f"params-rank{rank}.json").read_text())
    return Path(data["run_dir"]), data["params"]


def test_a_killed_run_resumes_bit_for_bit(tiny_root, tmp_path):
    # 3 steps per epoch, checkpoints every 2 steps: step 4 is mid-epoch 2.
    args = overrides(tiny_root, tmp_path / "runs", "trainer.epochs=3", "trainer.checkpoint_every=2")
    args += ["model.dropout=0.3"]  # the per-step RNG must be restored too
    straight = run_script(tmp_path, "plain", tmp_path / "a", args)
    assert straight.returncode == 0, straight.stderr
    killed = run_script(tmp_path, "kill", tmp_path / "b", args)
    assert killed.returncode == -9, killed.stderr
    (run_b,) = [p for p in (tmp_path / "runs").iterdir() if p != final_params(tmp_path / "a")[0]]
    state = torch.load(run_b / STATE_FILE, weights_only=True)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 1, 1)
    resumed = run_script(tmp_path, "plain", tmp_path / "b", args, RESUME=str(run_b))
    assert resumed.returncode == 0, resumed.stderr

    run_a, params_a = final_params(tmp_path / "a")
    _, params_b = final_params(tmp_path / "b")
    assert params_a.keys() == params_b.keys()
    for key in params_a:
        assert params_a[key] == params_b[key], key
    strip = [
        {k: v for k, v in r.items() if k not in ("time", "samples_per_s")}
        for r in read_metrics(run_a)
    ]
    assert strip == [
        {k: v for k, v in r.items() if k not in ("time", "samples_per_s")}
        for r in read_metrics(run_b)
    ]


def test_two_ddp_processes_equal_one_process_on_the_combined_batch(tiny_root, tmp_path):
    # Frozen batch norm and no dropout: both would otherwise see per-process batches / RNG.
    args = overrides(
        tiny_root,
        tmp_path / "runs",
        "trainer.epochs=2",
        "trainer.freeze_bn=true",
        "trainer.accelerator=cpu",
        "model.dropout=0",
    )
    one = run_script(tmp_path, "plain", tmp_path / "one", args)
    assert one.returncode == 0, one.stderr
    two = run_script(tmp_path, "plain", tmp_path / "two", [*args, "trainer.devices=2"])
    assert two.returncode == 0, two.stderr

    run_one, params_one = final_params(tmp_path / "one")
    run_two, rank0 = final_params(tmp_path / "two", 0)
    _, rank1 = final_params(tmp_path / "two", 1)
    assert rank0 == rank1  # DDP keeps the replicas identical
    for key in params_one:
        a = torch.tensor(params_one[key], dtype=torch.float64)
        b = torch.tensor(rank0[key], dtype=torch.float64)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=key)
    loss_one = [r["loss"] for r in read_metrics(run_one) if "loss" in r]
    loss_two = [r["loss"] for r in read_metrics(run_two) if "loss" in r]
    assert len(loss_one) == len(loss_two) == 6
    assert loss_two == pytest.approx(loss_one, rel=1e-5)
    val_one = [r["val_miou"] for r in read_metrics(run_one) if "val_miou" in r]
    val_two = [r["val_miou"] for r in read_metrics(run_two) if "val_miou" in r]
    assert val_two == pytest.approx(val_one, abs=1e-6)


def test_callbacks_see_every_step(tiny_root, tmp_path):
    seen = []

    class Count(Callback):
        def on_step_end(self, run, loss):
            seen.append((run.step, run.epoch, run.batch_in_epoch, loss))

    cfg = load_config(TrainConfig, None, overrides(tiny_root, tmp_path, "trainer.epochs=1"))
    train(cfg, callbacks=[Count()])
    assert [s[:3] for s in seen] == [(1, 0, 1), (2, 0, 2), (3, 0, 3)]
    assert all(loss > 0 for *_, loss in seen)


def test_bf16_mixed_precision_trains_with_float32_weights(tiny_root, tmp_path):
    seen = []

    class Loss(Callback):
        def on_step_end(self, run, loss):
            seen.append(loss)

    cfg = load_config(
        TrainConfig,
        None,
        overrides(tiny_root, tmp_path, "trainer.epochs=2", "trainer.precision=bf16-mixed"),
    )
    run_dir = train(cfg, callbacks=[Loss()])
    weights, _ = load_weights(run_dir / MODEL_FILE)
    assert {v.dtype for k, v in weights.items() if v.is_floating_point()} == {torch.float32}
    assert len(seen) == 6
    assert all(0 < loss < 10 for loss in seen)
    assert sum(seen[-3:]) < sum(seen[:3])
