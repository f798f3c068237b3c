import math

import numpy as np
import pytest

from vidseg.visualize import (
    SERIES_COLORS,
    flow_to_rgb,
    grid,
    label_text,
    line_plot,
    nice_ticks,
    overlay,
)


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


PALETTE = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200]], np.uint8)


def _scene():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (6, 7)).astype(np.uint8)
    labels[0, :] = 255
    return image, labels


def test_overlay_extremes_and_ignore():
    image, labels = _scene()
    np.testing.assert_array_equal(overlay(image, labels, PALETTE, alpha=0), image)
    full = overlay(image, labels, PALETTE, alpha=1)
    np.testing.assert_array_equal(full[1:], PALETTE[labels[1:]])
    np.testing.assert_array_equal(full[0], image[0])  # ignore pixels keep the image


def test_overlay_blend_matches_a_naive_loop():
    image, labels = _scene()
    out = overlay(image, labels, PALETTE, alpha=0.3)
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            if labels[y, x] == 255:
                want = image[y, x].astype(float)
            else:
                want = 0.7 * image[y, x] + 0.3 * PALETTE[labels[y, x]].astype(float)
            np.testing.assert_allclose(out[y, x], want, atol=0.5 + 1e-6)
    grey = np.full((1, 1, 3), 100, np.uint8)
    assert overlay(grey, np.zeros((1, 1), np.uint8), PALETTE, 0.25)[0, 0].tolist() == [125, 75, 75]


def test_overlay_rejects_bad_input():
    image, labels = _scene()
    labels[3, 3] = 7
    with pytest.raises(ValueError, match=r"label id 7 .* palette of 3"):
        overlay(image, labels, PALETTE)
    with pytest.raises(ValueError, match=r"label map is \(6, 6\)"):
        overlay(image, labels[:, :6], PALETTE)
    with pytest.raises(ValueError, match="alpha must be in"):
        overlay(image, labels, PALETTE, alpha=1.5)


@pytest.mark.parametrize(
    ("lo", "hi", "ticks"),
    [
        (0, 0.93, [0, 0.2, 0.4, 0.6, 0.8]),
        (0, 1000, [0, 200, 400, 600, 800, 1000]),
        (-3, 7, [-2, 0, 2, 4, 6]),
        (0.001, 0.0047, [0.001, 0.002, 0.003, 0.004]),
        (0.25, 0.75, [0.3, 0.4, 0.5, 0.6, 0.7]),
        (5, 5, [5]),
    ],
)
def test_nice_ticks_known_answers(lo, hi, ticks):
    assert nice_ticks(lo, hi) == ticks


def test_nice_ticks_invariants():
    rng = np.random.default_rng(1)
    for _ in range(300):
        span = float(rng.uniform(0.01, 10) * 10.0 ** rng.integers(-6, 7))
        lo = span * float(rng.uniform(-1000, 1000))
        hi = lo + span
        ticks = nice_ticks(lo, hi)
        assert 2 <= len(ticks) <= 6, (lo, hi, ticks)
        assert all(lo - 1e-9 * span <= t <= hi + 1e-9 * span for t in ticks)
        steps = np.diff(ticks)
        np.testing.assert_allclose(steps, steps[0], rtol=1e-6)
        mantissa = steps[0] / 10.0 ** math.floor(math.log10(steps[0]) + 1e-6)
        assert min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-5, (lo, hi, ticks)


