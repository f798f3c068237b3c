import numpy as np
import pytest

from vidseg.visualize import flow_to_rgb, grid


def test_flow_colours():
    flow = np.zeros((1, 4, 2), np.float32)
    flow[0, 1] = (2, 0)  # right: hue 0, full saturation -> red
    flow[0, 2] = (0, 2)  # down (y grows): hue 90 degrees -> yellow-green
    flow[0, 3] = (1, 0)  # half the maximum -> half saturated red
    rgb = flow_to_rgb(flow)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() == [255, 0, 0]
    # Half-way channel values are 127.5 before rounding: allow either neighbour.
    np.testing.assert_allclose(rgb[0, 2], [127.5, 255, 0], atol=0.5)
    np.testing.assert_allclose(rgb[0, 3], [255, 127.5, 127.5], atol=0.5)


def test_grid_layout_and_size_check():
    a = np.zeros((2, 3, 3), np.uint8)
    out = grid([[a, a], [a]], gap=1)
    assert out.shape == (5, 7, 3)
    assert (out[2, :] == 255).all()
    with pytest.raises(ValueError, match=r"image \(0, 1\)"):
        grid([[a, np.zeros((3, 3, 3), np.uint8)]])
