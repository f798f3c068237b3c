"""Reader of the canonical "clip folder" dataset layout (see docs/data-pipeline.md).

```
ROOT/dataset.yaml
ROOT/splits/<split>.txt              one clip id per line
ROOT/clips/<clip>/frames/<n>.png     RGB frames (.png, .jpg or .jpeg); n = integer frame number
ROOT/clips/<clip>/labels/<n>.png     uint8 class ids, ignore_index = ignore; labelled frames only
ROOT/clips/<clip>/homographies.npy   optional (N, 3, 3), entry i maps frames[i] - 1 to frames[i]
ROOT/clips/<clip>/flow/<n>.npy       optional (H, W, 2) float16/32 flow from frame n to frame n - 1
ROOT/clips/<clip>/flow_valid/<n>.png optional uint8, non-zero where that flow's target is visible
```

Frame numbers may have gaps. The previous frame of ``n`` is ``n - 1`` of the same clip when that
frame exists and nothing otherwise: no wrap-around, no substitute.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np

from vidseg.data.info import DatasetInfo, read_dataset_info
from vidseg.errors import DataError
from vidseg.utils.io import load_npy, read_gray, read_rgb

logger = logging.getLogger(__name__)

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_SUFFIXES = (".png",)
FLOW_SUFFIXES = (".npy",)
HOMOGRAPHY_FILE = "homographies.npy"


@dataclass(frozen=True)
class _ClipIndex:
    """What one directory scan of a clip found: file names by frame number."""

    frames: tuple[int, ...]
    labelled_frames: tuple[int, ...]
    frame_files: dict[int, str]
    label_files: dict[int, str]
    flow_files: dict[int, str]
    flow_valid_files: dict[int, str]
    has_homographies: bool


def _scan_numbered(directory: Path, suffixes: tuple[str, ...], kind: str) -> dict[int, str]:
    """Map frame number -> file name for ``directory/<digits><suffix>``; dotfiles are skipped.

    Any other entry, or two files with the same number, raises DataError naming the file(s).
    """
    found: dict[int, str] = {}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return found
    except NotADirectoryError:
        raise DataError(f"{directory}: expected a directory of {kind} files") from None
    for entry in entries:
        name = entry.name
        # Temporary files of atomic writes (and editor/OS droppings) start with a dot.
        if name.startswith("."):
            continue
        stem, suffix = os.path.splitext(name)
        if (
            suffix.lower() not in suffixes
            or not (stem.isascii() and stem.isdigit())
            or not entry.is_file()
        ):
            raise DataError(
                f"{directory / name}: unexpected entry in a {kind} folder "
                f"(expected <frame number>{'|'.join(suffixes)})"
            )
        number = int(stem)
        if number in found:
            raise DataError(
                f"{directory / name}: frame number {number} already used by "
                f"{directory / found[number]}"
            )
        found[number] = name
    return found


class Clip:
    """One clip of a clip-folder dataset: frames, optional labels, homographies and flows.

    Frame numbers are integers (sorted, gaps allowed). The directory is scanned once, on first
    use; images are read on demand. Instances hold no open files and pickle cheaply.
    """

    def __init__(self, clip_id: str, directory: Path, num_classes: int, ignore_index: int) -> None:
        self.id = clip_id
        self.dir = Path(directory)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._index: _ClipIndex | None = None
        self._size: tuple[int, int] | None = None
        self._homographies: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Clip({self.id!r}, {str(self.dir)!r})"

    # -- index -------------------------------------------------------------------------------

    @property
    def _files(self) -> _ClipIndex:
        if self._index is None:
            self._index = self._scan()
        return self._index

    def _scan(self) -> _ClipIndex:
        frames_dir = self.dir / "frames"
        frame_files = _scan_numbered(frames_dir, FRAME_SUFFIXES, "frame")
        if not frame_files:
            raise DataError(f"clip '{self.id}' has no frames: {frames_dir} is missing or empty")
        label_files = _scan_numbered(self.dir / "labels", LABEL_SUFFIXES, "label")
        flow_files = _scan_numbered(self.dir / "flow", FLOW_SUFFIXES, "flow")
        valid_files = _scan_numbered(self.dir / "flow_valid", LABEL_SUFFIXES, "flow validity")
        for kind, files, sub in (
            ("label", label_files, "labels"),
            ("flow", flow_files, "flow"),
            ("flow validity", valid_files, "flow_valid"),
        ):
            for n in sorted(files):
                if n not in frame_files:
                    raise DataError(
                        f"{self.dir / sub / files[n]}: {kind} file for frame {n}, "
                        f"but {frames_dir} has no frame {n}"
                    )
        return _ClipIndex(
            frames=tuple(sorted(frame_files)),
            labelled_frames=tuple(sorted(label_files)),
            frame_files=frame_files,
            label_files=label_files,
            flow_files=flow_files,
            flow_valid_files=valid_files,
            has_homographies=(self.dir / HOMOGRAPHY_FILE).is_file(),
        )

    @property
    def frames(self) -> tuple[int, ...]:
        """Sorted frame numbers."""
        return self._files.frames

    @property
    def labelled_frames(self) -> tuple[int, ...]:
        """Sorted numbers of the frames that have a label file."""
        return self._files.labelled_frames

    def __len__(self) -> int:
        return len(self._files.frames)

    def has_frame(self, n: int) -> bool:
        return n in self._files.frame_files

    def has_label(self, n: int) -> bool:
        return n in self._files.label_files

    def previous(self, n: int) -> int | None:
        """``n - 1`` if that frame exists in this clip, else None (never another frame)."""
        return n - 1 if n - 1 in self._files.frame_files else None

    def frame_path(self, n: int) -> Path:
        self._require(n)
        return self.dir / "frames" / self._files.frame_files[n]

    def label_path(self, n: int) -> Path | None:
        self._require(n)
        name = self._files.label_files.get(n)
        return None if name is None else self.dir / "labels" / name

    def _require(self, n: int) -> None:
        if n not in self._files.frame_files:
            raise DataError(f"clip '{self.id}' has no frame {n} (in {self.dir / 'frames'})")

    # -- data --------------------------------------------------------------------------------

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the clip's frames, read from the first frame on first use."""
        if self._size is None:
            h, w = read_rgb(self.frame_path(self.frames[0])).shape[:2]
            self._size = (h, w)
        return self._size

    def image(self, n: int) -> np.ndarray:
        """Frame ``n`` as HxWx3 uint8 RGB."""
        path = self.frame_path(n)
        image = read_rgb(path)
        if self._size is None and n == self.frames[0]:
            self._size = (image.shape[0], image.shape[1])
        elif image.shape[:2] != self.size:
            raise DataError(
                f"{path}: frame is {_hw(image.shape)} but the first frame "
                f"{self.frame_path(self.frames[0])} is {_hw(self.size)}"
            )
        return image

    def label(self, n: int) -> np.ndarray | None:
        """Label of frame ``n`` as HxW uint8 class ids, or None if the frame is unlabelled.

        Every value must be a class id (< num_classes) or ignore_index; anything else raises.
        """
        path = self.label_path(n)
        if path is None:
            return None
        label = read_gray(path)
        if label.shape != self.size:
            raise DataError(
                f"{path}: label is {_hw(label.shape)} but frame {self.frame_path(n)} "
                f"is {_hw(self.size)}"
            )
        counts = np.bincount(label.ravel(), minlength=256)
        counts[: self.num_classes] = 0
        counts[self.ignore_index] = 0
        bad = np.flatnonzero(counts)
        if bad.size:
            raise DataError(
                f"{path}: invalid class id {int(bad[0])} ({int(counts[bad[0]])} pixels); "
                f"valid ids are 0..{self.num_classes - 1} and ignore {self.ignore_index}"
            )
        return label

    def homography(self, n: int) -> np.ndarray | None:
        """(3, 3) float64 homography mapping frame ``n - 1`` to frame ``n``.

        None when frame ``n - 1`` does not exist or the clip has no homographies.npy.
        """
        self._require(n)
        if self.previous(n) is None or not self._files.has_homographies:
            return None
        if self._homographies is None:
            self._homographies = self._load_homographies()
        position = bisect.bisect_left(self._files.frames, n)
        h = self._homographies[position].copy()
        if not np.all(np.isfinite(h)) or h[2, 2] == 0:
            raise DataError(
                f"{self.dir / HOMOGRAPHY_FILE}: entry {position} (frame {n}) is not a valid "
                "homography (non-finite values or h[2,2] = 0)"
            )
        return h

    def _load_homographies(self) -> np.ndarray:
        path = self.dir / HOMOGRAPHY_FILE
        array = load_npy(path)
        expected = (len(self._files.frames), 3, 3)
        if array.shape != expected:
            raise DataError(
                f"{path}: shape {array.shape}, expected {expected} (one 3x3 matrix per frame)"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise DataError(f"{path}: dtype {array.dtype}, expected floating point")
        return array.astype(np.float64, copy=False)

    def flow(self, n: int) -> np.ndarray | None:
        """(H, W, 2) float32 flow from frame ``n`` to frame ``n - 1`` (channel 0 = dx).

        None when no flow file exists for ``n`` or frame ``n - 1`` does not exist.
        """
        self._require(n)
        name = self._files.flow_files.get(n)
        if name is None or self.previous(n) is None:
            return None
        path = self.dir / "flow" / name
        flow = load_npy(path)
        expected = (*self.size, 2)
        if flow.shape != expected:
            raise DataError(f"{path}: flow shape {flow.shape}, expected {expected} (H, W, 2)")
        if flow.dtype not in (np.float16, np.float32):
            raise DataError(f"{path}: flow dtype {flow.dtype}, expected float16 or float32")
        return flow.astype(np.float32, copy=False)

    def flow_valid(self, n: int) -> np.ndarray | None:
        """(H, W) bool mask: True where the flow of frame ``n`` points at a point visible in
        frame ``n - 1`` (not occluded, not out of view). None when the clip has no such file."""
        self._require(n)
        name = self._files.flow_valid_files.get(n)
        if name is None or self.previous(n) is None:
            return None
        path = self.dir / "flow_valid" / name
        mask = read_gray(path)
        if mask.shape != self.size:
            raise DataError(f"{path}: mask is {_hw(mask.shape)}, frames are {_hw(self.size)}")
        return mask > 0


def _hw(shape: Sequence[int]) -> str:
    return f"{shape[0]}x{shape[1]}"


class FolderDataset(Sequence[Clip]):
    """The clips of one split of a clip-folder dataset, in split-file order."""

    def __init__(self, root: Path, split: str, info: DatasetInfo, clips: Sequence[Clip]) -> None:
        self.root = Path(root)
        self.split = split
        self.info = info
        self._clips = tuple(clips)
        self._by_id = {c.id: i for i, c in enumerate(self._clips)}

    def __repr__(self) -> str:
        return f"FolderDataset({str(self.root)!r}, split={self.split!r}, clips={len(self)})"

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def ignore_index(self) -> int:
        return self.info.ignore_index

    @property
    def clip_ids(self) -> list[str]:
        return [c.id for c in self._clips]

    def clip(self, clip_id: str) -> Clip:
        """The clip called ``clip_id``; DataError if this split has none."""
        try:
            return self._clips[self._by_id[clip_id]]
        except KeyError:
            raise DataError(
                f"split '{self.split}' of {self.root} has no clip '{clip_id}'"
            ) from None

    def __len__(self) -> int:
        return len(self._clips)

    @overload
    def __getitem__(self, i: int) -> Clip: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Clip, ...]: ...
    def __getitem__(self, i: int | slice) -> Clip | tuple[Clip, ...]:
        return self._clips[i]

    def __iter__(self) -> Iterator[Clip]:
        return iter(self._clips)


