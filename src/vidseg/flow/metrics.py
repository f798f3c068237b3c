"""Flow accuracy against ground truth."""

from __future__ import annotations

import numpy as np


def endpoint_error(flow: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean end-point error in pixels, ``mean ||flow - gt||_2`` over ``valid`` pixels.

    ``flow`` and ``gt`` are (H, W, 2); ``valid`` is an (H, W) bool mask (all pixels if None).
    NaN when no pixel is valid.
    """
    flow = np.asarray(flow, np.float64)
    gt = np.asarray(gt, np.float64)
    if flow.shape != gt.shape or flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"expected two (H, W, 2) flows of one shape, got {flow.shape}, {gt.shape}")
    error = np.linalg.norm(flow - gt, axis=-1)
    if valid is not None:
        if valid.shape != error.shape:
            raise ValueError(f"valid mask is {valid.shape}, flows are {error.shape}")
        error = error[valid]
    return float(error.mean()) if error.size else float("nan")
