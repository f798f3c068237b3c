"""Teacher logits on disk for knowledge distillation (KD-SSP): format, writer and reader.

The official KD-SSP code stores one ``.npz`` per frame holding the teacher's fp32 logits
upsampled to the full frame (C x 1440 x 2560 for UAVid, about 118 MB per frame, terabytes per
split). This format stores what the model actually computes instead: the decoder's stride-4
logits in float16, one ``.npy`` per clip, memory-mapped on reading. The full-size logits are only
the bilinear upsampling of the stride-4 ones, so nothing the teacher knows is lost.

Layout of an export folder::

    manifest.json      what was exported, how, and a checksum per clip (see below)
    <clip_id>.npy      (N, C, h, w) float16: the logits of the clip's N frames, in frame order

``manifest.json``: ``format`` ("vidseg-teacher-logits"), ``version`` (1), ``teacher``
(``run_dir``, ``weights`` and ``fingerprint``, the sha256 of the teacher's weights), ``dataset``
(``root``, ``split``), ``num_classes``, ``class_names``, ``dtype`` ("float16"), ``resolution``
and ``resize``, and ``clips``: per clip id, ``file``, ``frames`` (frame numbers), ``shape``,
``sha256`` (of the whole ``.npy`` file), ``frame_size`` (native H, W), ``input_size`` (H, W the
teacher saw) and ``grid_to_frame``.

``resolution``:

- ``"stride4"`` (default): the decoder's logits at stride 4 of the teacher input padded at the
  bottom/right to the backbone's size divisor, i.e. ``h, w = padded (H, W) / 4``.
  ``Segmenter.upsample_logits(torch.from_numpy(x), H, W)`` reproduces the teacher's full-size
  logits (up to float16 rounding).
- ``"full"``: the logits upsampled by the teacher to its input size (H, W).

The teacher input is the native frame, or the frame resized to ``resize`` (the teacher run's
``data.resize``, with the training resize of :func:`vidseg.data.transforms.resize`).
``grid_to_frame`` is the 3x3 map from logit-grid pixel coordinates to the native frame's pixel
coordinates (pixel-centre convention): ``resize_matrix(input -> native) @ inv(stride_matrix(4))``
for ``stride4`` and ``resize_matrix(input -> native)`` for ``full``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vidseg.errors import ConfigError, DataError
from vidseg.geometry.homography import resize_matrix, stride_matrix
from vidseg.utils.console import progress_bar
from vidseg.utils.io import atomic_write

if TYPE_CHECKING:
    from vidseg.data.folder import Clip, FolderDataset
    from vidseg.models.segmenter import Segmenter

logger = logging.getLogger(__name__)

FORMAT = "vidseg-teacher-logits"
VERSION = 1
MANIFEST = "manifest.json"
RESOLUTIONS = ("stride4", "full")
STRIDE = 4
DTYPE = np.float16
# The official format: one fp32 value per class and native pixel.
OFFICIAL_BYTES_PER_VALUE = 4

# Settings that must agree for an existing export folder to be resumed (not mixed).
_RESUME_KEYS = ("version", "resolution", "resize", "num_classes", "dtype")


def format_size(num_bytes: float) -> str:
    """A byte count in binary units: ``1.5 GiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(num_bytes), 0
    while abs(value) >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{value:.0f} B" if unit == 0 else f"{value:.1f} {units[unit]}"


def _npy_header(path: Path) -> tuple[tuple[int, ...], int] | None:
    """(shape, offset of the data) from a ``.npy`` header; None when the header is unreadable."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(handle)
            return tuple(shape), handle.tell()
    except (ValueError, OSError, EOFError):
        return None


def _data_bytes(shape: tuple[int, ...]) -> int:
    """Size of the float16 data of an array of ``shape``."""
    return int(np.prod(shape)) * np.dtype(DTYPE).itemsize


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def clip_file_name(clip_id: str) -> str:
    """File name of a clip's logits inside the export folder."""
    return f"{clip_id}.npy"


