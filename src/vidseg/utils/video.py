"""Writing and reading small .mp4 videos (demo output, test fixtures).

PyAV with libx264 is preferred (small files that play everywhere); OpenCV's MPEG-4 Part 2
(``mp4v``) encoder is the fallback when PyAV or its H.264 encoder is missing. Both encode
yuv420p, which needs even frame sizes: odd sizes are padded by replicating the last row/column,
so a 33x21 frame comes back as 34x22 with the extra row and column copied from their neighbours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self

import cv2
import numpy as np

from vidseg.errors import DataError
from vidseg.utils.io import _FILE_MODE

log = logging.getLogger(__name__)

CODECS = ("h264", "mp4v")


def _pyav() -> ModuleType | None:
    """The ``av`` module, or None when PyAV is not installed (it is an optional extra)."""
    try:
        import av
    except ImportError:
        return None
    return av


def _pad_even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class VideoWriter:
    """Write RGB ``uint8`` HxWx3 frames to an .mp4 at ``fps`` frames per second.

    Use as a context manager. Frames go to a temporary file beside ``path`` that is renamed to
    ``path`` when the block ends normally; if the block raises, the temporary file is deleted and
    no video appears. ``codec`` asks for ``"h264"`` (falls back to ``"mp4v"`` when unavailable) or
    ``"mp4v"``; :attr:`codec` tells which one is used.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, codec: str = "h264") -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown video codec {codec!r}; expected one of {CODECS}")
        if not fps > 0:
            raise ValueError(f"video fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps = fps
        self._av = _pyav() if codec == "h264" else None
        if self._av is not None and "libx264" not in self._av.codecs_available:
            self._av = None
        self.codec = "h264" if self._av is not None else "mp4v"
        if self.codec != codec:
            log.warning("H.264 encoding needs PyAV with libx264; writing %s with mp4v", self.path)
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None
        self._count = 0
        self._sink: Any = None  # (container, stream) for PyAV, cv2.VideoWriter otherwise

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The .mp4 suffix matters: OpenCV picks the container from the file name.
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".mp4", dir=self.path.parent
        )
        os.close(fd)
        self._tmp = Path(tmp)
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB ``uint8`` HxWx3 frame; every frame must have the first frame's size."""
        if self._tmp is None:
            raise RuntimeError("VideoWriter.write() called outside its 'with' block")
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"frame {self._count}: expected an HxWx3 uint8 RGB image, "
                f"got shape {frame.shape} dtype {frame.dtype}"
            )
        size = frame.shape[:2]
        if self._size is None:
            self._size = size
            self._open(*_pad_even(frame).shape[:2])
        elif size != self._size:
            raise ValueError(f"frame {self._count} is {size}, but frame 0 was {self._size}")
        frame = np.ascontiguousarray(_pad_even(frame))
        if self._av is not None:
            container, stream = self._sink
            picture = self._av.VideoFrame.from_ndarray(frame, format="rgb24")
            container.mux(stream.encode(picture))
        else:
            self._sink.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self._count += 1

    def _open(self, h: int, w: int) -> None:
        if self._av is not None:
            container = self._av.open(str(self._tmp), mode="w")
            # Fraction keeps rates such as 29.97 exact enough for the container's time base.
            stream = container.add_stream(
                "libx264", rate=Fraction(self.fps).limit_denominator(1001)
            )
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": "18"}  # thin label boundaries stay crisp
            self._sink = (container, stream)
        else:
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self._sink = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, (w, h))
            if not self._sink.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot open an mp4v video writer")
        log.info("writing %s (%dx%d, %g fps, %s)", self.path, w, h, self.fps, self.codec)

    def _close_sink(self) -> None:
        if self._sink is None:
            return
        sink, self._sink = self._sink, None
        if self._av is not None:
            container, stream = sink
            try:
                container.mux(stream.encode(None))  # flush the encoder's delayed frames
            finally:
                container.close()
        else:
            sink.release()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tmp, self._tmp = self._tmp, None
        try:
            if exc_type is not None:
                # The body's exception is the one worth seeing; a failing close must not mask it.
                with contextlib.suppress(Exception):
                    self._close_sink()
                return
            self._close_sink()
            if self._count == 0:
                raise ValueError(f"{self.path}: no frames were written")
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def iter_video(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """Decode a video frame by frame as RGB ``uint8`` HxWx3 (PyAV if installed, else OpenCV).

    Frames are yielded as they are decoded, so a long video never sits in memory whole.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    av = _pyav()
    count = 0
    if av is not None:
        try:
            with av.open(str(path)) as container:
                for frame in container.decode(video=0):
                    count += 1
                    yield frame.to_ndarray(format="rgb24")
        except (av.FFmpegError, ValueError) as exc:
            raise DataError(f"{path}: cannot decode video ({exc})") from None
    else:
        capture = cv2.VideoCapture(str(path))
        try:
            while capture.isOpened():
                ok, frame = capture.read()
                if not ok:
                    break
                count += 1
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()
    if count == 0:
        raise DataError(f"{path}: no decodable video frames")


def video_fps(path: str | os.PathLike[str], default: float = 15.0) -> float:
    """The frame rate a video declares, or ``default`` when it declares none."""
    av = _pyav()
    if av is not None:
        try:
            with av.open(str(path)) as container:
                rate = container.streams.video[0].average_rate
                return float(rate) if rate else default
        except (av.FFmpegError, ValueError, IndexError):
            return default
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return float(fps) if fps and fps > 0 else default


def read_video(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """Decode every frame of a video as RGB ``uint8`` HxWx3 (see :func:`iter_video`)."""
    return list(iter_video(path))
