"""Segmentation accuracy from one confusion matrix: IoU, mIoU (three rules), wIoU, accuracies.

Conventions: a confusion matrix is (C, C) int64 with rows = ground truth and columns = prediction;
pixels whose ground truth is the ignore index are not counted. Every metric is a fraction in [0, 1]
(reports print percentages) and NaN where it is undefined. Scores are computed from one matrix
accumulated over all evaluated frames, never averaged per image (see docs/metrics.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, TypeVar

import numpy as np
import torch

from vidseg.data.classes import IGNORE_INDEX
from vidseg.errors import DataError
from vidseg.metrics.distributed import all_reduce_confusion

Labels = TypeVar("Labels", np.ndarray, torch.Tensor)

AVERAGES: Final[tuple[str, ...]] = ("union", "gt", "all")
"""The mIoU averaging rules accepted by :func:`miou` (see its docstring)."""

# torch's unsigned types wider than 8 bits lack min/max and comparisons: cast them to int64.
_TORCH_WIDE_UNSIGNED = tuple(
    getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name)
)


class MetricInputError(DataError, ValueError):
    """Label maps that cannot be scored: mismatched shapes or class ids out of range.

    A :class:`~vidseg.errors.DataError` (the CLI prints it as one line) and a ``ValueError``.
    """


# --------------------------------------------------------------------------- confusion matrix


def _is_integer(x: np.ndarray | torch.Tensor) -> bool:
    if isinstance(x, np.ndarray):
        return np.issubdtype(x.dtype, np.integer)
    return not (x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool)


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise TypeError(f"num_classes must be an int, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


def _check_label_maps(pred: Any, gt: Any) -> None:
    """Both NumPy or both torch (same device), integer dtypes, identical shapes."""
    kinds = (np.ndarray, torch.Tensor)
    for name, x in (("pred", pred), ("gt", gt)):
        if not isinstance(x, kinds):
            raise TypeError(
                f"{name} must be a NumPy array or a torch tensor, got {type(x).__name__}"
            )
    if isinstance(pred, np.ndarray) != isinstance(gt, np.ndarray):
        raise TypeError(
            f"pred and gt must be of the same kind (both NumPy or both torch), got "
            f"{type(pred).__name__} and {type(gt).__name__}"
        )
    for name, x in (("pred", pred), ("gt", gt)):
        if not _is_integer(x):
            raise TypeError(f"{name} must hold integer class ids, got dtype {x.dtype}")
    if isinstance(pred, torch.Tensor) and pred.device != gt.device:
        raise ValueError(f"pred is on {pred.device} but gt is on {gt.device}")
    if tuple(pred.shape) != tuple(gt.shape):
        raise MetricInputError(
            f"pred and gt shapes differ: pred {tuple(pred.shape)} vs gt {tuple(gt.shape)}"
        )


def _first_out_of_range(values: Labels, num_classes: int) -> tuple[int, int] | None:
    """(an offending value, number of offending entries) if any value is outside [0, C)."""
    size = values.numel() if isinstance(values, torch.Tensor) else values.size
    if size == 0:
        return None
    lo, hi = int(values.min()), int(values.max())
    if lo >= 0 and hi < num_classes:
        return None
    bad = lo if lo < 0 else hi
    count = int(((values < 0) | (values >= num_classes)).sum())
    return bad, count


def _ignore_mask(gt: Labels, ignore_index: int | None) -> Labels | None:
    """Boolean mask of the counted pixels, or None when no pixel can equal ``ignore_index``."""
    if ignore_index is None:
        return None
    info = np.iinfo(gt.dtype) if isinstance(gt, np.ndarray) else torch.iinfo(gt.dtype)
    # torch compares an int8 map with 255 after wrapping 255 to -1: skip ids the dtype cannot hold.
    if not info.min <= ignore_index <= info.max:
        return None
    return gt != ignore_index


def confusion_matrix(
    pred: Labels, gt: Labels, num_classes: int, ignore_index: int | None = IGNORE_INDEX
) -> Labels:
    """(C, C) int64 confusion matrix of integer label maps; rows = ground truth, cols = prediction.

    ``pred`` and ``gt`` have any identical shape (one map, a batch, a clip) and any integer dtype;
    NumPy in gives NumPy out, torch in gives a tensor on the input's device. Pixels whose ``gt`` is
    ``ignore_index`` (None: none) are skipped. Every other ``gt`` value and every ``pred`` value,
    at ignored pixels too, must lie in ``[0, num_classes)``: otherwise :class:`MetricInputError`.
    """
    num_classes = _check_num_classes(num_classes)
    _check_label_maps(pred, gt)
    is_torch = isinstance(gt, torch.Tensor)
    if is_torch:
        pred = pred.detach()
        gt = gt.detach()
        if pred.dtype in _TORCH_WIDE_UNSIGNED:
            pred = pred.long()
        if gt.dtype in _TORCH_WIDE_UNSIGNED:
            gt = gt.long()
    p = pred.reshape(-1)
    g = gt.reshape(-1)

    bad = _first_out_of_range(p, num_classes)
    if bad is not None:
        raise MetricInputError(
            f"prediction holds class id {bad[0]} ({bad[1]} pixel(s)), outside the valid range "
            f"[0, {num_classes}); predictions must be class ids, and predictions from external "
            "files may carry garbage (an ignore label, palette colours, ids of another class table)"
        )
    keep = _ignore_mask(g, ignore_index)
    if keep is not None:
        g = g[keep]
        p = p[keep]
    bad = _first_out_of_range(g, num_classes)
    if bad is not None:
        ignored = "no ignore index" if ignore_index is None else f"ignore index {ignore_index}"
        raise MetricInputError(
            f"ground truth holds label {bad[0]} ({bad[1]} pixel(s)), outside the valid range "
            f"[0, {num_classes}) ({ignored}); check num_classes and the label remapping"
        )

    n_bins = num_classes * num_classes
    if is_torch:
        codes = g.long() * num_classes + p.long()
        return torch.bincount(codes, minlength=n_bins).reshape(num_classes, num_classes)
    codes = g.astype(np.int64) * num_classes + p.astype(np.int64)
    return (
        np.bincount(codes, minlength=n_bins)
        .astype(np.int64, copy=False)
        .reshape(num_classes, num_classes)
    )


# --------------------------------------------------------------------------- scores


def _as_conf(conf: np.ndarray | torch.Tensor) -> np.ndarray:
    """A (C, C) float64 NumPy copy of a confusion matrix, validated."""
    if isinstance(conf, torch.Tensor):
        conf = conf.detach().cpu().numpy()
    m = np.asarray(conf)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"a confusion matrix is a non-empty square (C, C) array, got {m.shape}")
    if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
        raise TypeError(f"a confusion matrix holds pixel counts, got dtype {m.dtype}")
    m = m.astype(np.float64)
    if (m < 0).any():
        raise ValueError("a confusion matrix holds pixel counts and cannot have negative entries")
    return m


def _counts(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TP_c, GT_c, U_c) of a float64 confusion matrix."""
    tp = np.diag(m)
    gt = m.sum(axis=1)
    union = gt + m.sum(axis=0) - tp
    return tp, gt, union


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def per_class_iou(conf: np.ndarray | torch.Tensor) -> np.ndarray:
    """(C,) float64 IoU_c = TP_c / (GT_c + P_c - TP_c); NaN where the union is empty."""
    tp, _, union = _counts(_as_conf(conf))
    return _ratio(tp, union)


