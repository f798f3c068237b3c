"""Procedural top-down world: ground raster, labels, tree canopy, roads and walkways.

Coordinates are world raster pixels (x right, y down, (0, 0) = centre of the top-left pixel);
``ppm`` converts metres to pixels. The ground (everything under the tree crowns, parked cars and
static shadows included) and the canopy (tree crowns as RGBA) are separate layers so that moving
actors can pass under trees.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vidseg.data.classes import IGNORE_INDEX
from vidseg.data.synth import textures as tx
from vidseg.data.synth.noise import fractal_noise, value_noise

ROAD, LOW_VEGETATION, TREE, HUMAN, VEHICLE, WATER, BUILDING, ROOF = range(8)
CLUTTER = IGNORE_INDEX

_SHIFT = 4  # fixed-point bits for sub-pixel polygon drawing
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Path:
    """A dense polyline (N, 2) in travel order with its cumulative arc length (N,)."""

    points: np.ndarray
    cum: np.ndarray

    @classmethod
    def from_points(cls, points: np.ndarray) -> Path:
        pts = np.asarray(points, np.float64)
        seg = np.hypot(*np.diff(pts, axis=0).T)
        return cls(pts, np.concatenate([[0.0], np.cumsum(seg)]))

    @property
    def length(self) -> float:
        return float(self.cum[-1])

    def at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (..., 2) and headings (...) in radians at arc lengths ``s`` (clamped)."""
        s = np.clip(s, 0, self.length)
        x = np.interp(s, self.cum, self.points[:, 0])
        y = np.interp(s, self.cum, self.points[:, 1])
        # Heading from a finite difference over ~2 px keeps it smooth along dense polylines.
        ds = 1.0
        x2 = np.interp(np.minimum(s + ds, self.length), self.cum, self.points[:, 0])
        y2 = np.interp(np.minimum(s + ds, self.length), self.cum, self.points[:, 1])
        x1 = np.interp(np.maximum(s - ds, 0), self.cum, self.points[:, 0])
        y1 = np.interp(np.maximum(s - ds, 0), self.cum, self.points[:, 1])
        return np.stack([x, y], axis=-1), np.arctan2(y2 - y1, x2 - x1)

    def offset(self, distance: float) -> Path:
        """The polyline shifted ``distance`` pixels to the right of its travel direction."""
        tangent = np.gradient(self.points, axis=0)
        tangent /= np.maximum(np.hypot(*tangent.T), 1e-9)[:, None]
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)  # right-hand normal (y down)
        return Path.from_points(self.points + distance * normal)

    def reversed(self) -> Path:
        return Path.from_points(self.points[::-1])


@dataclass(frozen=True)
class Lane:
    """A path that vehicles or pedestrians follow, with its typical speed in pixels per second."""

    path: Path
    speed: float
    width: float  # lateral room in pixels (lane or sidewalk width)


@dataclass
class World:
    """The static scene of one clip."""

    ground: np.ndarray  # (H, W, 3) uint8 RGB, everything below the tree crowns
    ground_labels: np.ndarray  # (H, W) uint8 class ids below the crowns
    canopy: np.ndarray  # (H, W, 4) uint8 RGBA tree crowns
    lanes: list[Lane]  # vehicle lanes
    walkways: list[Lane]  # sidewalks
    open_ground: np.ndarray  # (H, W) bool: lawns and meadows where people may stroll
    ppm: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.ground_labels.shape


