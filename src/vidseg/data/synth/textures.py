"""Procedural material families of the synthetic world.

Each painter returns an (h, w, 3) float32 RGB patch in [0, 1] for a region of interest, given the
world coordinates of its pixels and shared noise fields. Families deliberately overlap between
classes (dark grass vs light trees, grey flat roofs vs asphalt, dark water vs shadowed road, green
roofs vs grass) so that colour alone cannot separate them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Roi:
    """World coordinates and shared noise of a rectangular region of interest."""

    xs: np.ndarray  # (h, w) float32 world x of every pixel
    ys: np.ndarray  # (h, w) float32 world y
    fine: np.ndarray  # (h, w) noise, feature size ~1.5 px
    medium: np.ndarray  # (h, w) noise, ~6 px
    coarse: np.ndarray  # (h, w) noise, ~40 px

    @property
    def shape(self) -> tuple[int, int]:
        return self.xs.shape


def _jitter(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float) -> np.ndarray:
    """A colour near ``rgb``: brightness and per-channel jitter of relative size ``amount``."""
    base = np.asarray(rgb, np.float32)
    scale = rng.uniform(1 - amount, 1 + amount)
    return np.clip(base * scale * rng.uniform(1 - amount / 2, 1 + amount / 2, 3), 0, 1).astype(
        np.float32
    )


def _shade(color: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Modulate a colour by a multiplicative brightness field (h, w) -> (h, w, 3)."""
    return np.clip(color[None, None, :] * field[..., None], 0, 1)


def _stripes(roi: Roi, angle: float, period: float, duty: float = 0.5) -> np.ndarray:
    """Soft 0/1 stripes across the direction ``angle`` (radians) with ``period`` pixels."""
    u = roi.xs * np.cos(angle) + roi.ys * np.sin(angle)
    phase = np.mod(u / period, 1.0)
    # Distance to the band centre, in pixels, gives edges about one pixel soft.
    return np.clip((duty / 2 - np.abs(phase - 0.5)) * period + 0.5, 0, 1).astype(np.float32)


# --- ground -----------------------------------------------------------------------------------

GRASS = [(0.36, 0.52, 0.22), (0.44, 0.56, 0.26), (0.30, 0.44, 0.18), (0.52, 0.56, 0.30)]
DRY_GRASS = [(0.60, 0.58, 0.36), (0.55, 0.50, 0.30)]


def grass(roi: Roi, rng: np.random.Generator) -> np.ndarray:
    """Lawns and meadows: two greens blended by coarse noise, fine grain, some dry patches."""
    a = _jitter(rng, GRASS[rng.integers(len(GRASS))], 0.15)
    b = _jitter(rng, (GRASS + DRY_GRASS)[rng.integers(len(GRASS) + len(DRY_GRASS))], 0.15)
    t = np.clip(0.5 + 0.35 * roi.coarse, 0, 1)[..., None]
    col = a * (1 - t) + b * t
    return np.clip(col * (1 + 0.07 * roi.medium + 0.06 * roi.fine)[..., None], 0, 1)


FIELD_COLORS = [
    (0.72, 0.64, 0.34),  # ripe wheat
    (0.45, 0.58, 0.25),  # young crop
    (0.34, 0.48, 0.20),  # dark crop (close to tree colours)
    (0.62, 0.62, 0.38),  # stubble
]
SOIL_COLORS = [(0.48, 0.38, 0.28), (0.56, 0.46, 0.34), (0.40, 0.32, 0.24)]


def field(roi: Roi, rng: np.random.Generator, soil: bool = False) -> np.ndarray:
    """Farm fields with crop rows (low vegetation) or ploughed soil (clutter)."""
    palette = SOIL_COLORS if soil else FIELD_COLORS
    col = _jitter(rng, palette[rng.integers(len(palette))], 0.12)
    rows = _stripes(roi, rng.uniform(0, np.pi), rng.uniform(2.0, 5.0), rng.uniform(0.3, 0.6))
    amp = rng.uniform(0.08, 0.25)
    bright = 1 + amp * (rows - 0.5) + 0.08 * roi.coarse + 0.05 * roi.fine
    return _shade(col, bright)


def soil(roi: Roi, rng: np.random.Generator) -> np.ndarray:
    """Bare ground, gravel and building sites (background clutter)."""
    col = _jitter(
        rng,
        SOIL_COLORS[rng.integers(len(SOIL_COLORS))] if rng.random() < 0.6 else (0.62, 0.60, 0.56),
        0.12,
    )
    return _shade(col, 1 + 0.10 * roi.medium + 0.12 * roi.fine)


