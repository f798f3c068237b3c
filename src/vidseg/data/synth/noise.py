"""Fast seeded value noise: random lattices upsampled with bicubic interpolation."""

from __future__ import annotations

import cv2
import numpy as np


def value_noise(shape: tuple[int, int], cell: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise of shape (h, w), float32, roughly zero-mean with unit standard deviation.

    ``cell`` is the feature size in pixels (the lattice spacing).
    """
    h, w = shape
    cell = max(float(cell), 1.0)
    gh, gw = int(np.ceil(h / cell)) + 3, int(np.ceil(w / cell)) + 3
    lattice = rng.standard_normal((gh, gw)).astype(np.float32)
    up = cv2.resize(lattice, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    # A random sub-pixel offset into the upsampled lattice hides the lattice alignment.
    oy = int(rng.integers(0, max(1, up.shape[0] - h - int(cell))))
    ox = int(rng.integers(0, max(1, up.shape[1] - w - int(cell))))
    out = up[oy : oy + h, ox : ox + w]
    return out / max(float(out.std()), 1e-6)


def fractal_noise(
    shape: tuple[int, int],
    cell: float,
    rng: np.random.Generator,
    octaves: int = 3,
    persistence: float = 0.5,
) -> np.ndarray:
    """Sum of ``octaves`` value-noise layers, each with half the cell size and ``persistence``
    times the weight of the previous one."""
    total = np.zeros(shape, np.float32)
    weight, norm = 1.0, 0.0
    for i in range(octaves):
        total += weight * value_noise(shape, cell / 2**i, rng)
        norm += weight**2
        weight *= persistence
    return total / np.sqrt(norm)


def smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Hermite step from 0 at ``lo`` to 1 at ``hi``."""
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)
