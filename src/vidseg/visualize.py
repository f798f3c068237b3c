"""Pictures of videos, labels and flow for docs, reports and debugging."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from vidseg.data.classes import IGNORE_INDEX


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code a flow field (h, w, 2): hue = direction, saturation = magnitude; uint8 RGB.

    Magnitudes are scaled by ``max_magnitude`` (default: the field's own maximum), so pass a
    shared value to compare several fields.
    """
    dx, dy = flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32)
    magnitude, angle = cv2.cartToPolar(dx, dy, angleInDegrees=True)
    scale = float(max_magnitude if max_magnitude is not None else magnitude.max()) or 1.0
    hsv = np.empty((*flow.shape[:2], 3), np.float32)
    hsv[..., 0] = angle  # degrees in [0, 360): OpenCV's float HSV convention
    hsv[..., 1] = np.clip(magnitude / scale, 0, 1)
    hsv[..., 2] = 1.0
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255 + 0.5, 0, 255).astype(np.uint8)


def grid(rows: list[list[np.ndarray]], gap: int = 4, background: int = 255) -> np.ndarray:
    """Tile equally sized RGB images into one picture, ``gap`` pixels apart."""
    h, w = rows[0][0].shape[:2]
    ncols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + gap) - gap, ncols * (w + gap) - gap, 3), background, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            if image.shape[:2] != (h, w):
                raise ValueError(f"image ({i}, {j}) is {image.shape[:2]}, expected {(h, w)}")
            out[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = image
    return out


def overlay(
    image: np.ndarray,
    label_ids: np.ndarray,
    palette: np.ndarray,
    alpha: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Blend a label map over an image: ``(1 - alpha) * image + alpha * palette[label]``.

    ``image`` is HxWx3 uint8 RGB, ``label_ids`` HxW integer class ids, ``palette`` (C, 3) uint8
    RGB; pixels labelled ``ignore_index`` keep the image. Returns HxWx3 uint8.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
    if image.ndim != 3 or image.shape[:2] != label_ids.shape:
        raise ValueError(f"label map is {label_ids.shape}, image is {image.shape}")
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"palette must be (C, 3) RGB, got shape {palette.shape}")
    labelled = label_ids != ignore_index
    ids = label_ids[labelled]
    bad = ids[(ids < 0) | (ids >= len(palette))]
    if bad.size:
        raise ValueError(f"label id {bad[0]} has no colour in a palette of {len(palette)}")
    blend = (1 - alpha) * image[labelled].astype(np.float32) + alpha * palette[ids]
    out = image.copy()
    out[labelled] = np.rint(blend).astype(np.uint8)
    return out


_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT_SCALE = 0.45
_BLACK = (0, 0, 0)


def _text(image: np.ndarray, text: str, org: tuple[int, int], scale: float = _TEXT_SCALE) -> None:
    cv2.putText(image, text, org, _FONT, scale, _BLACK, 1, cv2.LINE_AA)


def _text_size(text: str, scale: float = _TEXT_SCALE) -> tuple[int, int]:
    (w, h), _ = cv2.getTextSize(text, _FONT, scale, 1)
    return w, h


def label_text(
    image: np.ndarray,
    text: str,
    height: int = 24,
    color: tuple[int, int, int] = (255, 255, 255),
    background: tuple[int, int, int] = (32, 32, 32),
) -> np.ndarray:
    """Put a caption bar ``height`` pixels tall above an RGB image; returns (H + height)xWx3."""
    w = image.shape[1]
    bar = np.full((height, w, 3), background, np.uint8)
    scale = height / 48  # Hershey glyphs are about 22 px tall at scale 1: fill half the bar
    tw, th = _text_size(text, scale)
    if tw > w - 8:  # shrink a long caption to fit rather than crop it
        scale *= (w - 8) / tw
        tw, th = _text_size(text, scale)
    org = ((w - tw) // 2, (height + th) // 2)
    cv2.putText(bar, text, org, _FONT, scale, color, 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def nice_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    """Round tick values inside ``[lo, hi]``: multiples of 1, 2 or 5 x 10^k, at most ``max_ticks``.

    ``nice_ticks(0, 0.93) == [0, 0.2, 0.4, 0.6, 0.8]``; an empty range gives ``[lo]``.
    """
    if not hi > lo:
        return [lo]
    exponent = math.floor(math.log10((hi - lo) / max_ticks))
    # The smallest nice step that fits; a step of 10^(exponent + 1) always does.
    for mantissa in (1, 2, 5, 10):
        step = mantissa * 10.0**exponent
        first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
        if last - first < max_ticks:
            break
    # Rounding strips float noise such as 3 * 0.2 = 0.6000000000000001.
    return [round(i * step, max(0, -exponent)) for i in range(first, last + 1)]


def _axis(values: np.ndarray, log: bool) -> tuple[float, float, list[float]]:
    """Axis limits and ticks for the finite ``values``; limits sit on the outermost ticks."""
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if log:  # values are log10 already: whole decades
        lo, hi = math.floor(lo), math.ceil(hi)
        hi = max(hi, lo + 1)
        return lo, hi, [float(t) for t in range(lo, hi + 1)]
    if hi == lo:  # a single point or a constant series still needs a non-empty range
        pad = abs(lo) / 2 or 0.5
        lo, hi = lo - pad, hi + pad
    ticks = nice_ticks(lo, hi)  # at least two ticks whenever hi > lo and max_ticks >= 3
    step = ticks[1] - ticks[0]
    if ticks[0] > lo:
        ticks.insert(0, ticks[0] - step)
    if ticks[-1] < hi:
        ticks.append(ticks[-1] + step)
    return ticks[0], ticks[-1], ticks


# Distinct, colour-blind-friendly-ish RGB colours, one per series (cycled beyond eight).
SERIES_COLORS: tuple[tuple[int, int, int], ...] = (
    (31, 100, 200),
    (230, 110, 0),
    (40, 150, 60),
    (200, 30, 40),
    (130, 80, 180),
    (0, 160, 170),
    (190, 90, 140),
    (110, 110, 110),
)
_MARGIN = (36, 16, 50, 76)  # top (title), right, bottom (ticks, x label), left (ticks, y label)


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (480, 640),
    log_y: bool = False,
) -> np.ndarray:
    """Draw ``{name: (xs, ys)}`` as a line chart; returns an RGB uint8 image of ``size`` (h, w).

    Series ``i`` is drawn in ``SERIES_COLORS[i % 8]``. Non-finite points (and, with ``log_y``,
    non-positive ones) break the line; a point with no finite neighbour is drawn as a dot.
    """
    h, w = size
    top, right, bottom, left = _MARGIN
    x0, y0, x1, y1 = left, top, w - 1 - right, h - 1 - bottom
    data = []
    for xs, ys in series.values():
        x, y = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
        if x.shape != y.shape:
            raise ValueError(f"line_plot: {len(x)} x values but {len(y)} y values")
        if log_y:
            with np.errstate(divide="ignore", invalid="ignore"):
                y = np.where(y > 0, np.log10(y), np.nan)
        data.append((x, y))
    xlo, xhi, xticks = _axis(np.concatenate([x for x, _ in data] or [np.empty(0)]), log=False)
    ylo, yhi, yticks = _axis(np.concatenate([y for _, y in data] or [np.empty(0)]), log=log_y)

    def sx(x: Any) -> Any:  # data to pixel coordinates, for floats and arrays alike
        return x0 + (x - xlo) / (xhi - xlo) * (x1 - x0)

    def sy(y: Any) -> Any:
        return y1 - (y - ylo) / (yhi - ylo) * (y1 - y0)

    img = np.full((h, w, 3), 255, np.uint8)
    for t in xticks:
        px = round(sx(t))
        cv2.line(img, (px, y0), (px, y1), (225, 225, 225))
        cv2.line(img, (px, y1), (px, y1 + 4), _BLACK)
        label = f"{t:.6g}"
        _text(img, label, (px - _text_size(label)[0] // 2, y1 + 18))
    for t in yticks:
        py = round(sy(t))
        cv2.line(img, (x0, py), (x1, py), (225, 225, 225))
        cv2.line(img, (x0 - 4, py), (x0, py), _BLACK)
        label = f"1e{int(t)}" if log_y else f"{t:.6g}"
        tw, th = _text_size(label)
        _text(img, label, (x0 - 7 - tw, py + th // 2))
    cv2.rectangle(img, (x0, y0), (x1, y1), _BLACK)

    axes_only = img.copy()
    for i, (x, y) in enumerate(data):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        pts = np.stack([sx(x), sy(y)], axis=-1)
        # Splitting at each non-finite point and dropping it leaves the finite runs.
        for run in np.split(pts, np.flatnonzero(~np.isfinite(pts).all(axis=1))):
            run = np.rint(run[np.isfinite(run).all(axis=1)] * 16).astype(np.int32)  # shift=4
            if len(run) == 1:
                cv2.circle(img, tuple(run[0].tolist()), 3 * 16, color, -1, cv2.LINE_AA, shift=4)
            elif len(run) > 1:
                cv2.polylines(img, [run], False, color, 2, cv2.LINE_AA, shift=4)

    if series:
        ink = (img != axes_only).any(axis=2)
        _legend(img, list(series), ink, (x0, y0, x1, y1))
    tw, th = _text_size(title, 0.6)
    cv2.putText(img, title, ((w - tw) // 2, (top + th) // 2), _FONT, 0.6, _BLACK, 1, cv2.LINE_AA)
    tw, _ = _text_size(xlabel)
    _text(img, xlabel, ((x0 + x1 - tw) // 2, h - 8))
    tw, th = _text_size(ylabel)
    strip = np.full((th + 8, tw + 4, 3), 255, np.uint8)
    _text(strip, ylabel, (2, th + 2))
    strip = np.rot90(strip)[: y1 - y0]  # reads bottom to top; cropped if taller than the axes
    top_row = (y0 + y1 - len(strip)) // 2
    img[top_row : top_row + len(strip), 4 : 4 + strip.shape[1]] = strip
    return img


def _legend(img: np.ndarray, names: list[str], ink: np.ndarray, box: tuple[int, ...]) -> None:
    """Draw the legend in the corner of the axes ``box`` that hides the fewest ``ink`` pixels."""
    x0, y0, x1, y1 = box
    row = 18
    lw = max(_text_size(n)[0] for n in names) + 40
    lh = row * len(names) + 6
    corners = [
        (x1 - 8 - lw, y0 + 8),
        (x0 + 8, y0 + 8),
        (x1 - 8 - lw, y1 - 8 - lh),
        (x0 + 8, y1 - 8 - lh),
    ]

    def covered(corner: tuple[int, int]) -> int:
        cx, cy = corner
        return int(ink[max(cy, 0) : cy + lh + 1, max(cx, 0) : cx + lw + 1].sum())

    lx, ly = min(corners, key=covered)  # min keeps the first of equals: top right by default
    cv2.rectangle(img, (lx, ly), (lx + lw, ly + lh), (255, 255, 255), -1)
    cv2.rectangle(img, (lx, ly), (lx + lw, ly + lh), (160, 160, 160))
    for i, name in enumerate(names):
        cy = ly + 3 + row * i + row // 2
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        cv2.line(img, (lx + 6, cy), (lx + 28, cy), color, 2, cv2.LINE_AA)
        _text(img, name, (lx + 34, cy + 5))


def bar_plot(
    values: dict[str, float | None],
    title: str,
    xlabel: str,
    colors: Sequence[Sequence[int]] | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Horizontal bars ``{name: value}`` (values in [0, 100]; None drawn as 'n/a').

    Bar ``i`` takes ``colors[i]`` (RGB; default a neutral blue). Returns an RGB uint8 image of
    ``size`` (h, w), by default tall enough for 26 px per bar.
    """
    names = list(values)
    label_w = max((_text_size(n)[0] for n in names), default=0) + 16
    h, w = size if size is not None else (76 + 26 * len(names), 640)
    img = np.full((h, w, 3), 255, np.uint8)
    x0, x1 = label_w, w - 90
    y0 = 56
    row = (h - y0 - 10) / max(len(names), 1)
    for t in range(0, 101, 20):
        px = round(x0 + t / 100 * (x1 - x0))
        cv2.line(img, (px, y0 - 4), (px, h - 10), (225, 225, 225))
        _text(img, str(t), (px - _text_size(str(t))[0] // 2, y0 - 10))
    for i, name in enumerate(names):
        top = round(y0 + i * row + 3)
        bottom = round(y0 + (i + 1) * row - 3)
        mid = (top + bottom) // 2
        tw, th = _text_size(name)
        _text(img, name, (label_w - 8 - tw, mid + th // 2))
        value = values[name]
        if value is None or not np.isfinite(value):
            _text(img, "n/a", (x0 + 4, mid + th // 2))
            continue
        color = tuple(int(c) for c in colors[i]) if colors is not None else (70, 110, 180)
        end = round(x0 + min(max(value, 0.0), 100.0) / 100 * (x1 - x0))
        cv2.rectangle(img, (x0, top), (max(end, x0 + 1), bottom), color, -1)
        cv2.rectangle(img, (x0, top), (max(end, x0 + 1), bottom), _BLACK, 1)
        _text(img, f"{value:.1f}", (end + 4, mid + th // 2))
    tw, th = _text_size(title, 0.6)
    cv2.putText(img, title, ((w - tw) // 2, 8 + th), _FONT, 0.6, _BLACK, 1, cv2.LINE_AA)
    tw, _ = _text_size(xlabel)
    _text(img, xlabel, (x1 + 24, y0 - 10))
    return img