# --- roads ------------------------------------------------------------------------------------


def asphalt(roi: Roi, rng: np.random.Generator) -> np.ndarray:
    """Asphalt (dark to mid grey, sometimes concrete-light) with stains and grain."""
    grey = rng.uniform(0.22, 0.52) if rng.random() < 0.85 else rng.uniform(0.55, 0.68)
    col = _jitter(rng, (grey, grey * 1.01, grey * 1.04), 0.05)
    stains = np.clip(roi.coarse, -1.5, 1.5) * 0.06 + np.clip(roi.medium, -2, 2) * 0.03
    return _shade(col, 1 + stains + 0.05 * roi.fine)


def paving(roi: Roi, rng: np.random.Generator) -> np.ndarray:
    """Sidewalk slabs: light grey with a faint grid."""
    grey = rng.uniform(0.52, 0.70)
    col = _jitter(rng, (grey, grey * 0.99, grey * 0.96), 0.05)
    period = rng.uniform(3.0, 5.0)
    grid = np.minimum(_stripes(roi, 0.0, period, 0.85), _stripes(roi, np.pi / 2, period, 0.85))
    return _shade(col, 0.92 + 0.08 * grid + 0.04 * roi.fine)


# --- water ------------------------------------------------------------------------------------

WATER_COLORS = [
    (0.16, 0.26, 0.34),
    (0.20, 0.34, 0.36),
    (0.24, 0.30, 0.22),  # green-brown pond
    (0.12, 0.15, 0.18),  # very dark (close to shadowed asphalt)
    (0.28, 0.40, 0.50),
]


def water(roi: Roi, rng: np.random.Generator) -> np.ndarray:
    """Rivers and ponds: smooth dark colour, slow variation, thin bright ripples."""
    col = _jitter(rng, WATER_COLORS[rng.integers(len(WATER_COLORS))], 0.12)
    ripples = np.clip(roi.fine - 1.6, 0, 2) * 0.25
    return _shade(col, 1 + 0.06 * roi.coarse + 0.03 * roi.medium + ripples)


# --- buildings --------------------------------------------------------------------------------

ROOF_TILES = [(0.62, 0.30, 0.22), (0.52, 0.26, 0.20), (0.46, 0.34, 0.28), (0.70, 0.42, 0.28)]
WALLS = [
    (0.80, 0.74, 0.62),
    (0.70, 0.68, 0.64),
    (0.62, 0.40, 0.32),
    (0.86, 0.84, 0.80),
    (0.56, 0.52, 0.48),
]


def roof(roi: Roi, rng: np.random.Generator, angle: float, ridge_offset: float) -> np.ndarray:
    """A roof of one of five families: tiles, flat concrete, slate, metal, green roof.

    ``angle`` is the building orientation; ``ridge_offset`` the signed distance field across the
    ridge (h, w), used for gable shading.
    """
    kind = rng.choice(["tiles", "flat", "slate", "metal", "green"], p=[0.35, 0.3, 0.15, 0.1, 0.1])
    if kind == "tiles":
        col = _jitter(rng, ROOF_TILES[rng.integers(len(ROOF_TILES))], 0.1)
        rows = _stripes(roi, angle + np.pi / 2, rng.uniform(1.2, 2.0), 0.7)
        gable = np.where(ridge_offset > 0, 1.08, 0.86)
        return _shade(col, gable * (0.9 + 0.12 * rows) + 0.04 * roi.fine)
    if kind == "flat":
        grey = rng.uniform(0.35, 0.66)
        col = _jitter(rng, (grey, grey, grey * 1.02), 0.06)
        return _shade(col, 1 + 0.05 * roi.medium + 0.05 * roi.fine)
    if kind == "slate":
        col = _jitter(rng, (0.24, 0.26, 0.30), 0.12)
        rows = _stripes(roi, angle + np.pi / 2, rng.uniform(1.0, 1.6), 0.6)
        gable = np.where(ridge_offset > 0, 1.1, 0.85)
        return _shade(col, gable * (0.92 + 0.1 * rows) + 0.03 * roi.fine)
    if kind == "metal":
        col = _jitter(rng, (0.66, 0.70, 0.74), 0.12)
        ribs = _stripes(roi, angle, rng.uniform(1.0, 1.8), 0.5)
        return _shade(col, 0.9 + 0.14 * ribs + 0.02 * roi.fine)
    col = _jitter(rng, GRASS[rng.integers(len(GRASS))], 0.15)
    return _shade(col, 1 + 0.08 * roi.medium + 0.08 * roi.fine)


