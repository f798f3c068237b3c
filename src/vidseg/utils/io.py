"""File I/O with clear errors and atomic writes.

Every writer goes through :func:`atomic_write`: the data lands in a temporary file next to the
target and is renamed over it, so a killed process never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from vidseg.errors import DataError

# mkstemp creates files readable by their owner only; written files get the usual permissions
# (0666 minus the umask) instead. The umask can only be read by setting it, so do it once here.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success rename it to ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_yaml(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as YAML (keys in insertion order) atomically."""
    with atomic_write(path, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Read a YAML file; a missing or malformed file raises :class:`DataError` naming it."""
    path = Path(path)
    try:
        with open(path) as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save one array in ``.npy`` format atomically."""
    with atomic_write(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def load_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """Load a ``.npy`` array (no pickles); unreadable files raise :class:`DataError`."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None


def encode_png(image: np.ndarray, compression: int = 1) -> bytes:
    """Encode an HxW (grey or ids) or HxWx3 RGB ``uint8`` array as PNG bytes."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def write_png(path: str | os.PathLike[str], image: np.ndarray, compression: int = 1) -> None:
    """Write an RGB or single-channel ``uint8`` image as PNG, atomically."""
    write_bytes(path, encode_png(image, compression))


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as HxWx3 ``uint8`` RGB; missing or undecodable files raise DataError."""
    image = _imread(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_gray(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a single-channel 8-bit image (a label map) as HxW ``uint8``.

    A colour or 16-bit file is refused instead of being silently converted, because a converted
    label map would carry wrong class ids.
    """
    image = _imread(path, cv2.IMREAD_UNCHANGED)
    if image.ndim != 2:
        raise DataError(
            f"{path}: expected a single-channel label image, found {image.shape[2]} channels"
        )
    if image.dtype != np.uint8:
        raise DataError(f"{path}: expected 8-bit class ids, found pixel type {image.dtype}")
    return image


def _imread(path: str | os.PathLike[str], flags: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise DataError(f"{path}: cannot decode image (corrupt or not an image file)")
    return image
