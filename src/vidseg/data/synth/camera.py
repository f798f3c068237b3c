"""A UAV camera flying over the ground plane: smooth translation, yaw, altitude and tilt.

The world is the plane Z = 0 with X to the right and Y down (world raster pixels) and Z pointing
down, so the camera sits at (x, y, -height). A pinhole camera gives an exact plane-to-image
homography ``H = K [r1 r2 -R C]`` per frame; consecutive frames therefore differ by the exact
homography ``H_n inv(H_{n-1})`` wherever the scene is static.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidseg.geometry.homography import apply_homography, normalize_homography

HFOV_DEG = 64.0  # horizontal field of view, typical of small UAV cameras


@dataclass(frozen=True)
class CameraPath:
    """Per-frame world-to-image homographies (T, 3, 3) and the world raster size they need."""

    world_to_image: np.ndarray
    world_size: tuple[int, int]  # (height, width) of the world raster in pixels

    def prev_to_cur(self, n: int) -> np.ndarray:
        """Homography mapping frame n-1 pixels to frame n pixels (identity for n = 0)."""
        if n == 0:
            return np.eye(3)
        return normalize_homography(
            self.world_to_image[n] @ np.linalg.inv(self.world_to_image[n - 1])
        )


def _smooth(
    t: np.ndarray, rng: np.random.Generator, amp: float, periods: tuple[float, float], k: int = 3
) -> np.ndarray:
    """Sum of ``k`` sinusoids with random periods (frames) and phases; total amplitude ``amp``."""
    out = np.zeros_like(t)
    weights = rng.uniform(0.5, 1.0, k)
    weights /= weights.sum()
    for wgt in weights:
        period = rng.uniform(*periods)
        out += amp * wgt * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return out


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cz, sz = np.cos(yaw), np.sin(yaw)
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rx @ ry @ rz


def fly(
    frames: int,
    size: tuple[int, int],
    ppm: float,
    fps: float,
    rng: np.random.Generator,
    motion: float = 1.0,
    margin: int = 24,
) -> CameraPath:
    """Draw a smooth, seeded flight of ``frames`` frames for images of ``size`` (h, w).

    ``ppm`` is world pixels per metre; at the nominal altitude one world pixel projects onto one
    image pixel at the image centre. Speeds are physical (m/s): ``fps`` sets the motion per frame.
    """
    h, w = size
    f = (w / 2) / np.tan(np.radians(HFOV_DEG) / 2)
    k = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
    t = np.arange(frames, dtype=np.float64)
    per_frame = motion / fps

    # Ground track: speed in m/s, heading wandering smoothly; the drone turns back towards its
    # start when it strays too far, so long clips do not need an unbounded world.
    speed = rng.uniform(4.0, 10.0) * (1 + _smooth(t, rng, 0.3, (60, 200)))
    heading_rate = _smooth(t, rng, 0.03, (40, 160))
    leash = 150.0 * ppm  # metres -> world pixels
    pos = np.zeros((frames, 2))
    heading = rng.uniform(0, 2 * np.pi)
    for i in range(1, frames):
        away = pos[i - 1]
        dist = np.hypot(*away)
        if dist > leash:
            home = np.arctan2(-away[1], -away[0])
            turn = np.angle(np.exp(1j * (home - heading)))
            heading += np.clip(turn, -0.05, 0.05)
        heading += heading_rate[i]
        step = speed[i] * per_frame * ppm
        pos[i] = pos[i - 1] + step * np.array([np.cos(heading), np.sin(heading)])
    # Sub-pixel vibration of the airframe.
    pos += np.stack([_smooth(t, rng, 0.25, (3, 7)), _smooth(t, rng, 0.25, (3, 7))], axis=1) * motion

    yaw = rng.uniform(0, 2 * np.pi) + _smooth(t, rng, 0.5 * motion, (120, 400))
    altitude = f * np.exp(_smooth(t, rng, 0.2 * min(motion, 1.5), (120, 400)))
    pitch = _smooth(t, rng, np.radians(9) * min(motion, 1.5), (60, 240))
    roll = _smooth(t, rng, np.radians(7) * min(motion, 1.5), (60, 240))

    homs = np.empty((frames, 3, 3))
    for i in range(frames):
        r = _rotation(yaw[i], pitch[i], roll[i])
        centre = np.array([pos[i, 0], pos[i, 1], -altitude[i]])
        homs[i] = normalize_homography(k @ np.column_stack([r[:, 0], r[:, 1], -r @ centre]))

    # Place the world raster so that every frame's footprint (plus a margin) lies inside it.
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    world_pts = np.concatenate([apply_homography(np.linalg.inv(hm), corners) for hm in homs])
    lo = np.floor(world_pts.min(axis=0)) - margin
    hi = np.ceil(world_pts.max(axis=0)) + margin
    shift = np.array([[1, 0, lo[0]], [0, 1, lo[1]], [0, 0, 1]])
    homs = np.stack([normalize_homography(hm @ shift) for hm in homs])
    world_w, world_h = (hi - lo).astype(int) + 1
    return CameraPath(homs, (int(world_h), int(world_w)))