def miou(conf: np.ndarray | torch.Tensor, average: str = "union") -> float:
    """Mean IoU under one of three averaging rules (``AVERAGES``).

    - ``"union"``: over classes with a non-empty union (mmseg, torchmetrics macro; SSP reports it),
      so a class that is only predicted counts as IoU 0;
    - ``"gt"``: over classes present in the ground truth (VSPW, detectron2);
    - ``"all"``: over all C classes, a class with empty union counting as 0 (ETC / semseg).

    NaN when no class qualifies, which for every rule means the matrix is empty.
    """
    if average not in AVERAGES:
        raise ValueError(
            f"unknown mIoU average {average!r}; valid: {', '.join(repr(a) for a in AVERAGES)}"
        )
    m = _as_conf(conf)
    tp, gt, union = _counts(m)
    if m.sum() == 0:
        return math.nan
    iou = _ratio(tp, union)
    if average == "union":
        return float(iou[union > 0].mean())
    if average == "gt":
        return float(iou[gt > 0].mean())
    return float(np.nan_to_num(iou, nan=0.0).mean())


def wiou(conf: np.ndarray | torch.Tensor) -> float:
    """Frequency-weighted IoU: sum over classes with GT_c > 0 of (GT_c / sum GT) * IoU_c.

    Equals torchmetrics' ``average="weighted"`` and detectron2's fwIoU. NaN for an empty matrix.
    """
    m = _as_conf(conf)
    tp, gt, union = _counts(m)
    total = gt.sum()
    if total == 0:
        return math.nan
    present = gt > 0
    # Weighting before dividing by the total keeps a perfect score at exactly 1.0 (the sum of
    # GT_c * IoU_c cannot round above the integer total, a sum of rounded fractions can).
    return float((gt[present] * (tp[present] / union[present])).sum() / total)


