import logging
import sys

import cv2
import numpy as np
import pytest

from vidseg.errors import DataError
from vidseg.utils.video import VideoWriter, read_video


def _has_h264() -> bool:
    try:
        import av
    except ImportError:
        return False
    return "libx264" in av.codecs_available


CODECS = [
    pytest.param(
        "h264", marks=pytest.mark.skipif(not _has_h264(), reason="needs PyAV with libx264")
    ),
    "mp4v",
]


def _frames(h: int = 48, w: int = 64) -> list[np.ndarray]:
    """Twelve clearly different frames: six solid colours, then six ramps."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for color in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (90, 0, 90)]:
        frames.append(np.broadcast_to(np.array(color, np.uint8), (h, w, 3)).copy())
    for i in range(6):
        frame = np.zeros((h, w, 3), np.uint8)
        frame[..., i % 3] = xx * 255 // (w - 1) if i < 3 else yy * 255 // (h - 1)
        frame[..., (i + 1) % 3] = 40 * i
        frames.append(frame)
    return frames


def _write(path, frames, codec, fps=10):
    with VideoWriter(path, fps, codec=codec) as writer:
        for frame in frames:
            writer.write(frame)
    return writer


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_keeps_count_size_order_and_colours(tmp_path, codec):
    frames = _frames()
    path = tmp_path / "clip.mp4"
    writer = _write(path, frames, codec)
    assert writer.codec == codec
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temp file left

    decoded = read_video(path)
    assert len(decoded) == 12
    for i, (got, want) in enumerate(zip(decoded, frames, strict=True)):
        assert got.shape == want.shape
        assert got.dtype == np.uint8
        err = np.abs(got.astype(int) - want)
        # Lossy yuv420p: small average error; chroma subsampling blurs colour edges a little.
        assert err.mean() < 4, f"frame {i}"
        assert err.max() <= 24, f"frame {i}"
        # Order is kept: each decoded frame is nearest to its own source frame.
        dists = [np.abs(got.astype(int) - f).mean() for f in frames]
        assert int(np.argmin(dists)) == i

    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10)
    capture.release()


@pytest.mark.parametrize("codec", CODECS)
def test_odd_sizes_are_padded_by_replicating_the_edge(tmp_path, codec):
    frame = np.zeros((21, 33, 3), np.uint8)
    frame[:, :, 0] = 40
    frame[-1, :] = (250, 250, 250)  # last row white, last column green
    frame[:, -1] = (0, 250, 0)
    _write(tmp_path / "odd.mp4", [frame] * 3, codec)
    decoded = read_video(tmp_path / "odd.mp4")
    assert decoded[0].shape == (22, 34, 3)
    padded = np.pad(frame, ((0, 1), (0, 1), (0, 0)), mode="edge")
    assert np.abs(decoded[0].astype(int) - padded).mean() < 6
    # The copies carry their neighbour's colour, not black.
    assert decoded[0][-1, 5:25].mean(axis=0) == pytest.approx([250, 250, 250], abs=12)
    assert decoded[0][5:15, -1].mean(axis=0) == pytest.approx([0, 250, 0], abs=12)


@pytest.mark.parametrize("codec", CODECS)
def test_exception_inside_with_leaves_no_file(tmp_path, codec):
    path = tmp_path / "out.mp4"

    def body():
        with VideoWriter(path, 5, codec=codec) as writer:
            writer.write(_frames()[0])
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        body()
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_video(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError), VideoWriter(path, 5, codec="mp4v"):
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [path]


def test_frame_size_change_names_the_frame(tmp_path):
    frames = _frames()
    with pytest.raises(ValueError, match=r"frame 2 is \(40, 64\)"):
        _write(tmp_path / "x.mp4", [*frames[:2], frames[2][:40]], "mp4v")
    with pytest.raises(ValueError, match=r"frame 1: expected an HxWx3 uint8"):
        _write(tmp_path / "x.mp4", [frames[0], frames[1].astype(np.float32)], "mp4v")
    with pytest.raises(ValueError, match="no frames"):
        _write(tmp_path / "x.mp4", [], "mp4v")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="'xvid'"):
        VideoWriter(tmp_path / "x.mp4", 10, codec="xvid")
    with pytest.raises(ValueError, match="fps must be positive, got 0"):
        VideoWriter(tmp_path / "x.mp4", 0)
    with pytest.raises(RuntimeError, match="outside its 'with' block"):
        VideoWriter(tmp_path / "x.mp4", 10).write(_frames()[0])


def test_without_pyav_falls_back_to_opencv(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    frames = _frames()[:6]
    with caplog.at_level(logging.WARNING, logger="vidseg.utils.video"):
        writer = _write(tmp_path / "c.mp4", frames, "h264")
    assert writer.codec == "mp4v"
    assert "mp4v" in caplog.text
    decoded = read_video(tmp_path / "c.mp4")  # the OpenCV reader
    assert len(decoded) == 6
    for got, want in zip(decoded, frames, strict=True):
        assert np.abs(got.astype(int) - want).mean() < 4


@pytest.mark.parametrize("pyav", [True, False])
def test_read_video_errors_name_the_file(tmp_path, monkeypatch, pyav):
    if not pyav:
        monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(DataError, match=r"missing\.mp4: video file not found"):
        read_video(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(DataError, match=r"junk\.mp4: "):
        read_video(junk)
