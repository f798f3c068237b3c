"""Ground-truth flow read from a dataset (the synthetic world writes it for every frame)."""

from __future__ import annotations

from typing import Any

import numpy as np

from vidseg.errors import ConfigError, DataError
from vidseg.flow.base import ClipLike, FlowEstimator


class GroundTruthFlow(FlowEstimator):
    """The stored flow of a clip-folder dataset: ``clips/<clip>/flow/<n>.npy``, frame n to n-1.

    Only :meth:`pair` works (frames alone carry no ground truth), and only in the stored
    direction, from frame n to its previous frame n-1.
    """

    name = "gt"

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        raise ConfigError(
            "flow 'gt' reads ground-truth flow from a dataset clip (est.pair(clip, n, n - 1)); "
            "it cannot compute flow from two images: use 'dis', 'farneback' or 'raft'"
        )

    def pair(self, clip: ClipLike, a: int, b: int) -> np.ndarray:
        if b != a - 1:
            raise ConfigError(
                f"clip {clip.id}: ground-truth flow is stored from frame n to n-1 only; "
                f"asked for {a} -> {b}"
            )
        flow = clip.flow(a)
        if flow is None:
            raise DataError(
                f"clip {clip.id}: no ground-truth flow for frame {a} -> {b} "
                f"(expected flow/{a:06d}.npy in the clip folder and frame {b} to exist)"
            )
        return flow

    def settings(self) -> dict[str, Any]:
        return {}
