"""Evaluation metrics; every value is a fraction in [0, 1] (reports print percentages).

- :mod:`vidseg.metrics.segmentation`: confusion matrix, per-class IoU, mIoU under the three
  averaging rules, wIoU, pixel and class accuracy, and the :class:`ConfusionMeter` accumulator.
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

__all__ = [
    "AVERAGES",
    "ConfusionMeter",
    "MetricInputError",
    "all_reduce_confusion",
    "class_accuracy",
    "confusion_matrix",
    "mean_class_accuracy",
    "miou",
    "per_class_iou",
    "pixel_accuracy",
    "wiou",
]
