"""A tiny writer of clip-folder datasets for the data tests (independent of the generator).

Content is random but reproducible, and every array written is returned so that tests can
compare what the reader gives back with what was put on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vidseg.data.classes import ClassInfo
from vidseg.data.info import DatasetInfo, write_dataset_info
from vidseg.utils.io import save_npy, write_png


@dataclass
class ClipSpec:
    """What to write for one clip; ``flows`` lists the frames that get a flow file."""

    frames: Sequence[int]
    labelled: Sequence[int] = ()
    homographies: bool = False
    flows: Sequence[int] = ()
    size: tuple[int, int] = (12, 16)
    ext: str = ".png"
    digits: int = 6


@dataclass
class Written:
    """Everything the writer put on disk, keyed by (clip id, frame number)."""

    root: Path
    images: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    labels: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    flows: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    homographies: dict[str, np.ndarray] = field(default_factory=dict)


def make_info(num_classes: int = 3, ignore_index: int = 255) -> DatasetInfo:
    classes = tuple(ClassInfo(f"class{i}", (i * 40 % 256, 10, 200)) for i in range(num_classes))
    return DatasetInfo("fixture", classes, ignore_index, fps=10.0)


def frame_name(n: int, digits: int, ext: str) -> str:
    return f"{n:0{digits}d}{ext}"


def random_homography(rng: np.random.Generator) -> np.ndarray:
    h = np.eye(3) + rng.normal(0, 0.01, (3, 3)) * np.array([[1, 1, 50], [1, 1, 50], [1e-3] * 3])
    return h / h[2, 2]


def write_clip_folder(
    root: Path,
    clips: dict[str, ClipSpec],
    splits: dict[str, Sequence[str]] | None = None,
    num_classes: int = 3,
    seed: int = 0,
) -> Written:
    """Write dataset.yaml, the splits (default: one 'train' split with every clip) and clips."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    info = make_info(num_classes)
    write_dataset_info(root, info)
    for split, ids in (splits if splits is not None else {"train": list(clips)}).items():
        (root / "splits").mkdir(exist_ok=True)
        (root / "splits" / f"{split}.txt").write_text("".join(f"{c}\n" for c in ids))
    out = Written(root)
    for clip_id, spec in clips.items():
        clip_dir = root / "clips" / clip_id
        h, w = spec.size
        for n in spec.frames:
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            path = clip_dir / "frames" / frame_name(n, spec.digits, spec.ext)
            if spec.ext == ".png":
                write_png(path, image)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            out.images[clip_id, n] = image
        for n in spec.labelled:
            label = rng.integers(0, num_classes, (h, w), dtype=np.uint8)
            label[rng.random((h, w)) < 0.1] = info.ignore_index
            write_png(clip_dir / "labels" / frame_name(n, spec.digits, ".png"), label)
            out.labels[clip_id, n] = label
        for n in spec.flows:
            flow = rng.normal(0, 3, (h, w, 2)).astype(np.float16)
            save_npy(clip_dir / "flow" / frame_name(n, spec.digits, ".npy"), flow)
            out.flows[clip_id, n] = flow
        if spec.homographies:
            homs = np.stack([random_homography(rng) for _ in spec.frames])
            homs[0] = np.eye(3)
            save_npy(clip_dir / "homographies.npy", homs)
            out.homographies[clip_id] = homs
    return out