def _rot(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _rect(center: np.ndarray, length: float, width: float, angle: float) -> np.ndarray:
    """Corners (4, 2) of a rectangle with its long side ``length`` along ``angle``."""
    half = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * [length / 2, width / 2]
    return center + half @ _rot(angle).T


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(a * 255 + 0.5, 0, 255).astype(np.uint8)


def _hull(*polys: np.ndarray) -> np.ndarray:
    pts = np.concatenate(polys).astype(np.float32)
    return cv2.convexHull(pts)[:, 0, :].astype(np.float64)


class _Builder:
    """Paints one world layer by layer; each step only touches the pixels it draws."""

    def __init__(self, shape: tuple[int, int], ppm: float, rng: np.random.Generator) -> None:
        self.h, self.w = shape
        self.ppm = ppm
        self.rng = rng
        self.fine = value_noise(shape, 1.5, rng)
        self.medium = fractal_noise(shape, 6.0, rng, octaves=2)
        self.coarse = fractal_noise(shape, 40.0, rng, octaves=2)
        self.tex = np.empty((self.h, self.w, 3), np.float32)
        self.lab = np.full(shape, LOW_VEGETATION, np.uint8)
        self.canopy = np.zeros((self.h, self.w, 4), np.float32)
        # Occupied: nothing else may be built here (roads, water, buildings, lots).
        self.occupied = np.zeros(shape, bool)
        sun = rng.uniform(0, 2 * np.pi)
        self.sun = np.array([np.cos(sun), np.sin(sun)])  # direction shadows fall, unit
        self.sun_k = rng.uniform(0.3, 0.9)  # shadow length per metre of height
        lean = rng.uniform(0, 2 * np.pi)
        self.lean = np.array([np.cos(lean), np.sin(lean)]) * rng.uniform(0.12, 0.3)
        self.max_height = 28.0  # metres
        self.shadow_dark = rng.uniform(0.45, 0.7)
        town = value_noise(shape, 140 * ppm, rng)
        urban = rng.uniform(0.45, 1.0)
        self.town = town > np.quantile(town[::8, ::8], 1 - urban)
        self.lanes: list[Lane] = []
        self.walkways: list[Lane] = []
        self.blocks: list[tuple[np.ndarray, float, float]] = []  # (centre, length, width)
        self.grid_angle = rng.uniform(0, np.pi / 2)

    # --- primitives -------------------------------------------------------------------------

    def m(self, metres: float) -> float:
        return metres * self.ppm

    def _roi(self, pts: np.ndarray, pad: float) -> tuple[int, int, int, int] | None:
        x0 = max(int(np.floor(pts[:, 0].min() - pad)), 0)
        y0 = max(int(np.floor(pts[:, 1].min() - pad)), 0)
        x1 = min(int(np.ceil(pts[:, 0].max() + pad)) + 1, self.w)
        y1 = min(int(np.ceil(pts[:, 1].max() + pad)) + 1, self.h)
        if x0 >= x1 or y0 >= y1:
            return None
        return x0, y0, x1, y1

    def _region(self, box: tuple[int, int, int, int]) -> tuple[tuple[slice, slice], tx.Roi]:
        x0, y0, x1, y1 = box
        sl = (slice(y0, y1), slice(x0, x1))
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        return sl, tx.Roi(xs, ys, self.fine[sl], self.medium[sl], self.coarse[sl])

    def mask_polys(self, polys: list[np.ndarray], box: tuple[int, int, int, int]) -> np.ndarray:
        x0, y0, x1, y1 = box
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        pts = [np.round((p - [x0, y0]) * _ONE).astype(np.int32) for p in polys]
        cv2.fillPoly(mask, pts, 1, cv2.LINE_8, _SHIFT)
        return mask.astype(bool)

    def mask_line(
        self, pts: np.ndarray, width: float, box: tuple[int, int, int, int]
    ) -> np.ndarray:
        x0, y0, x1, y1 = box
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        p = np.round((pts - [x0, y0]) * _ONE).astype(np.int32)
        cv2.polylines(mask, [p], False, 1, max(1, round(width)), cv2.LINE_8, _SHIFT)
        return mask.astype(bool)

    def paint(self, sl, mask: np.ndarray, rgb: np.ndarray, cls: int | None) -> None:
        self.tex[sl][mask] = rgb[mask]
        if cls is not None:
            self.lab[sl][mask] = cls

    def paint_poly(self, poly: np.ndarray, painter, cls: int | None, occupy: bool = True) -> None:
        box = self._roi(poly, 1)
        if box is None:
            return
        sl, roi = self._region(box)
        mask = self.mask_polys([poly], box)
        self.paint(sl, mask, painter(roi), cls)
        if occupy:
            self.occupied[sl] |= mask

    def darken(self, poly: np.ndarray, factor: float) -> None:
        box = self._roi(poly, 1)
        if box is None:
            return
        sl = (slice(box[1], box[3]), slice(box[0], box[2]))
        mask = self.mask_polys([poly], box)
        self.tex[sl][mask] *= factor

    def free(self, poly: np.ndarray, margin: float = 0.0) -> bool:
        """True if ``poly`` (grown by ``margin`` px) lies inside the world on unoccupied ground."""
        box = self._roi(poly, margin + 1)
        if box is None or poly[:, 0].min() < 0 or poly[:, 1].min() < 0:
            return False
        if poly[:, 0].max() >= self.w or poly[:, 1].max() >= self.h:
            return False
        mask = self.mask_polys([poly], box)
        if margin > 0:
            k = 2 * int(np.ceil(margin)) + 1
            mask = cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
        sl = (slice(box[1], box[3]), slice(box[0], box[2]))
        return not (self.occupied[sl] & mask).any()

    # --- layers -----------------------------------------------------------------------------

    def ground_cover(self) -> None:
        """Lawns everywhere, then farm fields and bare plots (Voronoi cells) outside the town."""
        sl, roi = self._region((0, 0, self.w, self.h))
        self.tex[...] = tx.grass(roi, self.rng)
        cell = self.m(self.rng.uniform(45, 80))
        n_seeds = max(4, int(self.h * self.w / cell**2))
        seeds = self.rng.uniform([0, 0], [self.w, self.h], (n_seeds, 2))
        step = 4
        ys, xs = np.mgrid[0 : self.h : step, 0 : self.w : step].astype(np.float32)
        # Jittered distances give the fields slightly irregular borders.
        jitter = self.medium[::step, ::step] * self.m(1.5)
        d = (xs[..., None] - seeds[:, 0]) ** 2 + (ys[..., None] - seeds[:, 1]) ** 2
        ids_small = np.argmin(d + jitter[..., None] * cell, axis=-1).astype(np.int32)
        rural_small = ~self.town[::step, ::step]
        for k in range(n_seeds):
            kind = self.rng.random()
            cell_small = (ids_small == k) & rural_small
            if kind > 0.62 or not cell_small.any():
                continue
            yy, xx = np.nonzero(cell_small)
            box = (
                xx.min() * step,
                yy.min() * step,
                min((xx.max() + 1) * step, self.w),
                min((yy.max() + 1) * step, self.h),
            )
            sub = cell_small[yy.min() : yy.max() + 1, xx.min() : xx.max() + 1].astype(np.float32)
            # Linear upsampling then a threshold gives smooth, not staircase, field borders.
            mask = (
                cv2.resize(sub, (box[2] - box[0], box[3] - box[1]), interpolation=cv2.INTER_LINEAR)
                > 0.5
            )
            sl, roi = self._region(box)
            soil = kind < 0.1
            self.paint(
                sl, mask, tx.field(roi, self.rng, soil=soil), CLUTTER if soil else LOW_VEGETATION
            )

    def water_bodies(self) -> None:
        """A meandering river (sometimes) and a few ponds."""
        if self.rng.random() < 0.5:
            width = self.m(self.rng.uniform(10, 24))
            pts = self._meander(
                self._random_centre(),
                self.rng.uniform(0, 2 * np.pi),
                3.0,
                self.rng.uniform(0.2, 0.6),
            )
            box = self._roi(pts, width)
            if box is not None:
                sl, roi = self._region(box)
                mask = self.mask_line(pts, width, box)
                self.paint(sl, mask, tx.water(roi, self.rng), WATER)
                self.occupied[sl] |= mask
        for _ in range(self.rng.poisson(0.8)):
            c = self.rng.uniform([0, 0], [self.w, self.h])
            if self.town[int(c[1]), int(c[0])] and self.rng.random() < 0.7:
                continue
            a, b = self.m(self.rng.uniform(8, 28)), self.m(self.rng.uniform(6, 20))
            angle = self.rng.uniform(0, np.pi)
            box = self._roi(np.array([c - max(a, b) * 1.4, c + max(a, b) * 1.4]), 1)
            if box is None:
                continue
            sl, roi = self._region(box)
            u = (roi.xs - c[0]) * np.cos(angle) + (roi.ys - c[1]) * np.sin(angle)
            v = -(roi.xs - c[0]) * np.sin(angle) + (roi.ys - c[1]) * np.cos(angle)
            mask = (u / a) ** 2 + (v / b) ** 2 + 0.3 * roi.coarse < 1
            self.paint(sl, mask, tx.water(roi, self.rng), WATER)
            self.occupied[sl] |= mask

    def _random_centre(self) -> np.ndarray:
        return self.rng.uniform([0.2 * self.w, 0.2 * self.h], [0.8 * self.w, 0.8 * self.h])

    def _meander(self, centre: np.ndarray, angle: float, step: float, amp: float) -> np.ndarray:
        """A polyline through ``centre`` crossing the whole world (it starts and ends outside),
        meandering sideways by up to ``amp`` times its wavelength over 2 pi."""
        reach = np.hypot(self.h, self.w)
        s = np.arange(-reach, reach, step)
        wavelength = self.m(self.rng.uniform(150, 400))
        lateral = (
            amp
            * wavelength
            / (2 * np.pi)
            * np.sin(2 * np.pi * s / wavelength + self.rng.uniform(0, 6.3))
        )
        d = np.array([np.cos(angle), np.sin(angle)])
        n = np.array([-d[1], d[0]])
        return centre + s[:, None] * d + lateral[:, None] * n

    def roads(self) -> None:
        """Main roads crossing the world and a street grid in the town, with sidewalks."""
        streets: list[tuple[np.ndarray, float, float, bool]] = []  # (points, width, sidewalk, main)
        # Most towns grow along their main road: then the street grid shares its direction and
        # the main roads (one, or two crossing at right angles) replace grid lines.
        aligned = self.rng.random() < 0.6
        centre, angle = self._random_centre(), self.rng.uniform(0, 2 * np.pi)
        n_main = 1 + int(self.rng.random() < 0.35)
        for k in range(n_main):
            if aligned:
                pts = self._meander(centre, angle + k * np.pi / 2, 2.0, 0.0)
            else:
                pts = self._meander(
                    self._random_centre(),
                    self.rng.uniform(0, 2 * np.pi),
                    2.0,
                    self.rng.uniform(0.0, 0.25),
                )
            streets.append(
                (pts, self.m(self.rng.uniform(8, 12)), self.m(self.rng.uniform(0, 2.5)), True)
            )
        if aligned:
            self.grid_angle = angle
            streets += self._street_grid(centre, skip={(0, 0), (1, 0)} if n_main == 2 else {(0, 0)})
        else:
            streets += self._street_grid(self.rng.uniform([0, 0], [self.w, self.h]), skip=set())
        for pts, width, sidewalk, _ in streets:
            if sidewalk > 0:
                self._stroke(pts, width + 2 * sidewalk, tx.paving)
        for pts, width, _, main in streets:
            self._stroke(pts, width, tx.asphalt)
            if main or self.rng.random() < 0.4:
                self._centre_line(pts)
        for pts, width, sidewalk, main in streets:
            path = Path.from_points(pts)
            speed = self.m(self.rng.uniform(8, 14) if main else self.rng.uniform(4, 9))
            for lane in (path.offset(width / 4), path.reversed().offset(width / 4)):
                self.lanes.append(Lane(lane, speed, width / 2))
            if sidewalk > 0:
                for side in (
                    path.offset(width / 2 + sidewalk / 2),
                    path.reversed().offset(width / 2 + sidewalk / 2),
                ):
                    self.walkways.append(Lane(side, self.m(self.rng.uniform(0.9, 1.6)), sidewalk))

    def _grid_axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors along and across the town's street grid."""
        d = np.array([np.cos(self.grid_angle), np.sin(self.grid_angle)])
        return d, np.array([-d[1], d[0]])

    def _street_grid(
        self, origin: np.ndarray, skip: set[tuple[int, int]]
    ) -> list[tuple[np.ndarray, float, float, bool]]:
        """Town streets on a grid through ``origin``; ``skip`` holds (family, line) pairs that a
        main road already occupies."""
        a, b = self.m(self.rng.uniform(60, 110)), self.m(self.rng.uniform(60, 110))
        d, n = self._grid_axes()
        reach = np.hypot(self.h, self.w)
        width = self.m(self.rng.uniform(6, 9))
        sidewalk = self.m(self.rng.uniform(1.5, 2.5))
        out = []
        for family, (along, across, spacing, other) in enumerate(((d, n, b, a), (n, d, a, b))):
            for i in range(-int(reach / spacing) - 1, int(reach / spacing) + 2):
                if (family, i) in skip:
                    continue
                base = origin + i * spacing * across
                run: list[np.ndarray] = []
                for j in range(-int(reach / other) - 1, int(reach / other) + 2):
                    p0 = base + j * other * along
                    p1 = p0 + other * along
                    mid = (p0 + p1) / 2
                    inside = 0 <= mid[0] < self.w and 0 <= mid[1] < self.h
                    keep = (
                        inside and self.town[int(mid[1]), int(mid[0])] and self.rng.random() > 0.08
                    )
                    if keep:
                        run.extend([p0, p1] if not run else [p1])
                    elif run:
                        out.append(self._densify(np.array(run)))
                        run = []
                if run:
                    out.append(self._densify(np.array(run)))
        # Blocks: the cells between streets, kept when their centre is in the town.
        for i in range(-int(reach / b) - 1, int(reach / b) + 2):
            for j in range(-int(reach / a) - 1, int(reach / a) + 2):
                c = origin + (i + 0.5) * b * n + (j + 0.5) * a * d
                if 0 <= c[0] < self.w and 0 <= c[1] < self.h and self.town[int(c[1]), int(c[0])]:
                    inner_l = a - width - 2 * sidewalk - self.m(2)
                    inner_w = b - width - 2 * sidewalk - self.m(2)
                    self.blocks.append((c, inner_l, inner_w))
        return [(pts, width, sidewalk, False) for pts in out]

    @staticmethod
    def _densify(pts: np.ndarray, step: float = 2.0) -> np.ndarray:
        path = Path.from_points(pts)
        s = np.linspace(0, path.length, max(2, int(path.length / step) + 1))
        return path.at(s)[0]

    def _stroke(self, pts: np.ndarray, width: float, painter) -> None:
        box = self._roi(pts, width)
        if box is None:
            return
        sl, roi = self._region(box)
        mask = self.mask_line(pts, width, box)
        self.paint(sl, mask, painter(roi, self.rng), ROAD)
        self.occupied[sl] |= mask

    def _centre_line(self, pts: np.ndarray) -> None:
        path = Path.from_points(pts)
        dash, gap = self.m(3), self.m(6)
        thick = max(1.0, self.m(0.25))
        white = np.float32(self.rng.uniform(0.75, 0.95))
        for s0 in np.arange(0, path.length - dash, dash + gap):
            seg = path.at(np.array([s0, s0 + dash]))[0]
            box = self._roi(seg, thick)
            if box is None:
                continue
            sl = (slice(box[1], box[3]), slice(box[0], box[2]))
            mask = self.mask_line(seg, thick, box)
            self.tex[sl][mask] = white

    def town_blocks(self) -> None:
        """Fill street blocks: buildings mostly, some parking lots, yards (clutter) and parks."""
        for centre, length, width in self.blocks:
            if length < self.m(10) or width < self.m(10):
                continue
            kind = self.rng.random()
            block = _rect(centre, length, width, self.grid_angle)
            if kind < 0.1:
                self._parking_lot(centre, length, width)
            elif kind < 0.2:
                if self.free(block):
                    self.paint_poly(block, lambda roi: tx.soil(roi, self.rng), CLUTTER)
            elif kind < 0.3:
                continue  # a park: lawn, later trees
            else:
                self._buildings_in(centre, length, width)

    def _parking_lot(self, centre: np.ndarray, length: float, width: float) -> None:
        lot = _rect(centre, length, width, self.grid_angle)
        if not self.free(lot):
            return
        self.paint_poly(lot, lambda roi: tx.asphalt(roi, self.rng), ROAD)
        car_l, car_w = self.m(4.6), self.m(2.0)
        d, n = self._grid_axes()
        slot = self.m(2.6)
        for row in (-1, 1):
            row_centre = centre + row * (width / 2 - car_l / 2 - self.m(1)) * n
            for k in range(int(length / slot) - 1):
                if self.rng.random() < 0.55:
                    p = row_centre + (k - (int(length / slot) - 2) / 2) * slot * d
                    self.parked_vehicle(
                        p,
                        self.grid_angle + np.pi / 2 + (np.pi if self.rng.random() < 0.5 else 0),
                        car_l,
                        car_w,
                    )

    def _buildings_in(self, centre: np.ndarray, length: float, width: float) -> None:
        """Buildings along the four sides of a block, or one large block-filling building.

        The usable area is shrunk by the largest roof displacement so that no façade or roof
        reaches into the street.
        """
        d, n = self._grid_axes()
        reach = np.hypot(*self.lean) * self.m(self.max_height)
        length, width = length - 2 * reach, width - 2 * reach
        if length < self.m(8) or width < self.m(8):
            return
        if self.rng.random() < 0.4:
            inset = self.m(self.rng.uniform(1, 4))
            self.building(
                centre,
                max(length - inset, self.m(8)),
                max(width - inset, self.m(8)),
                self.grid_angle,
            )
            return
        if self.rng.random() < 0.3:  # a paved courtyard behind the buildings
            self.paint_poly(
                _rect(centre, length, width, self.grid_angle),
                lambda roi: tx.soil(roi, self.rng),
                CLUTTER,
                occupy=False,
            )
        depth = min(self.m(self.rng.uniform(10, 20)), width / 2, length / 2)
        sides = (
            (d, n, length, width),
            (n, -d, width, length),
            (-d, -n, length, width),
            (-n, d, width, length),
        )
        for k, (along, inward, side_len, other) in enumerate(sides):
            side_centre = centre - inward * other / 2
            # The short sides leave the corners to the buildings of the long sides.
            end = side_len / 2 - (depth if k % 2 else 0)
            pos = -end
            while True:
                frontage = min(self.m(self.rng.uniform(8, 25)), end - pos)
                if frontage < self.m(6):
                    break
                c = side_centre + (pos + frontage / 2) * along + (depth / 2) * inward
                self.building(c, frontage, depth, float(np.arctan2(along[1], along[0])))
                pos += frontage + self.m(self.rng.uniform(0.5, 3))

    def town_infill(self) -> None:
        """Buildings on whatever town ground is still free (blocks cut by main roads, edges)."""
        ys, xs = np.nonzero(self.town[::4, ::4])
        if len(xs) == 0:
            return
        tries = int(len(xs) * 16 / self.m(22) ** 2)
        for i in self.rng.integers(0, len(xs), tries):
            c = np.array([xs[i], ys[i]], np.float64) * 4 + self.rng.uniform(0, 4, 2)
            angle = self.grid_angle + (np.pi / 2 if self.rng.random() < 0.5 else 0)
            self.building(
                c, self.m(self.rng.uniform(10, 25)), self.m(self.rng.uniform(8, 16)), angle
            )

    def rural_buildings(self) -> None:
        """Farm houses and sheds scattered outside the town."""
        area_m2 = self.h * self.w / self.ppm**2
        for _ in range(self.rng.poisson(area_m2 / 40000)):
            c = self.rng.uniform([0, 0], [self.w, self.h])
            if self.town[int(c[1]), int(c[0])]:
                continue
            self.building(
                c,
                self.m(self.rng.uniform(8, 20)),
                self.m(self.rng.uniform(6, 12)),
                self.rng.uniform(0, np.pi),
            )

    def building(self, centre: np.ndarray, length: float, width: float, angle: float) -> bool:
        """A building seen slightly obliquely: façade band (building) plus displaced roof."""
        foot = _rect(centre, length, width, angle)
        height = self.rng.uniform(5, self.max_height)
        lean = self.lean * self.m(height)
        top = foot + lean
        walls = _hull(foot, top)
        if not self.free(walls, margin=self.m(0.4)):
            return False
        shadow = _hull(foot, foot + self.sun * self.m(height * self.sun_k))
        self.darken(shadow, self.shadow_dark)
        wall_angle = angle
        self.paint_poly(walls, lambda roi: tx.wall(roi, self.rng, wall_angle), BUILDING)
        axis = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-axis[1], axis[0]])
        roof_centre = centre + lean

        def roof_painter(roi: tx.Roi) -> np.ndarray:
            ridge = (roi.xs - roof_centre[0]) * normal[0] + (roi.ys - roof_centre[1]) * normal[1]
            facing = 1 if normal @ self.sun < 0 else -1  # the half facing the sun is brighter
            return tx.roof(roi, self.rng, angle, facing * ridge)

        self.paint_poly(top, roof_painter, ROOF)
        return True

    def parked_vehicle(self, centre: np.ndarray, angle: float, length: float, width: float) -> None:
        sprite = tx.vehicle_sprite(length, width, self.rng)
        self.paste_sprite(sprite, centre, angle, VEHICLE)

    def kerb_parking(self) -> None:
        """Cars parked along some town streets' kerbs; those lanes then carry no traffic."""
        parked = set()
        for i, lane in enumerate(self.lanes):
            if lane.speed > self.m(8.5) or self.rng.random() < 0.5:
                continue
            parked.add(i)
            kerb = lane.path.offset(lane.width / 2 - self.m(1.1))
            s = self.rng.uniform(0, self.m(8))
            while s < kerb.length:
                length = self.m(self.rng.uniform(4.0, 5.0))
                if self.rng.random() < 0.5:
                    (p,), (heading,) = kerb.at(np.array([s]))
                    if (
                        0 <= p[0] < self.w
                        and 0 <= p[1] < self.h
                        and self.lab[int(p[1]), int(p[0])] == ROAD
                    ):
                        self.parked_vehicle(p, heading, length, self.m(1.9))
                s += length + self.m(self.rng.uniform(1.0, 2.5))
        self.lanes = [lane for i, lane in enumerate(self.lanes) if i not in parked]

    def paste_sprite(self, sprite: np.ndarray, centre: np.ndarray, angle: float, cls: int) -> None:
        """Composite an RGBA sprite (long axis along x) into the ground at ``centre``, rotated."""
        sh, sw = sprite.shape[:2]
        half = np.hypot(sh, sw) / 2 + 1
        box = self._roi(np.array([centre - half, centre + half]), 0)
        if box is None:
            return
        x0, y0, x1, y1 = box
        c, s = np.cos(angle), np.sin(angle)
        ox, oy = (sw - 1) / 2, (sh - 1) / 2
        # sprite (u, v) -> world: R (u - o) + centre, expressed relative to the ROI origin.
        m = np.array(
            [
                [c, -s, centre[0] - x0 - (c * ox - s * oy)],
                [s, c, centre[1] - y0 - (s * ox + c * oy)],
            ]
        )
        warped = cv2.warpAffine(
            sprite, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        alpha = warped[..., 3:4]
        sl = (slice(y0, y1), slice(x0, x1))
        self.tex[sl] = self.tex[sl] * (1 - alpha) + warped[..., :3] * alpha
        self.lab[sl][alpha[..., 0] >= 0.5] = cls

    def trees(self) -> None:
        """Forests, tree rows along main roads, park and garden trees; crowns go to the canopy."""
        crowns: list[tuple[np.ndarray, float]] = []
        forest = value_noise((self.h, self.w), self.m(60), self.rng)
        cover = self.rng.uniform(0.05, 0.4)
        forest_mask = (
            (forest > np.quantile(forest[::8, ::8], 1 - cover)) & ~self.town & ~self.occupied
        )
        spacing = self.m(self.rng.uniform(5.5, 7.5))
        for y in np.arange(0, self.h, spacing):
            for x in np.arange(0, self.w, spacing):
                p = np.array([x, y]) + self.rng.uniform(-0.4, 0.4, 2) * spacing
                if 0 <= p[0] < self.w and 0 <= p[1] < self.h and forest_mask[int(p[1]), int(p[0])]:
                    crowns.append((p, self.m(self.rng.uniform(3.5, 5.5))))
        for lane in self.lanes[::2]:
            if lane.speed < self.m(8) or self.rng.random() < 0.5:
                continue
            side = lane.path.offset(lane.width + self.m(self.rng.uniform(3, 5)))
            gap = self.m(self.rng.uniform(7, 12))
            for s in np.arange(self.rng.uniform(0, gap), side.length, gap):
                (p,), _ = side.at(np.array([s]))
                crowns.append((p, self.m(self.rng.uniform(3.0, 4.5))))
        lawn = (self.lab == LOW_VEGETATION) & ~self.occupied
        area_m2 = self.h * self.w / self.ppm**2
        density = self.rng.uniform(0.6, 2.0) / 1000  # trees per m² of lawn
        for _ in range(self.rng.poisson(area_m2 * density)):
            p = self.rng.uniform([0, 0], [self.w, self.h])
            if lawn[int(p[1]), int(p[0])]:
                group = 1 + self.rng.poisson(1.5)
                for _ in range(group):
                    q = p + self.rng.normal(0, self.m(2.5), 2)
                    crowns.append((q, self.m(self.rng.uniform(3.0, 6.0))))
        for p, r in crowns:  # shadows first, so that no crown is darkened by another's shadow
            shadow = self._crown_poly(p + self.sun * r * 2.2 * self.sun_k, r)
            self.darken(shadow, 0.5 + 0.5 * self.shadow_dark)
        for p, r in crowns:
            self._crown(p, r)

    def _crown_poly(self, centre: np.ndarray, r: float) -> np.ndarray:
        angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        radius = r * (1 + 0.06 * self.rng.standard_normal(20))
        return centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radius[:, None]

    def _crown(self, centre: np.ndarray, r: float) -> None:
        poly = self._crown_poly(centre, r)
        box = self._roi(poly, 1)
        if box is None:
            return
        sl, roi = self._region(box)
        mask = self.mask_polys([poly], box)
        dx, dy = (roi.xs - centre[0]) / r, (roi.ys - centre[1]) / r
        # Ball shading: brighter towards the sun (opposite to where shadows fall).
        light = 0.9 - 0.3 * (dx * self.sun[0] + dy * self.sun[1]) - 0.15 * (dx**2 + dy**2)
        clumps = 0.18 * roi.medium + 0.1 * roi.fine
        rgb = tx.crown_color(self.rng)[None, None, :] * np.clip(light + clumps, 0.3, 1.4)[..., None]
        self.canopy[sl][mask] = np.concatenate(
            [np.clip(rgb, 0, 1), np.ones((*rgb.shape[:2], 1), np.float32)], -1
        )[mask]

    def finish(self) -> World:
        # Open ground for strolling people: lawns not under buildings, water or roads.
        open_ground = (self.lab == LOW_VEGETATION) & ~self.occupied
        alpha = cv2.GaussianBlur(self.canopy[..., 3], (0, 0), 0.6)
        self.canopy[..., 3] = alpha
        return World(
            ground=_to_uint8(self.tex),
            ground_labels=self.lab,
            canopy=_to_uint8(self.canopy),
            lanes=self.lanes,
            walkways=self.walkways,
            open_ground=open_ground,
            ppm=self.ppm,
        )


def build_world(shape: tuple[int, int], ppm: float, rng: np.random.Generator) -> World:
    """Generate the static world of one clip, (height, width) world pixels at ``ppm`` px/metre."""
    b = _Builder(shape, ppm, rng)
    b.ground_cover()
    b.water_bodies()
    b.roads()
    b.kerb_parking()
    b.town_blocks()
    b.town_infill()
    b.rural_buildings()
    b.trees()
    return b.finish()