def list_splits(root: str | os.PathLike[str]) -> list[str]:
    """Names of the splits of a dataset (stems of ``ROOT/splits/*.txt``), sorted."""
    splits_dir = Path(root) / "splits"
    if not splits_dir.is_dir():
        return []
    return sorted(p.stem for p in splits_dir.glob("*.txt") if not p.name.startswith("."))


def read_split_file(path: Path) -> list[tuple[int, str]]:
    """(line number, clip id) pairs of a split file: stripped, blank and '#' lines skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        clip_id = line.strip()
        if clip_id and not clip_id.startswith("#"):
            entries.append((number, clip_id))
    return entries


def open_dataset(root: str | os.PathLike[str], split: str) -> FolderDataset:
    """Open split ``split`` of the clip-folder dataset at ``root``.

    Reads dataset.yaml and the split file and scans every clip's folders once, so layout errors
    (missing clips, stray files, labels without frames) surface here as one-line DataErrors.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root not found: {root}")
    info = read_dataset_info(root)
    split_file = root / "splits" / f"{split}.txt"
    if not split_file.is_file():
        available = list_splits(root)
        listing = ", ".join(available) if available else "none"
        raise DataError(
            f"unknown split '{split}' for {root}: available splits (splits/*.txt): {listing}"
        )
    clips: list[Clip] = []
    num_frames = 0
    first_line: dict[str, int] = {}
    for line, clip_id in read_split_file(split_file):
        if clip_id in first_line:
            raise DataError(
                f"{split_file}:{line}: duplicate clip id '{clip_id}' "
                f"(already on line {first_line[clip_id]})"
            )
        first_line[clip_id] = line
        clip_dir = root / "clips" / clip_id
        if not clip_dir.is_dir():
            raise DataError(f"{split_file}:{line}: clip '{clip_id}' not found (no {clip_dir})")
        clip = Clip(clip_id, clip_dir, info.num_classes, info.ignore_index)
        # Scanning now (not on first use) makes layout errors surface at open time.
        num_frames += len(clip.frames)
        clips.append(clip)
    if not clips:
        raise DataError(f"{split_file}: lists no clips")
    logger.info(
        "opened %s split '%s': %d clips, %d frames, %d labelled",
        root,
        split,
        len(clips),
        num_frames,
        sum(len(c.labelled_frames) for c in clips),
    )
    return FolderDataset(root, split, info, clips)
