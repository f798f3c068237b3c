"""Temporal metrics: flow-warped temporal consistency (TC), VSPW video consistency (mVC_k), TC5.

Conventions: a clip's predictions are (T, H, W) integer class maps (NumPy or torch); a flow is
(H, W, 2) float, channel 0 = dx, channel 1 = dy, in pixels, ``flow_a_to_b`` sending the point at
pixel p of frame a to ``p + flow[p]`` in frame b (docs/motion.md). ``direction="forward"``:
``flows[i] = flow_{i -> i+1}`` and P_{i+1} is warped onto frame i (SSP, VSPW); ``"backward"``:
``flows[i] = flow_{i+1 -> i}`` (our datasets' ``flow/<n>.npy``) and P_i is warped onto frame i+1.
Every value is a fraction in [0, 1]; definitions and their sources: docs/metrics.md.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import torch
from torch import Tensor

from vidseg.data.classes import IGNORE_INDEX
from vidseg.errors import ConfigError
from vidseg.geometry.warp import ssp_flowwarp, warp_flow
from vidseg.metrics.segmentation import MetricInputError, confusion_matrix, miou

Protocol = Literal["ssp", "clean"]
Direction = Literal["forward", "backward"]
ArrayLike = np.ndarray | Tensor

PROTOCOLS: Final[tuple[str, ...]] = ("ssp", "clean")
"""TC protocols: ``"ssp"`` reproduces the SSP paper exactly, ``"clean"`` is the corrected one."""
DIRECTIONS: Final[tuple[str, ...]] = ("forward", "backward")
"""Flow directions accepted by the TC functions (see the module docstring)."""
TC5_OFFSETS: Final[tuple[int, ...]] = (-2, -1, 1, 2)
"""Frames voting with the centre frame in TC5, relative to the centre."""


# --------------------------------------------------------------------------- input checks


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"unknown {name} {value!r}; valid: {valid}")


def _labels(x: ArrayLike, name: str, ndim: int, device: torch.device | None = None) -> Tensor:
    """An integer label tensor with ``ndim`` dimensions, on ``device`` when given."""
    if not isinstance(x, np.ndarray | Tensor):
        raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {type(x).__name__}")
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise MetricInputError(f"{name} must hold integer class ids, got dtype {t.dtype}")
    if t.ndim != ndim:
        raise MetricInputError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    # uint16/32/64 tensors lack comparisons and bincount in torch: widen them.
    if t.dtype not in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        t = t.long()
    return t if device is None else t.to(device)


def _flows(x: ArrayLike, name: str, size: tuple[int, int], device: torch.device) -> Tensor:
    """(..., H, W, 2) flows as a float32 (B, 2, H, W) tensor on ``device``."""
    if not isinstance(x, np.ndarray | Tensor):
        raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {type(x).__name__}")
    t = torch.as_tensor(x)
    if not t.dtype.is_floating_point:
        raise MetricInputError(f"{name} must be a float flow in pixels, got dtype {t.dtype}")
    if t.ndim not in (3, 4) or tuple(t.shape[-3:]) != (*size, 2):
        raise MetricInputError(
            f"{name} has shape {tuple(t.shape)}, expected (..., {size[0]}, {size[1]}, 2) "
            "(dx, dy last)"
        )
    t = t.reshape(-1, *size, 2).permute(0, 3, 1, 2)
    return t.to(device=device, dtype=torch.float32)


def _mask(
    x: ArrayLike | None, name: str, shape: tuple[int, ...], device: torch.device
) -> Tensor | None:
    if x is None:
        return None
    t = torch.as_tensor(x)
    if t.dtype != torch.bool:
        raise MetricInputError(f"{name} must be a bool mask, got dtype {t.dtype}")
    if tuple(t.shape) != shape:
        raise MetricInputError(f"{name} has shape {tuple(t.shape)}, expected {shape}")
    return t.to(device)


# --------------------------------------------------------------------------- warping


def _warp_labels(labels: Tensor, flow: Tensor, protocol: str) -> tuple[Tensor, Tensor | None]:
    """Backward-warp (B, H, W) labels by (B, 2, H, W) flow: (warped long, in-view mask or None)."""
    source = labels[:, None].float()
    if protocol == "ssp":
        return ssp_flowwarp(source, flow)[:, 0].long(), None
    warped, inside = warp_flow(source, flow, mode="nearest", padding="zeros")
    return warped[:, 0].round().long(), inside[:, 0]


# --------------------------------------------------------------------------- TC


def _pair_iou(
    warped: Tensor,
    target: Tensor,
    counted: Tensor | None,
    num_classes: int,
    ignore_index: int | None,
) -> float:
    """Macro IoU over classes present in either map (torchmetrics' macro rule), NaN if empty."""
    if counted is not None:
        warped, target = warped[counted], target[counted]
    conf = confusion_matrix(warped, target, num_classes, ignore_index)
    return miou(conf, "union")


def pair_consistency(
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    flow: ArrayLike,
    num_classes: int,
    *,
    protocol: Protocol = "ssp",
    direction: Direction = "forward",
    valid: ArrayLike | None = None,
    ignore_index: int | None = IGNORE_INDEX,
) -> float:
    """TC of one pair: ``pred_a`` = P_i, ``pred_b`` = P_{i+1}, (H, W) integer maps.

    ``flow`` (H, W, 2): ``flow_{i -> i+1}`` (``direction="forward"``, P_{i+1} warped onto frame i
    and compared with P_i) or ``flow_{i+1 -> i}`` (``"backward"``, P_i warped onto frame i+1 and
    compared with P_{i+1}). ``valid`` (H, W) bool on the flow's grid, ``"clean"`` only: pixels to
    count (e.g. ``~occlusion_mask(...)`` or a dataset's ``flow_valid``). Returns the macro IoU of
    the warped map against the other one, NaN when no pixel is counted.
    """
    _check_choice("protocol", protocol, PROTOCOLS)
    _check_choice("direction", direction, DIRECTIONS)
    if valid is not None and protocol == "ssp":
        raise ConfigError("protocol 'ssp' counts every pixel; pass valid with protocol 'clean'")
    a = _labels(pred_a, "pred_a", 2)
    b = _labels(pred_b, "pred_b", 2, a.device)
    if a.shape != b.shape:
        raise MetricInputError(
            f"pred_a and pred_b shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
        )
    size = (a.shape[0], a.shape[1])
    f = _flows(flow, "flow", size, a.device)
    if f.shape[0] != 1:
        raise MetricInputError(f"flow has shape {tuple(torch.as_tensor(flow).shape)}, one pair")
    mask = _mask(valid, "valid", size, a.device)
    return _pair(a, b, f, num_classes, protocol, direction, mask, ignore_index)


def _pair(
    a: Tensor,
    b: Tensor,
    flow: Tensor,
    num_classes: int,
    protocol: str,
    direction: str,
    valid: Tensor | None,
    ignore_index: int | None,
) -> float:
    source, target = (b, a) if direction == "forward" else (a, b)
    warped, inside = _warp_labels(source[None], flow, protocol)
    warped = warped[0]
    target = target.long()
    if protocol == "ssp":
        # torchmetrics' ignore_index drops pixels whose target is ignore_index. SSP's warped map
        # never holds it (argmax ids); dropping it there too lets label maps be scored.
        counted = None if ignore_index is None else warped != ignore_index
        return _pair_iou(warped, target, counted, num_classes, ignore_index)
    counted = inside[0]
    if valid is not None:
        counted = counted & valid
    if ignore_index is not None:
        counted = counted & (warped != ignore_index) & (target != ignore_index)
    return _pair_iou(warped, target, counted, num_classes, None)


def _nanmean(values: Iterable[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return math.fsum(kept) / len(kept) if kept else math.nan


def temporal_consistency(
    preds: ArrayLike,
    flows: ArrayLike,
    num_classes: int,
    protocol: Protocol = "ssp",
    *,
    direction: Direction = "forward",
    valid: ArrayLike | None = None,
    ignore_index: int | None = IGNORE_INDEX,
) -> float:
    """TC of one clip: mean over its T-1 consecutive pairs of :func:`pair_consistency`.

    ``preds`` (T, H, W) integer maps; ``flows`` (T-1, H, W, 2) with ``flows[i]`` =
    ``flow_{i -> i+1}`` (forward) or ``flow_{i+1 -> i}`` (backward); ``valid`` (T-1, H, W) bool on
    the flows' grids (``"clean"`` only). Pairs with no counted pixel are left out; NaN for T < 2.
    """
    _check_choice("protocol", protocol, PROTOCOLS)
    _check_choice("direction", direction, DIRECTIONS)
    if valid is not None and protocol == "ssp":
        raise ConfigError("protocol 'ssp' counts every pixel; pass valid with protocol 'clean'")
    p = _labels(preds, "preds", 3)
    pairs, size = p.shape[0] - 1, (p.shape[1], p.shape[2])
    f = _flows(flows, "flows", size, p.device)
    if f.shape[0] != max(pairs, 0):
        raise MetricInputError(
            f"flows holds {f.shape[0]} flow(s) for {p.shape[0]} frames; expected T-1 = {pairs}"
        )
    mask = _mask(valid, "valid", (max(pairs, 0), *size), p.device)
    return _nanmean(
        _pair(
            p[i],
            p[i + 1],
            f[i : i + 1],
            num_classes,
            protocol,
            direction,
            None if mask is None else mask[i],
            ignore_index,
        )
        for i in range(pairs)
    )


class TemporalConsistencyMeter:
    """Streaming TC of a split: :meth:`update` per consecutive pair, :meth:`end_clip` per clip.

    Holds no predictions: only the current clip's per-pair values and one value per finished clip.
    The split's TC is the mean of the clip means (each clip weighs the same; a clip without a
    counted pair is left out), as SSP reports it.
    """

    def __init__(
        self,
        num_classes: int,
        protocol: Protocol = "ssp",
        *,
        direction: Direction = "forward",
        ignore_index: int | None = IGNORE_INDEX,
    ) -> None:
        _check_choice("protocol", protocol, PROTOCOLS)
        _check_choice("direction", direction, DIRECTIONS)
        self.num_classes = num_classes
        self.protocol = protocol
        self.direction = direction
        self.ignore_index = ignore_index
        self._pairs: list[float] = []
        self._clips: list[tuple[str | None, float]] = []

    def update(
        self,
        pred_prev: ArrayLike,
        pred_cur: ArrayLike,
        flow: ArrayLike,
        valid: ArrayLike | None = None,
    ) -> float:
        """Add the pair (P_i, P_{i+1}) of the current clip; returns its :func:`pair_consistency`."""
        value = pair_consistency(
            pred_prev,
            pred_cur,
            flow,
            self.num_classes,
            protocol=self.protocol,
            direction=self.direction,
            valid=valid,
            ignore_index=self.ignore_index,
        )
        self._pairs.append(value)
        return value

    def end_clip(self, clip_id: str | None = None) -> float:
        """Close the current clip and return its TC (NaN, and not recorded, if it had no pair)."""
        value = _nanmean(self._pairs)
        self._pairs = []
        if not math.isnan(value):
            self._clips.append((clip_id, value))
        return value

    @property
    def clip_values(self) -> list[tuple[str | None, float]]:
        """(clip id, TC) of every finished clip that had a counted pair, in order."""
        return list(self._clips)

    def compute(self) -> float:
        """Mean of the clip values; NaN before any clip. Raises if a clip is still open."""
        if self._pairs:
            raise RuntimeError("compute() with an open clip: call end_clip() after its last pair")
        return _nanmean(v for _, v in self._clips)


# --------------------------------------------------------------------------- mVC_k (VSPW)


@dataclass(frozen=True)
class VideoConsistency:
    """mVC_k statistics of one clip, to be pooled over clips with :func:`pool_video_consistency`.

    ``score_sum`` is the sum of VC_i over the clip's windows with a non-empty A_i, ``windows`` their
    number, ``empty_windows`` the windows with empty A_i (NaN in VSPW, dropped by its nanmean).
    """

    score_sum: float = 0.0
    windows: int = 0
    empty_windows: int = 0

    @property
    def value(self) -> float:
        """This clip's mean VC over its windows (NaN without a window)."""
        return self.score_sum / self.windows if self.windows else math.nan

    def __add__(self, other: VideoConsistency) -> VideoConsistency:
        return VideoConsistency(
            self.score_sum + other.score_sum,
            self.windows + other.windows,
            self.empty_windows + other.empty_windows,
        )


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 2:
        raise ConfigError(f"the mVC window k must be an int >= 2, got {k!r}")
    return int(k)


def _window_vc(gts: Iterable[Tensor], preds: Iterable[Tensor]) -> VideoConsistency:
    """VC of one window of k frames: |A ∩ B| / |A| as VSPW computes it, as a one-window result."""
    g, p = list(gts), list(preds)
    same_gt = torch.ones_like(g[0], dtype=torch.bool)
    same_pred = torch.ones_like(g[0], dtype=torch.bool)
    for j in range(1, len(g)):
        same_gt &= g[0] == g[j]
        same_pred &= p[0] == p[j]
    a = int(same_gt.sum())
    if a == 0:
        return VideoConsistency(0.0, 0, 1)
    return VideoConsistency(int((same_gt & same_pred).sum()) / a, 1, 0)


def video_consistency(preds: ArrayLike, gts: ArrayLike, k: int) -> VideoConsistency:
    """VSPW's video consistency VC_k of one clip; pool clips with :func:`pool_video_consistency`.

    ``preds`` and ``gts`` (T, H, W) integer maps of every frame. As VSPW's ``VC_perclip.py``
    (docs/metrics.md, peers §2.4): windows start at i = 0 .. T-k-1 (T-k windows: the last full
    window is not used), A_i = pixels whose ground truth is the same in frames i..i+k-1, B_i the
    same for the prediction, VC_i = |A_i ∩ B_i| / |A_i|. No ignore label: void pixels compare like
    any class. A clip with T <= k has no window.
    """
    k = _check_k(k)
    p = _labels(preds, "preds", 3)
    g = _labels(gts, "gts", 3, p.device)
    if p.shape != g.shape:
        raise MetricInputError(f"preds and gts shapes differ: {tuple(p.shape)} vs {tuple(g.shape)}")
    total = VideoConsistency()
    for i in range(p.shape[0] - k):
        total = total + _window_vc(g[i : i + k], p[i : i + k])
    return total


def pool_video_consistency(results: Iterable[VideoConsistency]) -> float:
    """mVC_k of a split: the mean of VC_i over all windows of all clips pooled (VSPW's nanmean).

    Longer clips weigh more; clips without a window contribute nothing; NaN if no window at all.
    """
    total = sum(results, VideoConsistency())
    return total.value


class VideoConsistencyMeter:
    """Streaming mVC_k: :meth:`update` once per frame in order, :meth:`end_clip` after each clip.

    Keeps only the last k frames of the current clip. The window starting at frame i is scored when
    frame i+k arrives, which drops the clip's last full window exactly as VSPW does.
    """

    def __init__(self, k: int) -> None:
        self.k = _check_k(k)
        self._window: deque[tuple[Tensor, Tensor]] = deque(maxlen=self.k)
        self._clip = VideoConsistency()
        self._clips: list[tuple[str | None, VideoConsistency]] = []

    def update(self, pred: ArrayLike, gt: ArrayLike) -> None:
        """Add the next frame of the current clip: (H, W) integer prediction and ground truth."""
        p = _labels(pred, "pred", 2)
        g = _labels(gt, "gt", 2, p.device)
        if p.shape != g.shape:
            raise MetricInputError(
                f"pred and gt shapes differ: {tuple(p.shape)} vs {tuple(g.shape)}"
            )
        if self._window and self._window[0][0].shape != p.shape:
            raise MetricInputError(
                f"frame is {tuple(p.shape)} but the clip's frames are "
                f"{tuple(self._window[0][0].shape)}"
            )
        if len(self._window) == self.k:
            self._clip = self._clip + _window_vc(
                (w[1] for w in self._window), (w[0] for w in self._window)
            )
        self._window.append((p, g))

    def skip(self) -> None:
        """A frame without ground truth: no window may span it, so the window starts again."""
        self._window.clear()

    def end_clip(self, clip_id: str | None = None) -> VideoConsistency:
        """Close the current clip and return its statistics (no window when it had <= k frames)."""
        result = self._clip
        self._clips.append((clip_id, result))
        self._window.clear()
        self._clip = VideoConsistency()
        return result

    @property
    def clip_results(self) -> list[tuple[str | None, VideoConsistency]]:
        """(clip id, statistics) of every finished clip, in order."""
        return list(self._clips)

    def compute(self) -> float:
        """mVC_k of the finished clips (:func:`pool_video_consistency`); raises if one is open."""
        if self._window:
            raise RuntimeError("compute() with an open clip: call end_clip() after its last frame")
        return pool_video_consistency(r for _, r in self._clips)


# --------------------------------------------------------------------------- TC5


def tc5_frame(center: ArrayLike, neighbours: ArrayLike, valid: ArrayLike | None = None) -> float:
    """TC5 of one centre frame: mean over pixels of (votes for the most frequent label) / votes.

    ``center`` (H, W) is P_i; ``neighbours`` (4, H, W) are P_{i-2}, P_{i-1}, P_{i+1}, P_{i+2}
    already warped onto frame i. Without ``valid`` every pixel has 5 votes (SSP's rule); ``valid``
    (4, H, W) bool drops the neighbours' votes where False (the centre always votes).
    """
    c = _labels(center, "center", 2)
    n = _labels(neighbours, "neighbours", 3, c.device)
    if tuple(n.shape) != (len(TC5_OFFSETS), *c.shape):
        raise MetricInputError(
            f"neighbours has shape {tuple(n.shape)}, expected ({len(TC5_OFFSETS)}, "
            f"{c.shape[0]}, {c.shape[1]})"
        )
    votes = torch.cat([c[None].long(), n.long()]).flatten(1)  # (5, HW)
    keep = torch.ones_like(votes, dtype=torch.bool)
    if valid is not None:
        keep[1:] = _mask(valid, "valid", tuple(n.shape), c.device).flatten(1)
    # The most frequent label's count is the largest number of counted votes equal to a counted
    # vote: a 5x5 comparison per pixel instead of a (C, HW) histogram.
    agree = (votes[:, None] == votes[None]) & keep[None]
    counts = agree.sum(1).masked_fill(~keep, 0)
    per_pixel = counts.amax(0).double() / keep.sum(0)
    return float(per_pixel.mean())


def temporal_consistency5(
    preds: ArrayLike,
    flow: Callable[[int, int], ArrayLike],
    *,
    protocol: Protocol = "ssp",
) -> float:
    """TC5 of one clip (SSP's "proposed" 5-frame voting, after arXiv 2308.07615).

    ``preds`` (T, H, W); ``flow(i, j)`` returns ``flow_{i -> j}`` (H, W, 2) for centre i and
    j = i-2, i-1, i+1, i+2. Mean of :func:`tc5_frame` over centres i = 2 .. T-3; NaN for T < 5.
    ``"ssp"`` warps with SSP's flowwarp (out-of-view votes are class 0), ``"clean"`` with the
    pixel-centre warp and drops out-of-view votes. Average clip values for a split.
    """
    _check_choice("protocol", protocol, PROTOCOLS)
    p = _labels(preds, "preds", 3)
    size = (p.shape[1], p.shape[2])
    values = []
    for i in range(2, p.shape[0] - 2):
        js = [i + o for o in TC5_OFFSETS]
        flows = torch.cat([_flows(flow(i, j), f"flow({i}, {j})", size, p.device) for j in js])
        warped, inside = _warp_labels(p[js], flows, protocol)
        values.append(tc5_frame(p[i], warped, inside))
    return math.fsum(values) / len(values) if values else math.nan