def wall(roi: Roi, rng: np.random.Generator, angle: float) -> np.ndarray:
    """Façades seen obliquely: plaster, brick or concrete with rows of dark windows."""
    col = _jitter(rng, WALLS[rng.integers(len(WALLS))], 0.1)
    rows = _stripes(roi, angle, rng.uniform(2.5, 4.0), 0.55)
    cols = _stripes(roi, angle + np.pi / 2, rng.uniform(2.0, 3.5), 0.5)
    windows = rows * cols
    return _shade(col, 1 - 0.45 * windows + 0.04 * roi.fine)


# --- vegetation -------------------------------------------------------------------------------

CROWNS = [
    (0.18, 0.34, 0.12),
    (0.24, 0.40, 0.16),
    (0.30, 0.44, 0.18),
    (0.42, 0.46, 0.20),
    (0.26, 0.30, 0.14),
]


def crown_color(rng: np.random.Generator) -> np.ndarray:
    """Foliage colour of one tree (dark to light green, some yellowish)."""
    return _jitter(rng, CROWNS[rng.integers(len(CROWNS))], 0.15)


# --- vehicles and people ----------------------------------------------------------------------

CAR_COLORS = [
    (0.92, 0.92, 0.92),
    (0.08, 0.08, 0.09),
    (0.55, 0.56, 0.58),
    (0.70, 0.10, 0.10),
    (0.12, 0.22, 0.55),
    (0.80, 0.80, 0.82),
    (0.25, 0.28, 0.26),
    (0.85, 0.70, 0.20),
]
CLOTHES = [
    (0.85, 0.15, 0.15),
    (0.15, 0.25, 0.70),
    (0.90, 0.90, 0.85),
    (0.10, 0.10, 0.12),
    (0.95, 0.75, 0.10),
    (0.30, 0.55, 0.30),
]


def vehicle_sprite(length: float, width: float, rng: np.random.Generator) -> np.ndarray:
    """Top view of a car or van, (h, w, 4) RGBA float32, long axis along x, centred.

    A one-pixel transparent border keeps the sprite's edge inside its array after warping.
    """
    lp, wp = int(np.ceil(length)) + 2, int(np.ceil(width)) + 2
    y, x = np.mgrid[0:wp, 0:lp].astype(np.float32)
    u = (x - (lp - 1) / 2) / (length / 2)  # -1 rear .. +1 front
    v = (y - (wp - 1) / 2) / (width / 2)
    body = (np.abs(u) <= 1) & (np.abs(v) <= 1) & ~((np.abs(u) > 0.85) & (np.abs(v) > 0.75))
    paint = _jitter(rng, CAR_COLORS[rng.integers(len(CAR_COLORS))], 0.08)
    glass = np.array([0.10, 0.12, 0.15], np.float32)
    rgb = np.broadcast_to(paint, (wp, lp, 3)).copy()
    windshield = (u > 0.25) & (u < 0.55) & (np.abs(v) < 0.8)
    rear = (u < -0.5) & (u > -0.75) & (np.abs(v) < 0.75)
    rgb[windshield | rear] = glass
    roof_panel = (u >= -0.5) & (u <= 0.25) & (np.abs(v) < 0.7)
    rgb[roof_panel] *= 0.9
    alpha = body.astype(np.float32)
    return np.dstack([rgb, alpha])


def person_sprite(size: float, rng: np.random.Generator) -> np.ndarray:
    """Top view of a walking person (shoulders and head), (h, w, 4) RGBA float32, facing +x."""
    n = int(np.ceil(size)) + 2
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    u = (x - (n - 1) / 2) / (size / 2)
    v = (y - (n - 1) / 2) / (size / 2)
    shoulders = (u / 0.55) ** 2 + (v / 1.0) ** 2 <= 1
    head = (u**2 + v**2) <= 0.3**2
    cloth = _jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 0.1)
    hair = _jitter(rng, (0.20, 0.15, 0.10) if rng.random() < 0.7 else (0.75, 0.65, 0.45), 0.1)
    rgb = np.broadcast_to(cloth, (n, n, 3)).copy()
    rgb[head] = hair
    return np.dstack([rgb, (shoulders | head).astype(np.float32)])
