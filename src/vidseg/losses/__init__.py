"""Training losses of the video methods (see docs/ssp.md)."""

from vidseg.losses.temporal import temporal_consistency_loss

__all__ = ["temporal_consistency_loss"]