def grid_to_frame_matrix(
    resolution: str, input_size: tuple[int, int], frame_size: tuple[int, int]
) -> np.ndarray:
    """(3, 3) float64 map from logit-grid pixel coordinates to native frame pixel coordinates."""
    to_frame = resize_matrix(input_size, frame_size)
    if resolution == "stride4":
        return to_frame @ np.linalg.inv(stride_matrix(STRIDE))
    return to_frame


# -- manifest ----------------------------------------------------------------------------------


def _manifest_error(path: Path, message: str) -> DataError:
    return DataError(f"{path}: {message}")


def _check_clip_entry(path: Path, clip_id: str, entry: Any, num_classes: int) -> None:
    where = f"clips.{clip_id}"
    if not isinstance(entry, dict):
        raise _manifest_error(path, f"'{where}' is not an object")
    for key in ("file", "frames", "shape", "sha256", "frame_size", "input_size", "grid_to_frame"):
        if key not in entry:
            raise _manifest_error(path, f"'{where}' has no '{key}'")
    shape = entry["shape"]
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(v, int) for v in shape)):
        raise _manifest_error(path, f"'{where}.shape' must be [N, C, h, w], got {shape!r}")
    frames = entry["frames"]
    if not isinstance(frames, list) or len(frames) != shape[0]:
        raise _manifest_error(
            path, f"'{where}.frames' must list {shape[0]} frame numbers (shape {shape})"
        )
    if shape[1] != num_classes:
        raise _manifest_error(
            path, f"'{where}.shape' has {shape[1]} classes, num_classes is {num_classes}"
        )
    if np.asarray(entry["grid_to_frame"]).shape != (3, 3):
        raise _manifest_error(path, f"'{where}.grid_to_frame' must be a 3x3 matrix")


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated ``manifest.json`` of an export folder; DataError naming it otherwise."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"{path} not found: {Path(folder)} holds no teacher logits "
            "(write them with vidseg export-logits)"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _manifest_error(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _manifest_error(path, f"not a teacher-logits manifest (format '{FORMAT}')")
    if data.get("version") != VERSION:
        raise _manifest_error(
            path, f"format version {data.get('version')!r}, this vidseg reads version {VERSION}"
        )
    for key in ("num_classes", "class_names", "dtype", "resolution", "clips"):
        if key not in data:
            raise _manifest_error(path, f"no '{key}'")
    if data["dtype"] != np.dtype(DTYPE).name:
        raise _manifest_error(path, f"dtype '{data['dtype']}', expected '{np.dtype(DTYPE).name}'")
    if data["resolution"] not in RESOLUTIONS:
        raise _manifest_error(
            path, f"resolution '{data['resolution']}', expected one of {', '.join(RESOLUTIONS)}"
        )
    if not isinstance(data["clips"], dict):
        raise _manifest_error(path, "'clips' is not an object")
    for clip_id, entry in data["clips"].items():
        _check_clip_entry(path, clip_id, entry, data["num_classes"])
    return data


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    with atomic_write(folder / MANIFEST, "w") as handle:
        json.dump(manifest, handle, indent=1)
        handle.write("\n")


# -- writer ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_logits` produced; counts and sizes (bytes) over the dataset's clips."""

    out_dir: Path
    clips: int
    frames: int
    computed_clips: int
    skipped_clips: int
    bytes: int
    official_bytes: int

    @property
    def ratio(self) -> float:
        """How many times smaller than the official fp32 full-native-resolution format."""
        return self.official_bytes / max(self.bytes, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "clips": self.clips,
            "frames": self.frames,
            "computed_clips": self.computed_clips,
            "skipped_clips": self.skipped_clips,
            "bytes": self.bytes,
            "official_bytes": self.official_bytes,
            "ratio": self.ratio,
        }


def model_fingerprint(model: Any) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes, values): identifies a teacher."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{value.dtype}:{tuple(tensor.shape)};".encode())
        # Hashing the raw bytes works for every dtype, bfloat16 included (NumPy has none).
        digest.update(value.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _clip_done(folder: Path, entry: Mapping[str, Any] | None, expected: Mapping[str, Any]) -> bool:
    """True when ``entry`` (from the manifest) describes this clip as now wanted and its file is
    there with the recorded checksum."""
    if entry is None or any(entry.get(k) != v for k, v in expected.items()):
        return False
    path = folder / entry["file"]
    return path.is_file() and _sha256(path) == entry["sha256"]


def export_logits(
    segmenter: Segmenter,
    dataset: FolderDataset,
    out_dir: str | os.PathLike[str],
    *,
    resolution: str = "stride4",
    resize: tuple[int, int] | list[int] | None = None,
    device: Any = "cpu",
    teacher: Mapping[str, Any] | None = None,
    batch_size: int = 4,
) -> ExportSummary:
    """Write the teacher logits of every frame of ``dataset`` to ``out_dir`` (format above).

    ``resize`` (H, W) is the teacher's input size (its run's ``data.resize``; None: native
    frames). ``teacher`` is recorded in the manifest (e.g. ``run_dir`` and ``weights``), beside
    the weights' fingerprint. Resumable: a clip whose file matches the checksum in the manifest
    is skipped; each clip is written to a hidden temporary file, renamed, and only then recorded
    (the manifest is rewritten atomically after every clip), so an interrupted run never leaves
    a file that looks complete but is not. An existing folder made with other settings or
    another teacher is refused (ConfigError) rather than mixed. The model is moved to ``device``
    and put in eval mode; it runs under ``torch.no_grad``.
    """
    import torch

    if resolution not in RESOLUTIONS:
        raise ConfigError(f"resolution must be one of {', '.join(RESOLUTIONS)}; got '{resolution}'")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if segmenter.num_classes != dataset.num_classes:
        raise ConfigError(
            f"the teacher predicts {segmenter.num_classes} classes but {dataset.root} has "
            f"{dataset.num_classes}"
        )
    out = Path(out_dir)
    resize_hw = None if resize is None else (int(resize[0]), int(resize[1]))
    settings: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "teacher": {**(teacher or {}), "fingerprint": model_fingerprint(segmenter)},
        "dataset": {"root": str(Path(dataset.root).resolve()), "split": dataset.split},
        "num_classes": dataset.num_classes,
        "class_names": list(dataset.info.class_names),
        "dtype": np.dtype(DTYPE).name,
        "resolution": resolution,
        "resize": None if resize_hw is None else list(resize_hw),
    }
    clips: dict[str, Any] = {}
    if (out / MANIFEST).exists():
        previous = read_manifest(out)
        _check_resumable(out / MANIFEST, previous, settings)
        clips = dict(previous["clips"])
    manifest = {**settings, "clips": clips}
    out.mkdir(parents=True, exist_ok=True)

    segmenter = segmenter.to(device).eval()
    computed = skipped = 0
    with progress_bar() as progress, torch.no_grad():
        task = progress.add_task("teacher logits", total=sum(len(c) for c in dataset))
        for clip in dataset:
            frame_size = clip.size
            input_size = resize_hw or frame_size
            expected = {
                "file": clip_file_name(clip.id),
                "frames": list(clip.frames),
                "frame_size": list(frame_size),
                "input_size": list(input_size),
            }
            if _clip_done(out, clips.get(clip.id), expected):
                skipped += 1
                progress.advance(task, len(clip))
                continue
            # Forget the old record first: from here on its file may be replaced.
            clips.pop(clip.id, None)
            shape, sha = _export_clip(
                segmenter,
                clip,
                out / expected["file"],
                resolution=resolution,
                resize=resize_hw,
                device=device,
                batch_size=batch_size,
                advance=lambda n: progress.advance(task, n),
            )
            grid = grid_to_frame_matrix(resolution, input_size, frame_size)
            clips[clip.id] = {
                **expected,
                "shape": list(shape),
                "sha256": sha,
                "grid_to_frame": grid.tolist(),
            }
            _write_manifest(out, manifest)
            computed += 1
    _write_manifest(out, manifest)

    wanted = [clips[c.id] for c in dataset]
    summary = ExportSummary(
        out_dir=out,
        clips=len(wanted),
        frames=sum(e["shape"][0] for e in wanted),
        computed_clips=computed,
        skipped_clips=skipped,
        bytes=sum((out / e["file"]).stat().st_size for e in wanted),
        official_bytes=sum(
            e["shape"][0] * e["shape"][1] * e["frame_size"][0] * e["frame_size"][1] for e in wanted
        )
        * OFFICIAL_BYTES_PER_VALUE,
    )
    logger.info(
        "teacher logits of %d frames (%d clips, %d computed, %d already done) in %s: %s, "
        "%.1fx smaller than the official fp32 full-resolution format (%s)",
        summary.frames,
        summary.clips,
        computed,
        skipped,
        out,
        format_size(summary.bytes),
        summary.ratio,
        format_size(summary.official_bytes),
    )
    return summary