def pixel_accuracy(conf: np.ndarray | torch.Tensor) -> float:
    """Fraction of counted pixels predicted correctly, trace / sum; NaN for an empty matrix."""
    m = _as_conf(conf)
    total = m.sum()
    return float(np.trace(m) / total) if total > 0 else math.nan


def class_accuracy(conf: np.ndarray | torch.Tensor) -> np.ndarray:
    """(C,) float64 per-class recall TP_c / GT_c; NaN for classes absent from the ground truth."""
    tp, gt, _ = _counts(_as_conf(conf))
    return _ratio(tp, gt)


def mean_class_accuracy(conf: np.ndarray | torch.Tensor) -> float:
    """mAcc: mean of :func:`class_accuracy` over classes with GT_c > 0; NaN for an empty matrix."""
    acc = class_accuracy(conf)
    present = ~np.isnan(acc)
    return float(acc[present].mean()) if present.any() else math.nan


# --------------------------------------------------------------------------- accumulator


def _or_none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _percent(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100.0 * x:.2f}"


class ConfusionMeter:
    """Accumulates one global confusion matrix over every evaluated frame.

    ``update`` as many times as needed (NumPy or torch label maps), then ``reduce()`` once on every
    rank of a distributed job, then ``compute()``. The matrix is int64 NumPy on the CPU.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.ignore_index = ignore_index
        self._matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        self._reduced = False

    @property
    def matrix(self) -> np.ndarray:
        """A copy of the (C, C) int64 matrix, rows = ground truth."""
        return self._matrix.copy()

    @property
    def num_pixels(self) -> int:
        """Number of counted (non-ignored) pixels so far."""
        return int(self._matrix.sum())

    def reset(self) -> None:
        """Forget every count (also the effect of :meth:`reduce`)."""
        self._matrix[...] = 0
        self._reduced = False

    def update(self, pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> None:
        """Add the pixels of ``pred`` / ``gt`` (same shape, integer ids; see confusion_matrix)."""
        if self._reduced:
            # The matrix already holds every rank's counts: adding local pixels and reducing again
            # would count the earlier ones world_size times.
            raise RuntimeError("update() after reduce(): call reset() before accumulating again")
        conf = confusion_matrix(pred, gt, self.num_classes, self.ignore_index)
        if isinstance(conf, torch.Tensor):
            conf = conf.cpu().numpy()
        self._matrix += conf

    def reduce(self) -> ConfusionMeter:
        """Replace the local matrix by its sum over all ranks (no-op without torch.distributed).

        Collective: every rank must call it, once, after its last ``update``. Returns ``self``.
        """
        if self._reduced:
            raise RuntimeError("reduce() was already called: a second sum would double-count")
        self._matrix = all_reduce_confusion(self._matrix)
        self._reduced = True
        return self

    def compute(self, average: str = "union") -> dict[str, Any]:
        """The scores as JSON-ready Python values (fractions; None where undefined).

        Keys: ``average`` (the mIoU rule), ``miou``, ``per_class_iou`` (list of C), ``wiou``,
        ``pixel_accuracy``, ``mean_class_accuracy``, ``num_pixels``.
        """
        m = self._matrix
        return {
            "average": average,
            "miou": _or_none(miou(m, average)),
            "per_class_iou": [_or_none(v) for v in per_class_iou(m)],
            "wiou": _or_none(wiou(m)),
            "pixel_accuracy": _or_none(pixel_accuracy(m)),
            "mean_class_accuracy": _or_none(mean_class_accuracy(m)),
            "num_pixels": self.num_pixels,
        }

    def summary(self, class_names: Sequence[str] | None = None, average: str = "union") -> str:
        """A plain-text table in percentages: IoU and accuracy per class, then the headline scores.

        Classes whose value is undefined (empty union, absent from the ground truth) show ``n/a``.
        """
        if class_names is None:
            class_names = [str(c) for c in range(self.num_classes)]
        elif len(class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names for {self.num_classes} classes"
            )
        m = self._matrix
        headline = [
            (f"mIoU ({average})", miou(m, average)),
            ("wIoU", wiou(m)),
            ("mAcc", mean_class_accuracy(m)),
            ("pixel acc", pixel_accuracy(m)),
        ]
        width = max(len(name) for name in [*class_names, *(name for name, _ in headline)])
        lines = [f"{'class':<{width}}  {'IoU %':>7}  {'Acc %':>7}"]
        for name, iou, acc in zip(class_names, per_class_iou(m), class_accuracy(m), strict=True):
            lines.append(f"{name:<{width}}  {_percent(iou):>7}  {_percent(acc):>7}")
        lines.append("-" * len(lines[0]))
        lines.extend(f"{name:<{width}}  {_percent(value):>7}" for name, value in headline)
        return "\n".join(lines)
