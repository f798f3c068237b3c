"""What one training step computes, per kind of run: the samples, the model's forward, the losses.

- image model, labels: cross-entropy on labelled frames (the image configs);
- image model, teacher (``distill.logits``): KL to the teacher on every ``distill.every``-th frame
  (the KD image baseline);
- video method (``video.method``), labels: windows of ``video.unroll + 1`` frames ending at a
  labelled frame, cross-entropy on the last fused output plus lambda times the temporal
  consistency loss between the last two outputs (SSP);
- video method, teacher: the same windows over all frames, KL on the last fused output and
  ``distill.prev_weight`` times KL on the previous output, against targets made consistent
  through flow, plus the temporal term (KD-SSP).

The losses come back as ``(sum term, its count, mean term)``: the trainer divides the sum by the
count all-reduced over processes (so N processes compute one process's gradient on the combined
batch) and adds the mean term, which DDP averages over processes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vidseg.data import labelled_samples, window_samples
from vidseg.data.folder import Clip
from vidseg.data.samples import SampleIndex
from vidseg.data.torch_data import ClipSampleDataset
from vidseg.data.transforms import Transform
from vidseg.errors import ConfigError
from vidseg.models import VideoModel
from vidseg.models.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from vidseg.training.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class StepLosses:
    """One step's losses: ``total = summed / all-reduced count + mean``; ``parts``: the terms
    and statistics to log, by metrics.jsonl key."""

    summed: Tensor
    count: Tensor
    mean: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)


def cross_entropy_sum(
    logits: Tensor, labels: Tensor, weight: Tensor | None, ignore_index: int
) -> tuple[Tensor, Tensor]:
    """(sum of per-pixel CE, its normaliser): the pixel count, or the summed class weights."""
    loss = torch.nn.functional.cross_entropy(
        logits.float(), labels, weight=weight, ignore_index=ignore_index, reduction="sum"
    )
    valid = labels != ignore_index
    if weight is None:
        count = valid.sum().to(loss.dtype)
    else:
        count = weight[labels[valid]].sum().to(loss.dtype)
    return loss, count


def imagenet_normalise(frames: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) frames as ImageNet-normalised floats (the scale SSP's weight sees)."""
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames.device).view(1, 3, 1, 1)
    return (frames.float() / 255.0 - mean) / std


