"""The optical-flow estimator interface.

Every estimator maps two RGB frames to ``flow_src_to_dst``: the point at pixel p of ``src`` is
at ``p + flow[p]`` in ``dst`` (channel 0 = dx, channel 1 = dy, pixels; pixel centres at integer
coordinates). Backward-warping ``dst`` by this flow brings it onto ``src``'s grid.

- NumPy: ``est(src, dst)`` with (H, W, 3) uint8 RGB frames returns (H, W, 2) float32.
- torch: ``est.batch(src, dst)`` with (B, 3, H, W) tensors (uint8 in 0..255, or float in 0..1,
  the same input convention as the segmenters) returns (B, 2, H, W) float32 on the input device.
- ``est.pair(clip, a, b)`` gives the flow from frame ``a`` to frame ``b`` of a dataset clip;
  image-based estimators read the two frames, the ``gt`` estimator reads the stored flow.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from vidseg.errors import ConfigError
from vidseg.utils.images import check_rgb_pair, tensor_to_rgb_uint8


class ClipLike(Protocol):
    """What flow estimators need from a dataset clip (``vidseg.data.folder.Clip`` has it)."""

    id: str

    def image(self, n: int) -> np.ndarray: ...

    def flow(self, n: int) -> np.ndarray | None: ...


def check_pair(src: np.ndarray, dst: np.ndarray) -> None:
    """Raise a ConfigError unless ``src`` and ``dst`` are equal-sized (H, W, 3) uint8 images."""
    check_rgb_pair(src, dst, "flow", ("src", "dst"))


def check_batch(src: Tensor, dst: Tensor) -> None:
    """Raise a ConfigError unless ``src`` and ``dst`` are equal-shaped (B, 3, H, W) tensors."""
    for name, images in (("src", src), ("dst", dst)):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(
                f"flow input {name}: expected a (B, 3, H, W) tensor, got {tuple(images.shape)}"
            )
    if src.shape != dst.shape:
        raise ConfigError(
            f"flow inputs differ in shape: src {tuple(src.shape)}, dst {tuple(dst.shape)}"
        )


class FlowEstimator(ABC):
    """Base class of the flow estimators built by :func:`vidseg.flow.build`."""

    #: Registry name (``dis``, ``farneback``, ``raft``, ...).
    name: str = ""

    @abstractmethod
    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Flow from ``src`` to ``dst``: (H, W, 3) uint8 RGB in, (H, W, 2) float32 out."""

    def batch(self, src: Tensor, dst: Tensor) -> Tensor:
        """Batched flow: (B, 3, H, W) uint8 or float 0..1 in, (B, 2, H, W) float32 out.

        The default runs the NumPy path frame by frame; learned estimators override it.
        """
        check_batch(src, dst)
        a, b = tensor_to_rgb_uint8(src), tensor_to_rgb_uint8(dst)
        flows = np.stack([self(x, y) for x, y in zip(a, b, strict=True)])
        return torch.from_numpy(flows).permute(0, 3, 1, 2).to(src.device)

    def pair(self, clip: ClipLike, a: int, b: int) -> np.ndarray:
        """Flow from frame ``a`` to frame ``b`` of ``clip``, (H, W, 2) float32."""
        return self(clip.image(a), clip.image(b))

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Every setting that changes the output (JSON-serialisable); keys the flow cache."""

    @property
    def key(self) -> str:
        """A short, stable identifier of the estimator and its settings, e.g. ``dis-1a2b3c4d``."""
        blob = json.dumps({"name": self.name, **self.settings()}, sort_keys=True)
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"
