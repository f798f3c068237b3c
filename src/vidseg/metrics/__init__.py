"""Evaluation metrics; every value is a fraction in [0, 1] (reports print percentages).

- :mod:`vidseg.metrics.segmentation`: confusion matrix, per-class IoU, mIoU under the three
  averaging rules, wIoU, pixel and class accuracy, and the :class:`ConfusionMeter` accumulator.
- :mod:`vidseg.metrics.temporal`: flow-warped temporal consistency (TC, SSP and clean protocols),
  VSPW video consistency mVC_k, the 5-frame TC5, and streaming meters for TC and mVC_k.
- :mod:`vidseg.metrics.distributed`: summing confusion matrices across ``torch.distributed`` ranks.

Definitions and the codebases each rule comes from: docs/metrics.md.
"""

from vidseg.metrics.distributed import all_reduce_confusion
from vidseg.metrics.segmentation import (
    AVERAGES,
    ConfusionMeter,
    MetricInputError,
    class_accuracy,
    confusion_matrix,
    mean_class_accuracy,
    miou,
    per_class_iou,
    pixel_accuracy,
    wiou,
)
from vidseg.metrics.temporal import (
    DIRECTIONS,
    PROTOCOLS,
    TemporalConsistencyMeter,
    VideoConsistency,
    VideoConsistencyMeter,
    pair_consistency,
    pool_video_consistency,
    ssp_flowwarp,
    tc5_frame,
    temporal_consistency,
    temporal_consistency5,
    video_consistency,
)

__all__ = [
    "AVERAGES",
    "DIRECTIONS",
    "PROTOCOLS",
    "ConfusionMeter",
    "MetricInputError",
    "TemporalConsistencyMeter",
    "VideoConsistency",
    "VideoConsistencyMeter",
    "all_reduce_confusion",
    "class_accuracy",
    "confusion_matrix",
    "mean_class_accuracy",
    "miou",
    "pair_consistency",
    "per_class_iou",
    "pixel_accuracy",
    "pool_video_consistency",
    "ssp_flowwarp",
    "tc5_frame",
    "temporal_consistency",
    "temporal_consistency5",
    "video_consistency",
    "wiou",
]
