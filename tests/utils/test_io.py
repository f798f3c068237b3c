import numpy as np
import pytest

from vidseg.errors import DataError
from vidseg.utils.io import atomic_write, read_gray, read_rgb, read_yaml, write_png


def write_then_fail(target, data, mode="wb"):
    with atomic_write(target, mode) as handle:
        handle.write(data)
        raise RuntimeError("killed")


def test_atomic_write_leaves_no_file_when_interrupted(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="killed"):
        write_then_fail(target, b"partial")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_the_old_file_until_done(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        write_then_fail(target, "new", "w")
    assert target.read_text() == "old"
    with atomic_write(target, "w") as handle:
        handle.write("new")
    assert target.read_text() == "new"


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    with atomic_write(tmp_path / "f.txt", "w") as handle:
        handle.write("x")
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~umask


def test_png_round_trip_keeps_rgb_order_and_ids(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    write_png(tmp_path / "a.png", rgb)
    back = read_rgb(tmp_path / "a.png")
    np.testing.assert_array_equal(back, rgb)
    ids = np.array([[0, 7], [255, 3]], np.uint8)
    write_png(tmp_path / "l.png", ids)
    np.testing.assert_array_equal(read_gray(tmp_path / "l.png"), ids)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(DataError, match=r"missing\.png: image file not found"):
        read_rgb(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=r"broken\.png: cannot decode image"):
        read_rgb(tmp_path / "broken.png")
    write_png(tmp_path / "colour.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match=r"colour\.png: expected a single-channel"):
        read_gray(tmp_path / "colour.png")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(DataError, match=r"bad\.yaml: not valid YAML"):
        read_yaml(tmp_path / "bad.yaml")
