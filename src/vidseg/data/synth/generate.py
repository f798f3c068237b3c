"""Generate synthetic aerial clips and write them as a dataset in the clip-folder layout."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vidseg.data.classes import IGNORE_INDEX, UAVID_SSP_CLASSES
from vidseg.data.info import DATASET_FILE, DatasetInfo, write_dataset_info
from vidseg.data.synth.actors import populate
from vidseg.data.synth.camera import fly
from vidseg.data.synth.config import SynthConfig, make_config
from vidseg.data.synth.degrade import Degrader
from vidseg.data.synth.render import Renderer
from vidseg.data.synth.world import build_world
from vidseg.errors import ConfigError
from vidseg.geometry.homography import apply_homography
from vidseg.utils.console import progress_bar
from vidseg.utils.io import atomic_write, encode_png

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
FOOTPRINT_M = 112.0  # ground covered by the shorter image side at the nominal altitude, metres
SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
NUM_CLASSES = len(UAVID_SSP_CLASSES)


@dataclass
class SynthFrame:
    """One generated frame with its exact ground truth."""

    index: int
    image: np.ndarray  # (h, w, 3) uint8 RGB, degraded
    labels: np.ndarray  # (h, w) uint8 class ids, 255 = clutter (ignore)
    homography: np.ndarray  # (3, 3) float64, maps frame index-1 to this frame (identity for 0)
    flow: np.ndarray | None  # (h, w, 2) float32 backward flow to frame index-1 (None for 0)
    flow_valid: np.ndarray | None  # (h, w) bool: the flow's target is visible in frame index-1


def is_labelled(n: int, every: int) -> bool:
    """Whether frame ``n`` carries a label when one frame in ``every`` is labelled."""
    return (n + 1) % every == 0


def clip_id(split: str, index: int) -> str:
    return f"{split}-{index:03d}"


def iter_clip(
    cfg: SynthConfig, split: str, index: int, with_flow: bool = True
) -> Iterator[SynthFrame]:
    """Generate clip ``index`` of ``split`` frame by frame (deterministic in seed, split, index)."""
    if split not in _SPLIT_CODE:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    ss = np.random.SeedSequence([cfg.seed, _SPLIT_CODE[split], index, GENERATOR_VERSION])
    world_rng, camera_rng, actor_rng, degrade_rng = (np.random.default_rng(s) for s in ss.spawn(4))
    h, w = cfg.size
    ppm = min(h, w) / FOOTPRINT_M
    path = fly(cfg.frames, cfg.size, ppm, cfg.fps, camera_rng, motion=cfg.motion)
    world = build_world(path.world_size, ppm, world_rng)
    actors = populate(world, cfg.frames, cfg.fps, actor_rng)
    renderer = Renderer(world, actors, path, cfg.size)
    degrader = Degrader(
        cfg.frames, cfg.size, path.world_size, ppm, cfg.fps, degrade_rng, cfg.degrade
    )
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    prev_layers = None
    for n in range(cfg.frames):
        clean = renderer.render(n)
        hom = path.prev_to_cur(n)
        motion = apply_homography(hom, centre) - centre
        image = degrader.apply(n, clean.rgb, path.world_to_image[n], motion)
        flow = valid = None
        if with_flow and prev_layers is not None:
            flow, valid = renderer.flow(n, clean.layers, prev_layers)
        prev_layers = clean.layers
        yield SynthFrame(n, image, clean.labels, hom, flow, valid)


@dataclass
class ClipSummary:
    clip: str
    split: str
    frames: int
    labelled: int
    class_pixels: list[int]  # per class id 0..C-1, then ignore, over labelled frames
    render_seconds: float
    total_seconds: float


def write_clip(
    cfg: SynthConfig, split: str, index: int, clips_dir: Path, progress: Any = None
) -> ClipSummary:
    """Generate one clip into ``clips_dir/<clip id>/`` and return its statistics.

    Files are written directly (no per-file rename and fsync): the whole dataset is built in a
    temporary folder that :func:`synthesize` moves into place only when it is complete.
    """
    cid = clip_id(split, index)
    root = clips_dir / cid
    for sub in ("frames", "labels", "flow", "flow_valid"):
        if sub.startswith("flow") and not cfg.flow:
            continue
        (root / sub).mkdir(parents=True, exist_ok=True)
    every = cfg.label_every if split == "train" else cfg.eval_label_every
    counts = np.zeros(NUM_CLASSES + 1, np.int64)
    homs = np.empty((cfg.frames, 3, 3))
    labelled = 0
    render_s = 0.0
    start = time.perf_counter()
    frames = iter_clip(cfg, split, index, with_flow=cfg.flow)
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        render_s += time.perf_counter() - t0
        if frame is None:
            break
        n = frame.index
        name = f"{n:06d}"
        if cfg.image_format == "png":
            (root / "frames" / f"{name}.png").write_bytes(encode_png(frame.image))
        else:
            _ok, buf = cv2.imencode(".jpg", frame.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            (root / "frames" / f"{name}.jpg").write_bytes(buf.tobytes())
        if is_labelled(n, every):
            (root / "labels" / f"{name}.png").write_bytes(encode_png(frame.labels))
            hist = np.bincount(frame.labels.ravel(), minlength=256)
            counts[:NUM_CLASSES] += hist[:NUM_CLASSES]
            counts[NUM_CLASSES] += hist[IGNORE_INDEX]
            labelled += 1
        if frame.flow is not None:
            np.save(root / "flow" / f"{name}.npy", frame.flow.astype(np.float16))
            valid = encode_png(frame.flow_valid.astype(np.uint8) * 255)
            (root / "flow_valid" / f"{name}.png").write_bytes(valid)
        homs[n] = frame.homography
        if progress is not None:
            progress()
    np.save(root / "homographies.npy", homs)
    return ClipSummary(
        cid, split, cfg.frames, labelled, counts.tolist(), render_s, time.perf_counter() - start
    )


def _write_clip_job(args: tuple[SynthConfig, str, int, Path]) -> ClipSummary:
    cv2.setNumThreads(0)  # sequential: the pool already runs one process per core
    return write_clip(*args)


@dataclass
class SynthSummary:
    """What :func:`synthesize` produced, with timings measured on this machine."""

    out: str
    config: dict[str, Any]
    clips: list[ClipSummary] = field(default_factory=list)
    seconds: float = 0.0

    def frames(self) -> int:
        return sum(c.frames for c in self.clips)

    def class_frequency(self, split: str | None = None) -> dict[str, float]:
        """Pixel share of each class (and of ignore) over the labelled frames of ``split``."""
        total = np.zeros(NUM_CLASSES + 1, np.int64)
        for c in self.clips:
            if split is None or c.split == split:
                total += np.asarray(c.class_pixels)
        names = [cls.name for cls in UAVID_SSP_CLASSES] + ["ignore (clutter)"]
        denom = max(int(total.sum()), 1)
        return {name: float(v) / denom for name, v in zip(names, total, strict=True)}

    def to_dict(self) -> dict[str, Any]:
        render = sum(c.render_seconds for c in self.clips)
        return {
            "out": self.out,
            "config": self.config,
            "frames": self.frames(),
            "seconds": round(self.seconds, 3),
            "frames_per_second": round(self.frames() / max(self.seconds, 1e-9), 2),
            "render_frames_per_second": round(self.frames() / max(render, 1e-9), 2),
            "class_frequency": {
                s: self.class_frequency(s) for s in SPLITS if any(c.split == s for c in self.clips)
            },
            "clips": [c.__dict__ for c in self.clips],
        }


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"output directory {out} is not empty; "
                "pass --overwrite to replace the dataset in it"
            )
        if not (out / DATASET_FILE).is_file():
            raise ConfigError(
                f"refusing to overwrite {out}: it is not empty and holds no {DATASET_FILE}, "
                "so it does not look like a vidseg dataset"
            )


def synthesize(
    out: str | os.PathLike[str],
    *,
    clips: int = 6,
    frames: int = 60,
    size: int | tuple[int, int] | str = 256,
    label_every: int = 10,
    seed: int = 0,
    overwrite: bool = False,
    show_progress: bool = True,
    **options: Any,
) -> Path:
    """Generate a synthetic aerial video dataset at ``out`` and return its path.

    ``options`` are the other fields of :class:`SynthConfig` (``eval_label_every``, ``val_clips``,
    ``test_clips``, ``fps``, ``degrade``, ``motion``, ``image_format``, ``flow``, ``workers``). The
    dataset is written to a temporary folder beside ``out`` and moved into place at the end, so an
    interrupted run leaves no partial dataset. See :func:`synthesize_with_summary` for timings and
    class statistics.
    """
    return synthesize_with_summary(
        out,
        clips=clips,
        frames=frames,
        size=size,
        label_every=label_every,
        seed=seed,
        overwrite=overwrite,
        show_progress=show_progress,
        **options,
    )[0]


def synthesize_with_summary(
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    show_progress: bool = True,
    **fields_: Any,
) -> tuple[Path, SynthSummary]:
    """:func:`synthesize`, also returning a :class:`SynthSummary`."""
    cfg = make_config(**fields_)
    out = Path(out)
    _check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    summary = SynthSummary(str(out), cfg.to_dict())
    start = time.perf_counter()
    jobs = [
        (cfg, split, i, tmp / "clips") for split in SPLITS for i in range(cfg.split_sizes()[split])
    ]
    try:
        with progress_bar() as progress:
            task = progress.add_task("synthesising", total=len(jobs) * cfg.frames)
            if not show_progress:
                progress.update(task, visible=False)
            if cfg.workers == 1:
                for job in jobs:
                    summary.clips.append(write_clip(*job, progress=lambda: progress.advance(task)))
            else:
                with ProcessPoolExecutor(
                    min(cfg.workers, len(jobs)), mp_context=get_context("spawn")
                ) as pool:
                    for result in pool.map(_write_clip_job, jobs):
                        summary.clips.append(result)
                        progress.advance(task, cfg.frames)
        _write_index(tmp, cfg)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary.seconds = time.perf_counter() - start
    log.info(
        "wrote %d clips, %d frames to %s in %.1f s",
        len(summary.clips),
        summary.frames(),
        out,
        summary.seconds,
    )
    return out, summary


def _write_index(root: Path, cfg: SynthConfig) -> None:
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for split, count in cfg.split_sizes().items():
        if count == 0:  # an empty split file would be an error to open; leave it out
            continue
        with atomic_write(root / "splits" / f"{split}.txt", "w") as handle:
            handle.writelines(f"{clip_id(split, i)}\n" for i in range(count))
    info = DatasetInfo(
        name="synthetic-aerial",
        classes=UAVID_SSP_CLASSES,
        ignore_index=IGNORE_INDEX,
        fps=cfg.fps,
        # Every setting that shapes the data (not ``workers``, which only changes the speed).
        extra={
            "synthetic": {
                "generator_version": GENERATOR_VERSION,
                **{k: v for k, v in cfg.to_dict().items() if k != "workers"},
            }
        },
    )
    write_dataset_info(root, info)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing dataset there is removed only after the swap."""
    if out.is_dir() and any(out.iterdir()):
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            out.rmdir()
        os.replace(tmp, out)