def _check_resumable(path: Path, previous: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
    """ConfigError when an existing export was made with other settings or another teacher."""
    differing = [k for k in _RESUME_KEYS if previous.get(k) != settings[k]]
    old_teacher = previous.get("teacher", {}).get("fingerprint")
    if old_teacher != settings["teacher"]["fingerprint"]:
        differing.append("teacher.fingerprint (other teacher weights)")
    if differing:
        details = ", ".join(
            f"{k}: {previous.get(k)!r} there, {settings[k]!r} now" if k in settings else k
            for k in differing
        )
        raise ConfigError(
            f"{path} was exported with other settings ({details}); "
            "choose another output folder or delete that one"
        )


def _teacher_input(clip: Clip, n: int, resize: tuple[int, int] | None) -> np.ndarray:
    """Frame ``n`` as the teacher sees it: HxWx3 uint8, resized as training resizes frames."""
    from vidseg.data.transforms import VideoSample
    from vidseg.data.transforms import resize as resize_sample

    image = clip.image(n)
    if resize is None:
        return image
    return resize_sample(VideoSample([image], [None], [], []), resize).frames[0]


def _export_clip(
    segmenter: Segmenter,
    clip: Clip,
    path: Path,
    *,
    resolution: str,
    resize: tuple[int, int] | None,
    device: Any,
    batch_size: int,
    advance: Callable[[int], object],
) -> tuple[tuple[int, ...], str]:
    """Write one clip's logits to ``path`` through a hidden temporary file: (shape, sha256)."""
    import torch

    tmp = path.with_name(f".{path.name}.partial")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    frames = clip.frames
    array = None
    try:
        for start in range(0, len(frames), batch_size):
            batch = frames[start : start + batch_size]
            images = np.stack([_teacher_input(clip, n, resize) for n in batch])
            x = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)
            logits = segmenter.decode(segmenter.encode(x))
            if resolution == "full":
                logits = segmenter.upsample_logits(logits, *x.shape[-2:])
            else:
                _check_stride(segmenter, x.shape[-2:], logits.shape[-2:])
            values = logits.to(torch.float16).cpu().numpy()
            if array is None:
                # The shape is known only once the model has run; the file is filled in place
                # so that a clip never has to fit in memory.
                array = np.lib.format.open_memmap(
                    tmp, mode="w+", dtype=DTYPE, shape=(len(frames), *values.shape[1:])
                )
            array[start : start + len(batch)] = values
            advance(len(batch))
        assert array is not None  # a clip has at least one frame
        shape = array.shape
        array.flush()
        del array
        with open(tmp, "rb") as handle:
            sha = hashlib.file_digest(handle, "sha256").hexdigest()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return shape, sha


