"""Moving vehicles and pedestrians: sprites with a world pose per frame.

Every actor exists from the first frame of the clip (nothing pops into view): vehicles drive along
lanes and brake to a stop, queued, at dead ends inside the world; pedestrians walk along sidewalks
or stroll across lawns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidseg.data.synth import textures as tx
from vidseg.data.synth.world import HUMAN, VEHICLE, Lane, World


@dataclass(frozen=True)
class Actor:
    """A sprite (h, w, 4) RGBA float32 with poses (T, 3): world x, y and heading per frame."""

    cls: int
    sprite: np.ndarray
    poses: np.ndarray

    def sprite_to_world(self, n: int) -> np.ndarray:
        """3x3 matrix mapping sprite pixels to world pixels at frame ``n``."""
        x, y, heading = self.poses[n]
        sh, sw = self.sprite.shape[:2]
        c, s = np.cos(heading), np.sin(heading)
        ox, oy = (sw - 1) / 2, (sh - 1) / 2
        return np.array([[c, -s, x - (c * ox - s * oy)], [s, c, y - (s * ox + c * oy)], [0, 0, 1]])


def _drive(
    lane: Lane,
    starts: np.ndarray,
    speed: float,
    frames: int,
    fps: float,
    stop_gap: float,
    dead_end: bool,
    brake: float,
) -> np.ndarray:
    """Arc-length positions (k, T) of ``k`` followers on ``lane`` starting at ``starts``.

    On a dead end the i-th actor from the front stops ``i * stop_gap`` before the end, braking at
    ``brake`` px/s²; otherwise all keep the lane speed and may leave the world.
    """
    order = np.argsort(-starts)
    out = np.empty((len(starts), frames))
    dt = 1.0 / fps
    for rank, i in enumerate(order):
        s = starts[i]
        stop = lane.path.length - (rank + 0.5) * stop_gap
        for n in range(frames):
            out[i, n] = s
            v = speed
            if dead_end:
                v = min(speed, np.sqrt(max(0.0, 2 * brake * (stop - s))))
            s += v * dt
    return out


def _inside(world: World, p: np.ndarray, margin: float = 0.0) -> bool:
    h, w = world.shape
    return bool(margin <= p[0] < w - margin and margin <= p[1] < h - margin)


def populate(world: World, frames: int, fps: float, rng: np.random.Generator) -> list[Actor]:
    """Moving vehicles on lanes, pedestrians on sidewalks and lawns; ``frames`` poses each."""
    m = world.ppm
    actors: list[Actor] = []
    for lane in world.lanes:
        length_m = lane.path.length / m
        count = rng.poisson(length_m / 90)
        if count == 0:
            continue
        car_len = m * 5.0
        gap = car_len + m * 6.0
        # Starts spread along the lane with at least ``gap`` between neighbours.
        slots = np.arange(0, lane.path.length - car_len, gap)
        if len(slots) == 0:
            continue
        starts = np.sort(rng.choice(slots, size=min(count, len(slots)), replace=False))
        starts = starts + rng.uniform(0, gap - car_len, len(starts))
        end, _ = lane.path.at(np.array([lane.path.length]))
        dead_end = _inside(world, end[0], margin=car_len)
        track = _drive(lane, starts, lane.speed, frames, fps, gap, dead_end, brake=m * 4.0)
        for row in track:
            pos, heading = lane.path.at(row)
            if not any(_inside(world, p, -car_len) for p in pos[:: max(1, frames // 8)]):
                continue
            big = rng.random() < 0.12
            length = m * (rng.uniform(6.0, 9.0) if big else rng.uniform(4.0, 4.9))
            width = m * (rng.uniform(2.2, 2.5) if big else rng.uniform(1.75, 2.0))
            poses = np.column_stack([pos, heading])
            actors.append(Actor(VEHICLE, tx.vehicle_sprite(length, width, rng), poses))
    body = m * 1.6  # top-down size of a pedestrian, shoulders and head
    for way in world.walkways:
        count = rng.poisson(way.path.length / m / 40)
        if count == 0:
            continue
        slots = np.arange(0, way.path.length, m * 4)
        starts = np.sort(rng.choice(slots, size=min(count, len(slots)), replace=False))
        end, _ = way.path.at(np.array([way.path.length]))
        track = _drive(
            way, starts, way.speed, frames, fps, m * 1.5, _inside(world, end[0]), brake=m * 1.0
        )
        for row in track:
            # Some walk in pairs: the second one beside the sidewalk's centre, a little behind.
            for member in range(1 + int(rng.random() < 0.3)):
                lateral = 0.45 * m if member else rng.uniform(-0.3, 0.3) * way.width
                path = way.path.offset(lateral) if lateral else way.path
                pos, heading = path.at(row - member * m * 0.4)
                sway = np.sin(np.arange(frames) * 2 * np.pi * 1.8 / fps + rng.uniform(0, 6.3))
                heading = heading + 0.08 * sway
                actors.append(
                    Actor(HUMAN, tx.person_sprite(body, rng), np.column_stack([pos, heading]))
                )
    actors += _strollers(world, frames, fps, body, rng)
    return actors


def _strollers(
    world: World, frames: int, fps: float, body: float, rng: np.random.Generator
) -> list[Actor]:
    """People walking across lawns and squares with a slowly drifting heading."""
    m = world.ppm
    h, w = world.shape
    out = []
    area_m2 = h * w / m**2
    for _ in range(rng.poisson(area_m2 / 2500)):
        p = rng.uniform([0, 0], [w, h])
        if not world.open_ground[int(p[1]), int(p[0])]:
            continue
        speed = m * rng.uniform(0.8, 1.5) / fps
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.03, frames))
        steps = speed * np.column_stack([np.cos(heading), np.sin(heading)])
        pos = p + np.concatenate([[[0.0, 0.0]], np.cumsum(steps[:-1], axis=0)])
        out.append(Actor(HUMAN, tx.person_sprite(body, rng), np.column_stack([pos, heading])))
    return out
