"""One streaming interface for every video model: explicit state in, logits and new state out.

    state = model.init_state()
    for frame in clip:                       # (B, 3, H, W), uint8 0..255 or float 0..1
        logits, state = model.step(frame, state)   # (B, C, H, W) at the frame's resolution

A clip starts from ``init_state()``: nothing is carried across clips, and a method that needs a
previous frame that does not exist (the first frame, a gap in the frame numbers) starts afresh.
Evaluation, prediction, benchmarks and export use only this interface. An image segmenter is the
stateless case (:class:`ImageStreamer`); video methods subclass :class:`VideoModel`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from vidseg.models.segmenter import Segmenter


class VideoModel(nn.Module, ABC):
    """Base class of the video models: causal, frame by frame, with an explicit state.

    The state is whatever the method carries between frames (cached features, the previous
    fused logits, the previous raw frame); it is opaque to callers, who only pass it back.
    """

    #: The image segmenter inside, for parameter counts and checkpoints.
    segmenter: Segmenter

    @abstractmethod
    def init_state(self) -> Any:
        """The state before the first frame of a clip."""

    @abstractmethod
    def step(self, frame: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Logits (B, C, H, W) of ``frame`` (B, 3, H, W) given the clip so far; the new state."""

    def forward_clip(self, frames: Tensor) -> Tensor:
        """Run a whole clip (T, B, 3, H, W) through :meth:`step`; returns (T, B, C, H, W).

        The reference that the streaming path is tested against; holds every output in memory.
        """
        state = self.init_state()
        outputs = []
        for frame in frames:
            logits, state = self.step(frame, state)
            outputs.append(logits)
        return torch.stack(outputs)


class ImageStreamer(VideoModel):
    """An image segmenter on the streaming interface: every frame on its own, no state."""

    def __init__(self, segmenter: Segmenter) -> None:
        super().__init__()
        self.segmenter = segmenter

    def init_state(self) -> None:
        return None

    def step(self, frame: Tensor, state: None) -> tuple[Tensor, None]:
        return self.segmenter(frame), None


def as_video_model(model: nn.Module) -> VideoModel:
    """``model`` on the streaming interface: video models as they are, segmenters wrapped."""
    if isinstance(model, VideoModel):
        return model
    if isinstance(model, Segmenter):
        return ImageStreamer(model)
    raise TypeError(f"expected a Segmenter or a VideoModel, got {type(model).__name__}")