def _axes_box(img):
    """The plot frame: the rows and columns that are mostly black."""
    black = (img == 0).all(axis=2)
    rows = np.flatnonzero(black.sum(axis=1) > img.shape[1] // 2)
    cols = np.flatnonzero(black.sum(axis=0) > img.shape[0] // 2)
    return cols[0], rows[0], cols[-1], rows[-1]


def _near(img, x, y, color, radius=2, tol=10):
    """Whether ``color`` appears within ``radius`` pixels of the (fractional) point (x, y)."""
    x, y = round(x), round(y)
    patch = img[y - radius : y + radius + 1, x - radius : x + radius + 1].astype(int)
    return bool((np.abs(patch - color).max(axis=2) <= tol).any())


def test_line_plot_draws_points_where_the_axes_put_them():
    img = line_plot(
        {"a": ([0, 10], [0, 1]), "b": ([4], [0.6])}, "title", "step", "value", size=(300, 400)
    )
    assert img.shape == (300, 400, 3)
    assert img.dtype == np.uint8
    x0, y0, x1, y1 = _axes_box(img)
    assert x0 > 30  # room for tick labels
    assert y1 < 280

    def px(x, y):  # axes span exactly [0, 10] x [0, 1]: the data range is already round
        return x0 + x / 10 * (x1 - x0), y1 - y * (y1 - y0)

    a, b = SERIES_COLORS[0], SERIES_COLORS[1]
    assert _near(img, *px(4, 0.6), b)
    assert _near(img, *px(5, 0.5), a)
    assert _near(img, *px(2.5, 0.25), a)
    assert not _near(img, *px(6, 0.6), b, radius=4)
    assert not _near(img, *px(5, 0.3), a, radius=4)


def test_line_plot_breaks_lines_at_nan_and_survives_degenerate_series():
    nan = float("nan")
    img = line_plot({"s": ([0, 1, 2, 3, 4], [0, 1, nan, 3, 4])}, "t", "x", "y", size=(300, 400))
    x0, y0, x1, y1 = _axes_box(img)

    def px(x, y):
        return x0 + x / 4 * (x1 - x0), y1 - y / 4 * (y1 - y0)

    color = SERIES_COLORS[0]
    assert _near(img, *px(0.5, 0.5), color)
    assert _near(img, *px(3.5, 3.5), color)
    assert not _near(img, *px(2, 2), color, radius=4)  # no segment across the gap

    # A constant series and a single point land in the middle of their zero-range axes.
    for data in [([0, 1, 2], [0.5, 0.5, 0.5]), ([3], [7])]:
        img = line_plot({"s": data}, "t", "x", "y", size=(300, 400))
        x0, y0, x1, y1 = _axes_box(img)
        assert _near(img, (x0 + x1) / 2, (y0 + y1) / 2, color)
        assert not _near(img, (x0 + x1) / 2, (y0 + y1) / 2 + 10, color)


def test_line_plot_log_axis_spans_whole_decades():
    img = line_plot({"lr": ([0, 1, 2, 3], [1e-3, 1e-4, 1e-5, 0.0])}, "t", "x", "y", log_y=True)
    x0, y0, x1, y1 = _axes_box(img)
    # Decades 1e-5 .. 1e-3 fill the axes (the zero cannot be drawn on a log axis).
    assert _near(img, x0 + (x1 - x0) / 3, (y0 + y1) / 2, SERIES_COLORS[0])
    assert _near(img, x0 + (x1 - x0) * 2 / 3, y1, SERIES_COLORS[0])


def test_line_plot_rejects_mismatched_series():
    with pytest.raises(ValueError, match="3 x values but 2 y values"):
        line_plot({"s": ([0, 1, 2], [0, 1])}, "t", "x", "y")


def test_series_colours_are_distinct():
    assert len(set(SERIES_COLORS)) == len(SERIES_COLORS) >= 6


def test_label_text_adds_a_centred_caption_bar():
    image = np.full((40, 120, 3), 77, np.uint8)
    out = label_text(image, "prediction", height=20)
    assert out.shape == (60, 120, 3)
    np.testing.assert_array_equal(out[20:], image)
    bar = out[:20].astype(int)
    assert (bar > 200).all(axis=2).sum() > 20  # white glyphs on the dark bar...
    cols = np.flatnonzero((bar != 32).any(axis=(0, 2)))
    assert (bar[:, : cols[0]] == 32).all()  # ...on the background colour elsewhere
    assert (bar[:, cols[-1] + 1 :] == 32).all()
    assert abs(cols[0] - (119 - cols[-1])) <= 3  # centred
    assert label_text(image, "", height=20)[:20].max() == 32


def test_label_text_shrinks_long_captions_to_fit():
    image = np.zeros((10, 60, 3), np.uint8)
    out = label_text(image, "a very long caption indeed", height=24)
    glyphs = (out[:24] > 128).any(axis=2)
    cols = np.flatnonzero(glyphs.any(axis=0))
    assert cols.size > 10
    assert cols[0] >= 2
    assert cols[-1] <= 57