class _TeacherDataset(ClipSampleDataset):
    """Adds the teacher's logits of the last ``frames`` frames of each sample: ``teacher``
    float16 (frames, C, h, w) and ``grid_to_frame`` float64 (3, 3)."""

    def __init__(self, *args: Any, teacher: Any, frames: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self.teacher_frames = frames

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        ref = self.samples[index]
        clip: Clip = self.dataset[ref.clip]
        numbers = ref.frames[-self.teacher_frames :]
        item["teacher"] = torch.from_numpy(
            np.stack([np.asarray(self.teacher.read(clip.id, n)) for n in numbers])
        )
        item["grid_to_frame"] = torch.from_numpy(self.teacher.grid_to_frame(clip.id))
        return item


def _flow_estimator(name: str, weights: str | None, device: torch.device) -> Any:
    from vidseg.flow import build

    options: dict[str, Any] = {}
    if name in ("raft", "raft_small"):
        options = {"weights": weights, "device": str(device)}
    return build(name, **options)


class Objective:
    """The samples, dataset and losses of the run ``cfg`` describes (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, num_classes: int, ignore_index: int) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.video = cfg.video.method != "none"
        self.window = cfg.video.unroll if self.video else 0
        self.teacher = None
        if cfg.distill.logits is not None:
            from vidseg.data.teacher_logits import TeacherLogits

            self.teacher = TeacherLogits(cfg.distill.logits)
        self.weight: Tensor | None = None
        self._flows: dict[str, Any] = {}

    # -- data ----------------------------------------------------------------------------------

    def samples(self, dataset: Sequence[Clip]) -> SampleIndex:
        """Labelled frames with their ``unroll`` predecessors, or (distillation) every
        ``distill.every``-th such window over all frames."""
        if self.teacher is not None:
            return window_samples(dataset, self.window, every=self.cfg.distill.every)
        return labelled_samples(dataset, num_prev=self.window)

    def dataset(
        self, dataset: Sequence[Clip], samples: SampleIndex, transform: Transform, seed: int
    ) -> ClipSampleDataset:
        """The torch dataset of ``samples``, with what the losses need loaded in the workers."""
        cfg = self.cfg
        labels = self.teacher is None or cfg.distill.label_weight > 0
        options: dict[str, Any] = {"seed": seed, "load_labels": labels}
        if self.video:
            options["load_homographies"] = True
            if cfg.video.homographies == "model":
                from vidseg.geometry.registration import Registrar, make_registration_config

                options["registrar"] = Registrar(
                    make_registration_config(**cfg.video.ssp.registration),
                    cache=cfg.video.homography_cache,
                )
            options["load_flows"] = cfg.loss.temporal.weight > 0 and cfg.loss.temporal.flow == "gt"
        if self.teacher is not None:
            self.teacher.check(dataset)
            self.teacher.verify()
            return _TeacherDataset(
                dataset,
                samples,
                transform,
                teacher=self.teacher,
                frames=2 if self.video else 1,
                **options,
            )
        return ClipSampleDataset(dataset, samples, transform, **options)

    def setup(self, device: torch.device) -> None:
        """Move the class weights to ``device`` and build the flow estimators there."""
        cfg = self.cfg
        if cfg.loss.class_weights is not None:
            if len(cfg.loss.class_weights) != self.num_classes:
                raise ConfigError(
                    f"loss.class_weights has {len(cfg.loss.class_weights)} values for "
                    f"{self.num_classes} classes"
                )
            self.weight = torch.tensor(cfg.loss.class_weights, dtype=torch.float32, device=device)
        tc = cfg.loss.temporal
        if self.video and tc.weight > 0 and tc.flow != "gt":
            self._flows["temporal"] = _flow_estimator(tc.flow, tc.flow_weights, device)
        if self.video and self.teacher is not None and cfg.distill.consistent:
            kd = cfg.distill
            self._flows["distill"] = _flow_estimator(kd.flow, kd.flow_weights, device)

    # -- losses --------------------------------------------------------------------------------

    def losses(self, model: nn.Module, batch: dict[str, Any], device: torch.device) -> StepLosses:
        """Run ``batch`` through ``model`` (the Fabric-wrapped module); the step's losses."""
        frames = batch["frames"].to(device)
        if not self.video:
            logits = model(frames[:, -1])
            return self._image_losses(logits, batch, device)
        homs = batch["homographies"].to(device).transpose(0, 1)
        out = model(frames.transpose(0, 1), homs)
        outputs = out["outputs"]
        cur, prev = outputs[-1], outputs[-2]
        if self.teacher is not None:
            result = self._distill(cur, prev, frames, batch, device)
        else:
            result = self._cross_entropy(cur, batch, device)
        tc = self.cfg.loss.temporal
        if tc.weight > 0:
            term = self._temporal(cur, prev, frames, batch, device)
            result.mean = result.mean + tc.weight * term
            result.parts["loss_tc"] = term
        # The mean weight of the propagated prediction, to watch the similarity op learn.
        result.parts["sim_mean"] = out["sims"][-1].mean()
        return result

    def _image_losses(self, logits: Tensor, batch: dict[str, Any], device: torch.device):
        if self.teacher is None:
            return self._cross_entropy(logits, batch, device)
        target = self._targets(batch, logits.shape[-2:], device)[:, -1]
        kd = self._kl(logits, target)
        return self._with_labels(logits, batch, device, kd, {"loss_kd": kd})

    def _with_labels(self, logits, batch, device, kd: Tensor, parts: dict[str, Tensor]):
        """The distillation terms plus ``distill.label_weight`` times the CE of the labelled
        samples (frames without a label are all ignore_index and add nothing)."""
        weight = self.cfg.distill.label_weight
        if weight == 0:
            return StepLosses(logits.new_zeros(()), logits.new_zeros(()), kd, parts)
        ce = self._cross_entropy(logits, batch, device)
        return StepLosses(weight * ce.summed, ce.count, kd, {**parts, **ce.parts})

    def _cross_entropy(self, logits: Tensor, batch: dict[str, Any], device) -> StepLosses:
        labels = batch["labels"][:, -1].to(device)
        summed, count = cross_entropy_sum(logits, labels, self.weight, self.ignore_index)
        zero = logits.new_zeros(())
        return StepLosses(summed, count, zero, {"loss_ce": summed / count.clamp(1)})

    def _kl(self, student: Tensor, teacher: Tensor) -> Tensor:
        from vidseg.losses.distillation import kd_loss

        kd = self.cfg.distill
        weights = self.weight if kd.class_weighted else None
        return kd_loss(
            student,
            teacher,
            temperature=kd.temperature,
            reduction=kd.reduction,
            class_weights=weights,
        )

    def _targets(self, batch: dict[str, Any], size: tuple[int, int], device) -> Tensor:
        """The teacher's logits on the augmented frames, (B, frames, C, H, W) float32."""
        from vidseg.losses.distillation import align_teacher

        teacher = batch["teacher"].to(device)
        grid = batch["grid_to_frame"].to(device)
        affine = batch["affine"].to(device)
        aligned = [
            align_teacher(teacher[:, i].float(), grid, affine, tuple(size))
            for i in range(teacher.shape[1])
        ]
        return torch.stack(aligned, dim=1)

    def _distill(self, cur, prev, frames, batch, device) -> StepLosses:
        from vidseg.losses.distillation import consistent_targets

        kd = self.cfg.distill
        targets = self._targets(batch, cur.shape[-2:], device)
        t_prev, t_cur = targets[:, 0], targets[:, 1]
        if kd.consistent:
            with torch.no_grad():
                estimator = self._flows["distill"]
                cur_frames, prev_frames = frames[:, -1], frames[:, -2]
                fw = estimator.batch(cur_frames, prev_frames).to(device)
                bw = estimator.batch(prev_frames, cur_frames).to(device)
                t_cur, t_prev = consistent_targets(
                    t_cur, t_prev, fw, bw, official=kd.official_consistency
                )
        term = self._kl(cur, t_cur)
        parts = {"loss_kd": term}
        if kd.prev_weight > 0:
            prev_term = self._kl(prev, t_prev)
            term = term + kd.prev_weight * prev_term
            parts["loss_kd_prev"] = prev_term
        return self._with_labels(cur, batch, device, term, parts)

    def _temporal(self, cur, prev, frames, batch, device) -> Tensor:
        from vidseg.losses import temporal_consistency_loss

        tc = self.cfg.loss.temporal
        cur_frames, prev_frames = frames[:, -1], frames[:, -2]
        with torch.no_grad():
            if tc.flow == "gt":
                flow = batch["flows"][:, -1].to(device)
            else:
                flow = self._flows["temporal"].batch(cur_frames, prev_frames).to(device)
        return temporal_consistency_loss(
            cur,
            prev,
            flow,
            imagenet_normalise(cur_frames),
            imagenet_normalise(prev_frames),
            official=tc.official,
            probabilities=tc.probabilities,
        )


def is_video_model(model: nn.Module) -> bool:
    """Whether ``model`` is a video method (trained on frame windows, validated by streaming)."""
    return isinstance(model, VideoModel)
