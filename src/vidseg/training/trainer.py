"""Training loop for image segmentation models on Lightning Fabric (CPU, one or many GPUs, DDP).

Exactness rules that the tests rely on:

- the data order depends only on ``(seed, epoch)`` and each sample's augmentation only on
  ``(seed, epoch, index)``; the global batch is split over ranks (:class:`GlobalBatchSampler`);
- the loss is the mean over all valid pixels of the global batch (normalised with the
  all-reduced pixel count), so N processes compute the gradient one process computes on the
  combined batch (with ``trainer.freeze_bn``; batch norm otherwise sees per-process batches);
- the global torch RNG (dropout, drop-path) is reseeded from ``(seed, step, rank)`` at every
  step, so a run resumed from a checkpoint continues bit for bit.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import TextColumn
from torch import Tensor, nn
from torch.utils.data import DataLoader

from vidseg.config import save_config
from vidseg.data import (
    ColorJitter,
    Compose,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    open_dataset,
)
from vidseg.data.folder import FolderDataset
from vidseg.data.torch_data import collate_samples, worker_init_fn
from vidseg.errors import ConfigError
from vidseg.evaluation.image import evaluate_segmenter, scores
from vidseg.evaluation.video import EvalOptions, evaluate_video
from vidseg.metrics import ConfusionMeter
from vidseg.models import build_model
from vidseg.training.checkpoint import (
    BEST_FILE,
    BEST_INFO_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    STATE_FILE,
    check_run_dir,
    create_run_dir,
    load_image_weights,
    load_resume_point,
    load_state_dict_strict,
    save_state,
    save_weights,
    truncate_metrics,
)
from vidseg.training.config import DataConfig, TrainConfig
from vidseg.training.objectives import Objective, StepLosses, is_video_model
from vidseg.training.optim import build_adamw
from vidseg.training.sampler import GlobalBatchSampler
from vidseg.training.schedule import lr_factor
from vidseg.utils.console import progress_bar
from vidseg.utils.io import atomic_write

log = logging.getLogger(__name__)


class Callback:
    """Hooks called on every rank; override the ones you need."""

    def on_step_end(self, run: Run, loss: float) -> None:
        """After optimizer step ``run.step`` (1-based count of steps done)."""

    def on_checkpoint(self, run: Run) -> None:
        """After a resumable checkpoint of step ``run.step`` is on disk."""

    def on_fit_end(self, run: Run) -> None:
        """After the last epoch."""


@dataclass
class Run:
    """The state of a training run, as callbacks see it."""

    run_dir: Path
    model: nn.Module
    rank: int
    world_size: int
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def train_transform(data: DataConfig) -> Compose:
    """The training augmentations of ``data`` (resize, flip, scale + crop, colour jitter)."""
    ops: list[Any] = []
    if data.resize is not None:
        ops.append(Resize(tuple(data.resize)))
    if data.hflip_p > 0:
        ops.append(RandomHorizontalFlip(data.hflip_p))
    if data.crop is not None:
        ops.append(RandomScaleCrop(tuple(data.crop), tuple(data.scale_range), data.scale_p))
    if data.color_jitter_p > 0:
        ops.append(ColorJitter(p=data.color_jitter_p))
    return Compose(ops)


def set_train_mode(model: nn.Module, freeze_bn: bool, freeze_image: bool = False) -> None:
    """Training mode, with batch-norm layers kept in eval mode when ``freeze_bn``, and a video
    model's image segmenter kept in eval mode when ``freeze_image``."""
    model.train()
    if freeze_image:
        _segmenter(model).eval()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _segmenter(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", model)  # Fabric's wrapper
    return inner.segmenter


def build_train_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model of ``cfg`` to train: the image model, or the video method around it with the
    image weights of ``video.image_weights`` loaded and, with ``video.freeze_image``, frozen."""
    model = build_model(cfg.model, cfg.video, num_classes)
    if cfg.video.method == "none":
        if cfg.video.image_weights is not None:
            raise ConfigError(
                "video.image_weights is for video methods; an image model starts from model.weights"
            )
        return model
    if cfg.video.image_weights is not None:
        path = load_image_weights(model.segmenter, cfg.video.image_weights)
        log.info("image model weights from %s", path)
    if cfg.video.freeze_image:
        model.segmenter.requires_grad_(False)
    return model


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the global torch RNG for optimizer step ``step`` on ``rank``."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _fabric(cfg: TrainConfig):
    from lightning.fabric import Fabric

    t = cfg.trainer
    world = t.devices * t.num_nodes
    return Fabric(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy="ddp" if world > 1 else "auto",
        precision=t.precision,
    )


def train(
    cfg: TrainConfig,
    *,
    name: str = "run",
    resume: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
) -> Path:
    """Train (or, with ``resume``, continue) the image model of ``cfg``; returns the run directory.

    With ``trainer.devices > 1`` the calling script is started once more per extra process
    (Lightning's DDP launcher), so call this from a script or the ``vidseg`` command.
    """
    if resume is not None:
        check_run_dir(resume)
    t = cfg.trainer
    train_data = open_dataset(cfg.data.root, cfg.data.train_split)
    val_data = open_dataset(cfg.data.root, cfg.data.val_split)
    fabric = _fabric(cfg)
    fabric.launch()
    rank, world = fabric.global_rank, fabric.world_size

    if resume is not None:
        run_dir = Path(resume)
    else:
        created = str(create_run_dir(t.out_dir, t.name or name)) if rank == 0 else None
        run_dir = Path(fabric.broadcast(created, src=0))
        if rank == 0:
            save_config(run_dir / CONFIG_FILE, cfg)
    if rank == 0:
        log.info("run directory: %s", run_dir)

    torch.manual_seed(t.seed)
    model = build_train_model(cfg, train_data.num_classes)
    objective = Objective(cfg, train_data.num_classes, train_data.ignore_index)
    # After the model, so that bad weights are reported before a too-small dataset.
    samples = objective.samples(train_data)
    if len(samples) < t.batch_size:
        kind = "training samples" if objective.teacher is not None else "labelled frames"
        raise ConfigError(
            f"{cfg.data.root}: split '{cfg.data.train_split}' has {len(samples)} {kind}"
            f"{' with their previous frames' if objective.video else ''}, fewer than "
            f"trainer.batch_size={t.batch_size}"
        )
    optimizer = build_adamw(
        model,
        cfg.optim.lr,
        cfg.optim.weight_decay,
        (cfg.optim.betas[0], cfg.optim.betas[1]),
        decay_all=cfg.optim.decay_norm_and_bias,
    )
    sampler = GlobalBatchSampler(
        len(samples), t.batch_size, rank=rank, world_size=world, seed=t.seed
    )
    per_epoch = sampler.batches_per_epoch
    horizon = cfg.optim.schedule_epochs or t.epochs
    schedule = partial(
        lr_factor,
        total_steps=horizon * per_epoch,
        warmup_steps=round(cfg.optim.warmup_epochs * per_epoch),
        schedule=cfg.optim.schedule,
        start=cfg.optim.start_lr,
        final=cfg.optim.final_lr,
        power=cfg.optim.poly_power,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    run = Run(run_dir=run_dir, model=model, rank=rank, world_size=world)
    if resume is not None:
        point = load_resume_point(run_dir)
        load_state_dict_strict(model, point.weights, run_dir / MODEL_FILE)
        run.step = point.state["step"]
        run.epoch = point.state["epoch"]
        run.batch_in_epoch = point.state["batch_in_epoch"]
        run.best = point.state["best"]
        if point.state["batches_per_epoch"] != per_epoch:
            raise ConfigError(
                f"{run_dir}: the run had {point.state['batches_per_epoch']} batches per epoch, "
                f"now {per_epoch}: the dataset or trainer.batch_size changed, resume is not exact"
            )
        if rank == 0:
            truncate_metrics(run_dir / METRICS_FILE, run.step)
            log.info(
                "resuming at step %d (epoch %d, batch %d)",
                run.step,
                run.epoch + 1,
                run.batch_in_epoch,
            )
    wrapped, optimizer = fabric.setup(model, optimizer)
    if resume is not None:
        optimizer.load_state_dict(point.state["optimizer"])
        scheduler.load_state_dict(point.state["scheduler"])

    dataset = objective.dataset(train_data, samples, train_transform(cfg.data), t.seed)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_samples,
        worker_init_fn=worker_init_fn,
        persistent_workers=cfg.data.num_workers > 0,
    )
    objective.setup(fabric.device)
    logger = _MetricsLogger(run_dir, enabled=rank == 0, tensorboard=t.tensorboard)
    total_steps = t.epochs * per_epoch
    freeze_image = cfg.video.freeze_image and objective.video
    set_train_mode(wrapped, t.freeze_bn, freeze_image)

    info = TextColumn("{task.fields[info]}")
    with progress_bar(info) as progress:
        task = progress.add_task(
            "training", total=total_steps, completed=run.step, info="", visible=rank == 0
        )
        window: dict[str, float] = {}
        window_n, window_start = 0, time.perf_counter()
        while run.epoch < t.epochs:
            sampler.set_epoch(run.epoch, start=run.batch_in_epoch)
            dataset.set_epoch(run.epoch)
            for batch in loader:
                torch.manual_seed(step_seed(t.seed, run.step, rank))
                losses = objective.losses(wrapped, batch, fabric.device)
                count = losses.count.detach()
                total = fabric.all_reduce(count, reduce_op="sum") if world > 1 else count
                total = total.clamp_min(1.0)
                optimizer.zero_grad(set_to_none=True)
                fabric.backward(losses.summed * world / total + losses.mean)
                if t.grad_clip is not None:
                    fabric.clip_gradients(wrapped, optimizer, max_norm=t.grad_clip)
                optimizer.step()
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                values = _reduced_values(fabric, losses, total, world)
                loss = values["loss"]
                if not math.isfinite(loss):
                    raise ConfigError(
                        f"the loss became {loss} at step {run.step + 1}; lower optim.lr or set "
                        "trainer.grad_clip"
                    )
                run.step += 1
                run.batch_in_epoch += 1
                for key, value in values.items():
                    window[key] = window.get(key, 0.0) + value
                window_n += 1
                if run.step % t.log_every == 0 or run.batch_in_epoch == per_epoch:
                    elapsed = time.perf_counter() - window_start
                    record = {
                        "step": run.step,
                        "epoch": run.epoch + run.batch_in_epoch / per_epoch,
                        **{key: value / window_n for key, value in window.items()},
                        "lr": lr,
                        "samples_per_s": window_n * t.batch_size / max(elapsed, 1e-9),
                    }
                    logger.log(record)
                    run.history.append(record)
                    progress.update(
                        task,
                        info=f"loss {record['loss']:.4f}  lr {lr:.2e}  "
                        f"{record['samples_per_s']:.1f} samples/s",
                    )
                    window, window_n, window_start = {}, 0, time.perf_counter()
                progress.update(task, completed=run.step)
                for callback in callbacks:
                    callback.on_step_end(run, loss)
                if (
                    t.checkpoint_every
                    and run.step % t.checkpoint_every == 0
                    and run.batch_in_epoch < per_epoch
                ):
                    _checkpoint(fabric, run, optimizer, scheduler, per_epoch, t.seed, callbacks)
            run.epoch += 1
            run.batch_in_epoch = 0
            if run.epoch % t.val_every == 0 or run.epoch == t.epochs:
                _validate(fabric, cfg, run, val_data, logger)
                set_train_mode(wrapped, t.freeze_bn, freeze_image)
            _checkpoint(fabric, run, optimizer, scheduler, per_epoch, t.seed, callbacks)
    logger.close()
    for callback in callbacks:
        callback.on_fit_end(run)
    return run_dir


def _reduced_values(fabric, losses: StepLosses, total: Tensor, world: int) -> dict[str, float]:
    """The step's loss and its parts, averaged over processes, as floats for the log."""
    summed = losses.summed.detach()
    mean = losses.mean.detach()
    parts = None
    if losses.parts:
        parts = torch.stack([p.detach().float() for p in losses.parts.values()])
    if world > 1:
        summed = fabric.all_reduce(summed, reduce_op="sum")
        mean = fabric.all_reduce(mean, reduce_op="mean")
        if parts is not None:
            parts = fabric.all_reduce(parts, reduce_op="mean")
    values = {"loss": float(summed / total + mean)}
    if parts is not None:
        values.update({k: float(v) for k, v in zip(losses.parts, parts, strict=True)})
    return values


def _checkpoint(fabric, run, optimizer, scheduler, per_epoch, seed, callbacks) -> None:
    if run.rank == 0:
        meta = {"step": run.step, "epoch": run.epoch, "batch_in_epoch": run.batch_in_epoch}
        save_weights(
            run.run_dir / MODEL_FILE,
            run.model.state_dict(),
            {**meta, "num_classes": run.model.num_classes},
        )
        save_state(
            run.run_dir / STATE_FILE,
            {
                **meta,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "seed": seed,
                "best": run.best,
                "batches_per_epoch": per_epoch,
                "world_size": run.world_size,
            },
        )
    fabric.barrier()
    for callback in callbacks:
        callback.on_checkpoint(run)


class _Shard:
    """The clips ``rank``, ``rank + world``, ... of a dataset, for sharded streaming validation."""

    def __init__(self, dataset: FolderDataset, rank: int, world: int) -> None:
        self.num_classes = dataset.num_classes
        self.ignore_index = dataset.ignore_index
        self.clips = [dataset[i] for i in range(rank, len(dataset), world)]

    def __iter__(self):
        return iter(self.clips)

    def __len__(self) -> int:
        return len(self.clips)


def _validate(fabric, cfg: TrainConfig, run: Run, val_data, logger: _MetricsLogger) -> None:
    reduce = ConfusionMeter.reduce if run.world_size > 1 else None
    if is_video_model(run.model):
        # Video methods are scored as they run: causally over whole clips (the reported metric).
        options = EvalOptions(resize=cfg.data.resize, crop=cfg.data.val_crop, tc_protocols=())
        evaluator = evaluate_video(
            run.model,
            _Shard(val_data, run.rank, run.world_size),
            options=options,
            device=fabric.device,
            show_progress=run.rank == 0,
        )
        meter = reduce(evaluator.confusion) if reduce is not None else evaluator.confusion
    else:
        meter = evaluate_segmenter(
            run.model,
            val_data,
            resize=cfg.data.resize,
            crop=cfg.data.val_crop,
            device=fabric.device,
            rank=run.rank,
            world_size=run.world_size,
            reduce=reduce,
            show_progress=run.rank == 0,
        )
    result = scores(meter, val_data.info.class_names)
    record = {
        "step": run.step,
        "epoch": run.epoch,
        "val_miou": result["miou"],
        "val_wiou": result["wiou"],
        "val_pixel_accuracy": result["pixel_accuracy"],
    }
    logger.log(record)
    run.history.append(record)
    miou = result["miou"] if result["miou"] is not None else -1.0
    improved = run.best is None or miou > run.best["val_miou"]
    if run.rank == 0:
        losses = [r["loss"] for r in run.history if "loss" in r]
        log.info(
            "epoch %d/%d (step %d): train loss %.4f, val mIoU %.2f%%%s",
            run.epoch,
            cfg.trainer.epochs,
            run.step,
            losses[-1] if losses else float("nan"),
            100 * miou,
            " (best)" if improved else "",
        )
    if improved:
        run.best = {"val_miou": miou, "epoch": run.epoch, "step": run.step}
        if run.rank == 0:
            save_weights(
                run.run_dir / BEST_FILE,
                run.model.state_dict(),
                {**run.best, "num_classes": run.model.num_classes},
            )
            with atomic_write(run.run_dir / BEST_INFO_FILE, "w") as handle:
                json.dump({**run.best, "scores": result}, handle, indent=2)
    fabric.barrier()


class _MetricsLogger:
    """Appends records to ``metrics.jsonl`` (and TensorBoard) on rank 0."""

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool) -> None:
        self.path = run_dir / METRICS_FILE
        self.enabled = enabled
        self.writer = None
        self.start = time.time()
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    "trainer.tensorboard=true needs TensorBoard: pip install 'vidseg[tb]'"
                ) from None
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps({**record, "time": round(time.time() - self.start, 3)}) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, int | float):
                    self.writer.add_scalar(key.replace("val_", "val/"), value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
