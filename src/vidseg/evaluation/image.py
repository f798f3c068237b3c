"""Scoring an image segmenter on the labelled frames of a split (global confusion matrix)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from vidseg.data import CenterCrop, Compose, Resize, labelled_samples
from vidseg.data.folder import FolderDataset
from vidseg.data.torch_data import ClipSampleDataset, collate_samples, worker_init_fn
from vidseg.metrics import ConfusionMeter
from vidseg.utils.console import progress_bar

log = logging.getLogger(__name__)


def eval_transform(resize: Sequence[int] | None, crop: Sequence[int] | None) -> Compose | None:
    """Resize (bilinear frames, nearest labels), then a central crop; None when neither is set."""
    ops: list[Any] = []
    if resize is not None:
        ops.append(Resize(tuple(resize)))
    if crop is not None:
        ops.append(CenterCrop(tuple(crop)))
    return Compose(ops) if ops else None


@torch.no_grad()
def evaluate_segmenter(
    model: nn.Module,
    dataset: FolderDataset,
    *,
    resize: Sequence[int] | None = None,
    crop: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    reduce: Callable[[ConfusionMeter], ConfusionMeter] | None = None,
    show_progress: bool = True,
) -> ConfusionMeter:
    """Confusion matrix of ``model``'s argmax over every labelled frame of ``dataset``.

    ``model`` maps uint8 (B, 3, H, W) frames to logits at the input size. Frames are sharded over
    ``world_size`` ranks (this rank takes every ``world_size``-th); ``reduce`` sums the per-rank
    matrices (e.g. ``ConfusionMeter.reduce`` under torch.distributed).
    """
    samples = labelled_samples(dataset, num_prev=0)
    refs = [samples[i] for i in range(rank, len(samples), world_size)]
    data = ClipSampleDataset(dataset, refs, eval_transform(resize, crop))
    loader = DataLoader(
        data,
        batch_size=1,
        num_workers=num_workers,
        collate_fn=collate_samples,
        worker_init_fn=worker_init_fn,
    )
    meter = ConfusionMeter(dataset.num_classes, dataset.ignore_index)
    was_training = model.training
    model.eval()
    with progress_bar(transient=True) as progress:
        task = progress.add_task("evaluating", total=len(loader), visible=show_progress)
        for item in loader:
            logits = model(item["frames"][:, -1].to(device))
            meter.update(logits.argmax(1).cpu(), item["labels"][:, -1])
            progress.advance(task)
    model.train(was_training)
    return reduce(meter) if reduce is not None else meter


def scores(
    meter: ConfusionMeter, class_names: Sequence[str], average: str = "union"
) -> dict[str, Any]:
    """JSON-ready scores (fractions; mIoU by the ``average`` rule), per-class IoU by class name."""
    result = meter.compute(average)
    result["per_class_iou"] = dict(zip(class_names, result["per_class_iou"], strict=True))
    return result
