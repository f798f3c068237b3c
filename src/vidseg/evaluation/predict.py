"""Prediction on unlabelled video: a video file or a folder of frames in, label PNGs and an
overlay video out; with two models, a side-by-side comparison video.

Models run causally through the streaming interface, one frame at a time, so a long video is
never held in memory. Frames are numbered from 0 in input order.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from vidseg.errors import DataError
from vidseg.models.streaming import VideoModel
from vidseg.utils.console import progress_bar
from vidseg.utils.io import read_rgb, write_png
from vidseg.utils.video import VideoWriter, iter_video, video_fps
from vidseg.visualize import label_text, overlay

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_NUMBER = re.compile(r"(\d+)")


@dataclass
class Predictor:
    """One model to run: a display name, the model, and the palette (C, 3) of its classes."""

    name: str
    model: VideoModel
    palette: np.ndarray


def frame_files(folder: Path) -> list[Path]:
    """Image files of ``folder`` in frame order: by the last number in the name, then the name."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise DataError(f"{folder}: no frames (.png or .jpg files) in the folder")

    def key(path: Path) -> tuple[int, str]:
        numbers = _NUMBER.findall(path.stem)
        return (int(numbers[-1]) if numbers else -1, path.name)

    return sorted(files, key=key)


def input_frames(path: Path) -> tuple[Iterator[np.ndarray], int | None, float | None]:
    """(frames, count or None if unknown, fps or None) of a video file or a folder of frames."""
    if path.is_dir():
        files = frame_files(path)
        return (read_rgb(f) for f in files), len(files), None
    if not path.exists():
        raise DataError(f"{path}: no such video file or frame folder")
    return iter_video(path), None, video_fps(path)


def _resize(image: np.ndarray, size: Sequence[int] | None) -> np.ndarray:
    if size is None or tuple(image.shape[:2]) == tuple(size):
        return image
    return cv2.resize(image, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


@torch.no_grad()
def predict_video(
    predictors: Sequence[Predictor],
    source: Path,
    out: Path,
    *,
    resize: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    fps: float | None = None,
    write_labels: bool = True,
    write_video: bool = True,
    show_progress: bool = True,
) -> dict[str, object]:
    """Run each predictor over ``source`` and write into ``out``:

    - ``labels/<name>/<n>.png``: uint8 class ids of frame n (one folder per model);
    - ``overlay.mp4`` (one model) or ``compare.mp4`` (several, side by side with captions).

    ``resize`` (H, W) resizes the frames first. Returns a summary (frames, files, fps).
    """
    if not predictors:
        raise ValueError("predict_video needs at least one model")
    device = torch.device(device)
    frames, total, source_fps = input_frames(source)
    fps = fps or source_fps or 15.0
    states = [p.model.init_state() for p in predictors]
    for p in predictors:
        p.model.eval()
    video_name = "overlay.mp4" if len(predictors) == 1 else "compare.mp4"
    sink = VideoWriter(out / video_name, fps) if write_video else contextlib.nullcontext()
    count = 0
    with progress_bar(transient=True) as progress, sink as writer:
        task = progress.add_task("predicting", total=total, visible=show_progress)
        for image in frames:
            image = _resize(image, resize)
            frame = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
            panels = []
            for i, p in enumerate(predictors):
                logits, states[i] = p.model.step(frame.to(device), states[i])
                pred = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
                if write_labels:
                    write_png(out / "labels" / p.name / f"{count:06d}.png", pred)
                panel = overlay(image, pred, p.palette)
                panels.append(label_text(panel, p.name) if len(predictors) > 1 else panel)
            if writer is not None:
                writer.write(np.concatenate(panels, axis=1))
            count += 1
            progress.advance(task)
    log.info("predicted %d frames of %s into %s", count, source, out)
    return {
        "source": str(source),
        "frames": count,
        "fps": fps,
        "models": [p.name for p in predictors],
        "video": str(out / video_name) if write_video else None,
        "labels": str(out / "labels") if write_labels else None,
    }
