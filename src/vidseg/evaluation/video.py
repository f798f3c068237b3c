"""Streaming evaluation of video models, and scoring of predictions from any tool.

A model runs causally over every clip of a split, frame by frame from the first frame, as it
would when deployed (:mod:`vidseg.models.streaming`); a gap in the frame numbers starts a fresh
state. Labelled frames go into one global confusion matrix (and one per clip); temporal metrics
use every frame. Only the current and the previous frame of a clip (plus a k-frame window for
mVC_k) are held in memory, so a split of any size streams.

``vidseg eval`` feeds an :class:`Evaluator` from a model; ``vidseg score`` feeds the same
:class:`Evaluator` from a folder of prediction PNGs, so both use one code path.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseg.data.folder import Clip, FolderDataset
from vidseg.data.transforms import VideoSample
from vidseg.errors import ConfigError, DataError
from vidseg.evaluation.image import eval_transform
from vidseg.flow import FlowEstimator
from vidseg.geometry import resize_flow
from vidseg.metrics import ConfusionMeter
from vidseg.metrics.temporal import (
    TemporalConsistencyMeter,
    VideoConsistency,
    VideoConsistencyMeter,
)
from vidseg.models.streaming import VideoModel
from vidseg.utils.console import progress_bar
from vidseg.utils.io import read_gray, write_png

log = logging.getLogger(__name__)

PRED_DIR = "predictions"


@dataclass
class EvalOptions:
    """How a split is scored; see docs/metrics.md for the protocols."""

    average: str = "union"  # mIoU rule: union, gt or all
    resize: Sequence[int] | None = None  # (H, W) frames and labels are resized to, as in training
    crop: Sequence[int] | None = None  # central crop (H, W) after resizing
    tc_protocols: tuple[str, ...] = ("ssp", "clean")
    vc_windows: tuple[int, ...] = (8, 16)
    occlusion: bool = False  # clean TC: also exclude pixels the flow's validity marks as occluded
    # forward: flow from frame i to i+1 (SSP); backward: from i+1 to i (stored ground truth)
    flow_direction: str = "forward"


@dataclass
class ClipResult:
    clip: str
    frames: int
    labelled: int
    confusion: ConfusionMeter
    tc: dict[str, float] = field(default_factory=dict)
    vc: dict[int, VideoConsistency] = field(default_factory=dict)
    # (frame number, TC of the pair ending there) per protocol: TC over time, for the plots
    tc_pairs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


class Evaluator:
    """Accumulates the scores of a split from (clip, frame, prediction, label, flow) updates.

    Call :meth:`start_clip`, then :meth:`add` for every frame of the clip in order, then
    :meth:`end_clip`; :meth:`result` gives the split's scores.
    """

    def __init__(self, num_classes: int, ignore_index: int, options: EvalOptions) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.options = options
        self.confusion = ConfusionMeter(num_classes, ignore_index)
        self.tc = self._tc_meters()
        # The same TC of the ground-truth labels, on pairs of labelled frames: the ceiling a
        # perfect model reaches under this flow (with ground-truth flow, the data's own limit).
        self.tc_labels = self._tc_meters()
        self.vc = {k: VideoConsistencyMeter(k) for k in options.vc_windows}
        self.clips: list[ClipResult] = []
        self._clip: ClipResult | None = None
        self._prev: np.ndarray | None = None
        self._prev_label: np.ndarray | None = None

    def _tc_meters(self) -> dict[str, TemporalConsistencyMeter]:
        direction = self.options.flow_direction
        return {
            p: TemporalConsistencyMeter(self.num_classes, protocol=p, direction=direction)
            for p in self.options.tc_protocols
        }

    def start_clip(self, clip_id: str) -> None:
        self._clip = ClipResult(clip_id, 0, 0, ConfusionMeter(self.num_classes, self.ignore_index))
        self._prev = None
        self._prev_label = None

    def add(
        self,
        pred: np.ndarray,
        label: np.ndarray | None,
        flow: np.ndarray | None = None,
        valid: np.ndarray | None = None,
        *,
        restart: bool = False,
        frame: int | None = None,
    ) -> None:
        """One frame: ``pred`` (H, W) class ids, its ``label`` or None, and the flow from the
        previous frame to this one (H, W, 2) with an optional validity mask; ``restart`` marks a
        gap in the frame numbers (no pair with the previous frame); ``frame`` is its number."""
        clip = self._require_clip()
        clip.frames += 1
        if label is not None:
            clip.labelled += 1
            self.confusion.update(pred, label)
            clip.confusion.update(pred, label)
        if self._prev is not None and not restart and flow is not None:
            for protocol, meter in self.tc.items():
                # The ssp protocol has no mask by definition; clean excludes the flow's invalid
                # pixels on request.
                mask = valid if protocol == "clean" and self.options.occlusion else None
                value = meter.update(self._prev, pred, flow, mask)
                where = frame if frame is not None else clip.frames - 1
                clip.tc_pairs.setdefault(protocol, []).append((where, value))
                if label is not None and self._prev_label is not None:
                    self.tc_labels[protocol].update(self._prev_label, label, flow, mask)
        for meter in self.vc.values():
            if label is None:
                meter.skip()
            else:
                meter.update(pred, label)
        self._prev = pred
        self._prev_label = label

    def end_clip(self) -> ClipResult:
        clip = self._require_clip()
        clip.tc = {p: meter.end_clip(clip.clip) for p, meter in self.tc.items()}
        for meter in self.tc_labels.values():
            meter.end_clip(clip.clip)
        clip.vc = {k: meter.end_clip(clip.clip) for k, meter in self.vc.items()}
        self.clips.append(clip)
        self._clip = None
        return clip

    def _require_clip(self) -> ClipResult:
        if self._clip is None:
            raise RuntimeError("Evaluator.start_clip must be called before adding frames")
        return self._clip

    def result(self, class_names: Sequence[str]) -> dict[str, Any]:
        """JSON-ready scores of the split (fractions; None where undefined)."""
        scores = self.confusion.compute(self.options.average)
        scores["per_class_iou"] = dict(zip(class_names, scores["per_class_iou"], strict=True))
        scores["tc"] = {p: _finite(meter.compute()) for p, meter in self.tc.items()}
        scores["tc_labels"] = {p: _finite(m.compute()) for p, m in self.tc_labels.items()}
        scores["mvc"] = {str(k): _finite(meter.compute()) for k, meter in self.vc.items()}
        scores["clips"] = [self.clip_row(c) for c in self.clips]
        return scores

    def clip_row(self, clip: ClipResult) -> dict[str, Any]:
        scores = clip.confusion.compute(self.options.average)
        row: dict[str, Any] = {
            "clip": clip.clip,
            "frames": clip.frames,
            "labelled": clip.labelled,
            "miou": scores["miou"],
            "pixel_accuracy": scores["pixel_accuracy"],
        }
        row.update({f"tc_{p}": _finite(v) for p, v in clip.tc.items()})
        row.update({f"vc{k}": _finite(v.value) for k, v in clip.vc.items()})
        return row


def prepare(
    image: np.ndarray, label: np.ndarray | None, options: EvalOptions, clip_id: str = ""
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize and crop one frame and its label exactly as training validation does."""
    transform = eval_transform(options.resize, options.crop)
    if transform is None:
        return image, label
    sample = VideoSample([image], [label], [], [], clip_id=clip_id)
    out = transform(sample, np.random.default_rng(0))
    return out.frames[0], out.labels[0]


