"""Learning-rate schedule: per-iteration linear warm-up, then cosine (or poly) decay.

The factor multiplies ``optim.lr``. With the defaults it is the official SSP schedule: warm-up
from ``start`` to 1 over ``warmup_steps``, then a cosine from 1 to ``final`` over the remaining
``total_steps - warmup_steps``. ``total_steps`` may exceed the steps actually run (the official
runs stop at 200 of 250 scheduled epochs, where the factor is about 0.098).
"""

from __future__ import annotations

import math

from vidseg.errors import ConfigError


def lr_factor(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int,
    schedule: str = "cosine",
    start: float = 1e-4,
    final: float = 1e-4,
    power: float = 0.9,
) -> float:
    """Factor of the base learning rate used by optimizer step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return start + (1.0 - start) * step / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    if schedule == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "poly":
        return final + (1.0 - final) * (1.0 - progress) ** power
    raise ConfigError(f"unknown learning-rate schedule '{schedule}' (cosine, poly, constant)")