def _check_stride(segmenter: Segmenter, input_hw: Any, logits_hw: Any) -> None:
    padded = segmenter.padded_size(*input_hw)
    if tuple(logits_hw) != (padded[0] // STRIDE, padded[1] // STRIDE):
        raise ConfigError(
            f"the teacher's decoder gives {tuple(logits_hw)} logits for a {tuple(padded)} padded "
            f"input, not stride {STRIDE}; export with resolution 'full'"
        )


# -- reader ------------------------------------------------------------------------------------


class TeacherLogits:
    """Read access to an export folder; ``read(clip_id, frame)`` gives (C, h, w) float16.

    Clip files are memory-mapped on first use and kept open. The mappings are not pickled, so
    an instance can be handed to DataLoader worker processes, each of which opens its own.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self._arrays: dict[str, np.ndarray] = {}
        self._positions: dict[str, dict[int, int]] = {}

    def __repr__(self) -> str:
        return f"TeacherLogits({str(self.path)!r}, clips={len(self.clip_ids)})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "manifest": self.manifest}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.manifest = state["manifest"]
        self._arrays = {}
        self._positions = {}

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def resolution(self) -> str:
        return str(self.manifest["resolution"])

    @property
    def clip_ids(self) -> list[str]:
        return list(self.manifest["clips"])

    def _entry(self, clip_id: str) -> dict[str, Any]:
        try:
            return self.manifest["clips"][clip_id]
        except KeyError:
            raise DataError(f"teacher logits in {self.path} have no clip '{clip_id}'") from None

    def frames(self, clip_id: str) -> list[int]:
        """Frame numbers of a clip, in the order of its file."""
        return list(self._entry(clip_id)["frames"])

    def grid_to_frame(self, clip_id: str) -> np.ndarray:
        """(3, 3) float64 map from the clip's logit-grid pixels to its native frame pixels."""
        return np.asarray(self._entry(clip_id)["grid_to_frame"], dtype=np.float64)

    def check(self, dataset: FolderDataset) -> None:
        """DataError unless every frame of every clip of ``dataset`` has logits here, with the
        dataset's number of classes and frame size."""
        if dataset.num_classes != self.num_classes:
            raise DataError(
                f"teacher logits in {self.path} have {self.num_classes} classes, "
                f"{dataset.root} has {dataset.num_classes}"
            )
        for clip in dataset:
            entry = self._entry(clip.id)
            exported = set(entry["frames"])
            missing = [n for n in clip.frames if n not in exported]
            if missing:
                raise DataError(
                    f"teacher logits in {self.path} have no frame {missing[0]} of clip "
                    f"'{clip.id}' ({len(missing)} frame(s) missing; export them again)"
                )
            if tuple(entry["frame_size"]) != clip.size:
                raise DataError(
                    f"teacher logits in {self.path} were made from {clip.id} frames of "
                    f"{tuple(entry['frame_size'])}, {clip.dir} has {clip.size}"
                )

    def verify(self) -> None:
        """Check every clip file (exists, complete, sha256 as recorded); DataError naming the
        faulty files otherwise. Reads every byte."""
        problems = []
        for clip_id in self.clip_ids:
            entry = self._entry(clip_id)
            path = self.path / entry["file"]
            if not path.is_file():
                problems.append(f"{path} missing")
                continue
            shape = tuple(entry["shape"])
            header = _npy_header(path)
            if header is None:
                problems.append(f"{path} corrupted (unreadable .npy header)")
            elif header[0] != shape:
                problems.append(f"{path} corrupted (shape {header[0]}, the manifest says {shape})")
            elif path.stat().st_size < header[1] + _data_bytes(shape):
                problems.append(
                    f"{path} truncated ({path.stat().st_size} bytes, expected "
                    f"{header[1] + _data_bytes(shape)})"
                )
            elif _sha256(path) != entry["sha256"]:
                problems.append(f"{path} corrupted (checksum mismatch)")
        if problems:
            raise DataError(f"teacher logits in {self.path}: " + "; ".join(problems))

    def _array(self, clip_id: str) -> np.ndarray:
        array = self._arrays.get(clip_id)
        if array is None:
            entry = self._entry(clip_id)
            path = self.path / entry["file"]
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except FileNotFoundError:
                raise DataError(f"{path} missing (listed in {self.path / MANIFEST})") from None
            except (ValueError, OSError, EOFError) as exc:
                raise DataError(f"{path} truncated or unreadable ({exc})") from None
            if array.shape != tuple(entry["shape"]) or array.dtype != DTYPE:
                raise DataError(
                    f"{path} holds {array.dtype} {array.shape}, the manifest says "
                    f"{np.dtype(DTYPE).name} {tuple(entry['shape'])}"
                )
            self._arrays[clip_id] = array
            self._positions[clip_id] = {n: i for i, n in enumerate(entry["frames"])}
        return array

    def read(self, clip_id: str, frame: int) -> np.ndarray:
        """Logits of one frame: (C, h, w) float16, a copy (the file stays untouched)."""
        array = self._array(clip_id)
        position = self._positions[clip_id].get(frame)
        if position is None:
            raise DataError(
                f"teacher logits in {self.path} have no frame {frame} of clip '{clip_id}'"
            )
        return np.array(array[position])
