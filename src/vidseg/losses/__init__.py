"""Training losses of the video methods (see docs/ssp.md)."""

from vidseg.losses.distillation import align_teacher, consistent_targets, kd_loss
from vidseg.losses.temporal import temporal_consistency_loss

__all__ = ["align_teacher", "consistent_targets", "kd_loss", "temporal_consistency_loss"]