def _flow_at(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Flow computed on native frames, brought to the evaluated size (values scaled)."""
    if flow.shape[:2] == size:
        return flow
    tensor = torch.from_numpy(flow).permute(2, 0, 1)[None]
    return resize_flow(tensor, size)[0].permute(1, 2, 0).numpy()


def clip_flow(
    estimator: FlowEstimator | None, clip: Clip, prev: int, cur: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The flow of the pair (``prev``, ``cur``) for the temporal metrics, and its validity.

    Estimators give the SSP direction, ``prev -> cur``, without a validity mask. The ``gt``
    estimator gives the stored direction, ``cur -> prev``, with the dataset's validity mask
    (``EvalOptions.flow_direction = "backward"``).
    """
    if estimator is None:
        return None, None
    if estimator.name == "gt":
        return estimator.pair(clip, cur, prev), clip.flow_valid(cur)
    return estimator.pair(clip, prev, cur), None


FramePredictions = Iterator[tuple[int, np.ndarray, np.ndarray | None]]


def stream_predictions(
    model: VideoModel, clip: Clip, options: EvalOptions, device: torch.device
) -> FramePredictions:
    """Run ``model`` causally over ``clip``: yields (frame number, prediction, label).

    The state starts afresh at the first frame and after every gap in the frame numbers.
    """
    state = model.init_state()
    previous: int | None = None
    for n in clip.frames:
        if previous is not None and clip.previous(n) != previous:
            state = model.init_state()
        image, label = prepare(clip.image(n), clip.label(n), options, clip.id)
        frame = torch.from_numpy(image).permute(2, 0, 1)[None].to(device)
        logits, state = model.step(frame, state)
        previous = n
        yield n, logits.argmax(1)[0].to(torch.uint8).cpu().numpy(), label


def read_predictions(
    pred_dir: Path, clip: Clip, options: EvalOptions, num_classes: int
) -> FramePredictions:
    """The prediction PNGs of ``clip`` in ``pred_dir``, checked: yields (n, prediction, label)."""
    for n in clip.frames:
        path = pred_dir / clip.id / f"{n:06d}.png"
        if not path.is_file():
            raise DataError(f"{path}: missing prediction for frame {n} of clip {clip.id}")
        pred = read_gray(path)
        if pred.size and int(pred.max()) >= num_classes:
            raise DataError(
                f"{path}: class id {int(pred.max())} is not one of the {num_classes} classes "
                "(predictions hold class ids, not colours)"
            )
        _, label = prepare(clip.image(n), clip.label(n), options, clip.id)
        if label is not None and pred.shape != label.shape:
            raise DataError(
                f"{path}: prediction is {pred.shape[0]}x{pred.shape[1]}, the label is "
                f"{label.shape[0]}x{label.shape[1]}"
            )
        yield n, pred, label


def score_split(
    dataset: FolderDataset,
    predict: Callable[[Clip], FramePredictions],
    *,
    options: EvalOptions | None = None,
    flow: FlowEstimator | None = None,
    on_frame: Callable[[Clip, int, np.ndarray], None] | None = None,
    description: str = "scoring",
    show_progress: bool = True,
) -> Evaluator:
    """Score the predictions ``predict(clip)`` yields for every clip of ``dataset``.

    ``flow`` estimates the motion for the temporal metrics (None: no temporal metrics);
    ``on_frame(clip, n, pred)`` sees every prediction (to save it, say).
    """
    options = options or EvalOptions()
    if flow is None:
        options = replace(options, tc_protocols=())
    evaluator = Evaluator(dataset.num_classes, dataset.ignore_index, options)
    total = sum(len(clip) for clip in dataset)
    with progress_bar(transient=True) as progress:
        task = progress.add_task(description, total=total, visible=show_progress)
        for clip in dataset:
            evaluator.start_clip(clip.id)
            previous: int | None = None
            for n, pred, label in predict(clip):
                restart = previous is not None and clip.previous(n) != previous
                motion, valid = None, None
                if previous is not None and not restart:
                    motion, valid = clip_flow(flow, clip, previous, n)
                    if motion is not None:
                        motion = _flow_at(motion, pred.shape)
                evaluator.add(pred, label, motion, valid, restart=restart, frame=n)
                if on_frame is not None:
                    on_frame(clip, n, pred)
                previous = n
                progress.advance(task)
            evaluator.end_clip()
    return evaluator


@torch.no_grad()
def evaluate_video(
    model: VideoModel,
    dataset: FolderDataset,
    *,
    options: EvalOptions | None = None,
    flow: FlowEstimator | None = None,
    device: torch.device | str = "cpu",
    save_predictions: Path | None = None,
    on_frame: Callable[[Clip, int, np.ndarray], None] | None = None,
    show_progress: bool = True,
) -> Evaluator:
    """Stream ``model`` over every clip of ``dataset`` and score it (see the module docstring).

    ``save_predictions`` writes ``<dir>/<clip>/<n>.png`` class-id maps; ``on_frame(clip, n,
    pred)`` sees every prediction too.
    """
    options = options or EvalOptions()
    device = torch.device(device)

    def save(clip: Clip, n: int, pred: np.ndarray) -> None:
        if save_predictions is not None:
            write_png(save_predictions / clip.id / f"{n:06d}.png", pred)
        if on_frame is not None:
            on_frame(clip, n, pred)

    was_training = model.training
    model.eval()
    try:
        return score_split(
            dataset,
            lambda clip: stream_predictions(model, clip, options, device),
            options=options,
            flow=flow,
            on_frame=save,
            description="evaluating",
            show_progress=show_progress,
        )
    finally:
        model.train(was_training)


def score_predictions(
    pred_dir: Path,
    dataset: FolderDataset,
    *,
    options: EvalOptions | None = None,
    flow: FlowEstimator | None = None,
    show_progress: bool = True,
) -> Evaluator:
    """Score a folder of prediction PNGs (``<pred_dir>/<clip>/<n>.png``, class ids) like
    :func:`evaluate_video` scores a model; every frame of every clip must have a prediction."""
    options = options or EvalOptions()
    if not pred_dir.is_dir():
        raise DataError(f"{pred_dir}: no such prediction folder")
    return score_split(
        dataset,
        lambda clip: read_predictions(pred_dir, clip, options, dataset.num_classes),
        options=options,
        flow=flow,
        show_progress=show_progress,
    )


def clips_csv(rows: list[dict[str, Any]]) -> str:
    """The per-clip rows as CSV text (empty cells where a value is undefined)."""
    buffer = io.StringIO()
    if not rows:
        return ""
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def check_options(options: EvalOptions) -> None:
    """ConfigError for an unknown averaging rule, TC protocol or window size."""
    from vidseg.metrics import AVERAGES

    if options.average not in AVERAGES:
        raise ConfigError(f"unknown mIoU average '{options.average}'; valid: {', '.join(AVERAGES)}")
    for k in options.vc_windows:
        if k < 2:
            raise ConfigError(f"mVC window sizes must be at least 2, got {k}")


def markdown_summary(result: dict[str, Any]) -> str:
    """A Markdown report of an evaluation result (the dict of :meth:`Evaluator.result`)."""
    pct = _pct
    lines = ["# Evaluation", ""]
    for key in ("run_dir", "predictions", "data", "split", "weights", "flow"):
        if key in result:
            lines.append(f"- {key}: `{result[key]}`")
    lines += [
        "",
        "| mIoU | WIoU | pixel accuracy | "
        + " | ".join(f"TC {p}" for p in result["tc"])
        + "".join(f" | mVC{k}" for k in result["mvc"])
        + " |",
        "|---" * (3 + len(result["tc"]) + len(result["mvc"])) + "|",
        f"| {pct(result['miou'])} | {pct(result['wiou'])} | {pct(result['pixel_accuracy'])} | "
        + " | ".join(pct(v) for v in result["tc"].values())
        + "".join(f" | {pct(v)}" for v in result["mvc"].values())
        + " |",
        "",
        f"mIoU rule: `{result['average']}`; {result['num_pixels']} labelled pixels. "
        "Values in %. Protocols: docs/metrics.md.",
        "",
        *(
            [
                "TC of the ground-truth labels under the same flow (the ceiling): "
                + ", ".join(f"{p} {pct(v)}" for p, v in result["tc_labels"].items()),
                "",
            ]
            if result.get("tc_labels")
            else []
        ),
        "| class | IoU |",
        "|---|---|",
    ]
    lines += [f"| {name} | {pct(v)} |" for name, v in result["per_class_iou"].items()]
    clips = result["clips"]
    if clips:
        columns = [k for k in clips[0] if k != "clip"]
        lines += ["", "| clip | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for row in clips:
            cells = [str(row[k]) if k in ("frames", "labelled") else pct(row[k]) for k in columns]
            lines.append(f"| {row['clip']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.2f}"


def evaluate_run(
    run_dir: str | Path,
    dataset: FolderDataset,
    *,
    flow: FlowEstimator | None,
    vc_windows: tuple[int, ...] = (8,),
    device: torch.device | str = "cpu",
    weights: str = "last",
) -> dict[str, Any]:
    """Stream the model of ``run_dir`` (image or video) over ``dataset`` and score it with the
    run's own resize and validation crop; :meth:`Evaluator.result` plus ``tc_ssp``,
    ``tc_clean`` and ``mvc<k>`` at the top level (the demo's and ``vidseg ablate``'s rows)."""
    from vidseg.models import as_video_model
    from vidseg.training.checkpoint import load_run_model

    model, cfg = load_run_model(run_dir, weights)
    direction = "backward" if flow is not None and flow.name == "gt" else "forward"
    options = EvalOptions(
        resize=cfg.data.resize,
        crop=cfg.data.val_crop,
        vc_windows=vc_windows,
        flow_direction=direction,
    )
    video = as_video_model(model).to(device)
    result = evaluate_video(
        video, dataset, options=options, flow=flow, device=device, show_progress=True
    ).result(dataset.info.class_names)
    for protocol, value in result["tc"].items():
        result[f"tc_{protocol}"] = value
    for k, value in result["mvc"].items():
        result[f"mvc{k}"] = value
    return result
