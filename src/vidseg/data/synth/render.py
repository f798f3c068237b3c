"""Render frames, labels and exact backward flow from the world, the actors and the camera path.

A frame is the ground warped by the frame's world-to-image homography, the actors composited
through ``H_n @ sprite_to_world``, and the canopy on top. Every pixel also records which layer it
shows (0 = static world, k = actor k-1), which gives the exact flow: a static pixel moves with
``H_{n-1} inv(H_n)``, an actor's pixel with ``H_{n-1} A(n-1) inv(A(n)) inv(H_n)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vidseg.data.synth.actors import Actor
from vidseg.data.synth.camera import CameraPath
from vidseg.data.synth.world import HUMAN, TREE, VEHICLE, World
from vidseg.geometry.homography import apply_homography


@dataclass
class Rendered:
    """A clean frame: RGB float32 (h, w, 3) in [0, 1], labels (h, w) uint8, layers (h, w) int32."""

    rgb: np.ndarray
    labels: np.ndarray
    layers: np.ndarray


class Renderer:
    """Renders the frames of one clip; frames must be requested in order for :meth:`flow`."""

    def __init__(
        self, world: World, actors: list[Actor], path: CameraPath, size: tuple[int, int]
    ) -> None:
        self.world = world
        # Vehicles first so that pedestrians crossing a street are drawn above cars.
        self.actors = sorted(actors, key=lambda a: {VEHICLE: 0, HUMAN: 1}.get(a.cls, 2))
        self.path = path
        self.h, self.w = size
        ys, xs = np.mgrid[0 : self.h, 0 : self.w].astype(np.float64)
        self.grid = np.stack([xs, ys], axis=-1)
        self.positions = np.stack([a.poses[:, :2] for a in self.actors]) if self.actors else None
        self.reach = max((np.hypot(*a.sprite.shape[:2]) for a in self.actors), default=0.0)

    def render(self, n: int) -> Rendered:
        hom = self.path.world_to_image[n]
        size = (self.w, self.h)
        rgb = cv2.warpPerspective(
            self.world.ground, hom, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        rgb = rgb.astype(np.float32) / 255.0
        labels = cv2.warpPerspective(
            self.world.ground_labels,
            hom,
            size,
            flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_REPLICATE,
        )
        layers = np.zeros((self.h, self.w), np.int32)
        for k in self._in_view(n):
            actor = self.actors[k]
            self._composite(actor, k + 1, hom @ actor.sprite_to_world(n), rgb, labels, layers)
        canopy = cv2.warpPerspective(
            self.world.canopy, hom, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        alpha = canopy[..., 3:4].astype(np.float32) / 255.0
        rgb *= 1 - alpha
        rgb += canopy[..., :3].astype(np.float32) / 255.0 * alpha
        crown = alpha[..., 0] >= 0.5
        labels[crown] = TREE
        layers[crown] = 0
        return Rendered(rgb, labels, layers)

    def _in_view(self, n: int) -> np.ndarray:
        """Indices of the actors whose sprite may overlap frame ``n`` (a conservative test)."""
        if not self.actors:
            return np.zeros(0, int)
        corners = np.array(
            [[-0.5, -0.5], [self.w - 0.5, -0.5], [self.w - 0.5, self.h - 0.5], [-0.5, self.h - 0.5]]
        )
        foot = apply_homography(np.linalg.inv(self.path.world_to_image[n]), corners)
        lo, hi = foot.min(axis=0) - self.reach, foot.max(axis=0) + self.reach
        pos = self.positions[:, n]
        return np.flatnonzero(((pos >= lo) & (pos <= hi)).all(axis=1))

    def _composite(
        self,
        actor: Actor,
        layer: int,
        m: np.ndarray,
        rgb: np.ndarray,
        labels: np.ndarray,
        layers: np.ndarray,
    ) -> None:
        sh, sw = actor.sprite.shape[:2]
        corners = apply_homography(
            m, np.array([[-1, -1], [sw, -1], [sw, sh], [-1, sh]], np.float64)
        )
        x0 = max(int(np.floor(corners[:, 0].min())), 0)
        y0 = max(int(np.floor(corners[:, 1].min())), 0)
        x1 = min(int(np.ceil(corners[:, 0].max())) + 1, self.w)
        y1 = min(int(np.ceil(corners[:, 1].max())) + 1, self.h)
        if x0 >= x1 or y0 >= y1:
            return
        shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
        patch = cv2.warpPerspective(
            actor.sprite,
            shift @ m,
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
        )
        alpha = patch[..., 3:4]
        sl = (slice(y0, y1), slice(x0, x1))
        rgb[sl] = rgb[sl] * (1 - alpha) + patch[..., :3] * alpha
        solid = alpha[..., 0] >= 0.5
        labels[sl][solid] = actor.cls
        layers[sl][solid] = layer

    def flow(
        self, n: int, layers: np.ndarray, prev_layers: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact backward flow from frame n to n-1, (h, w, 2) float32, and its validity mask.

        A pixel is valid when the surface point it shows is inside frame n-1 and visible there,
        that is, not hidden behind another layer (occlusion) and not out of view.
        """
        to_world = np.linalg.inv(self.path.world_to_image[n])
        prev = self.path.world_to_image[n - 1]
        target = cv2.perspectiveTransform(self.grid.reshape(-1, 1, 2), prev @ to_world).reshape(
            self.h, self.w, 2
        )
        moving = np.flatnonzero(layers)
        if moving.size:
            ids = layers.ravel()[moving]
            order = np.argsort(ids, kind="stable")
            moving, ids = moving[order], ids[order]
            starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
            flat_target = target.reshape(-1, 2)
            flat_grid = self.grid.reshape(-1, 1, 2)
            for a, b in zip(starts, np.r_[starts[1:], len(ids)], strict=True):
                actor = self.actors[ids[a] - 1]
                motion = (
                    prev
                    @ actor.sprite_to_world(n - 1)
                    @ np.linalg.inv(actor.sprite_to_world(n))
                    @ to_world
                )
                pix = moving[a:b]
                flat_target[pix] = cv2.perspectiveTransform(flat_grid[pix], motion)[:, 0]
        flow = (target - self.grid).astype(np.float32)
        xi = np.rint(target[..., 0])
        yi = np.rint(target[..., 1])
        inside = (xi >= 0) & (xi < self.w) & (yi >= 0) & (yi < self.h)
        valid = np.zeros((self.h, self.w), bool)
        xs_in = xi[inside].astype(np.intp)
        ys_in = yi[inside].astype(np.intp)
        valid[inside] = prev_layers[ys_in, xs_in] == layers[inside]
        return flow, valid
