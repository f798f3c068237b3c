"""Temporal metrics: TC (SSP and clean protocols), mVC_k, TC5, streaming meters."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from vidseg.errors import ConfigError
from vidseg.metrics import (
    MetricInputError,
    TemporalConsistencyMeter,
    VideoConsistency,
    VideoConsistencyMeter,
    pair_consistency,
    pool_video_consistency,
    tc5_frame,
    temporal_consistency,
    temporal_consistency5,
    video_consistency,
)

# ----------------------------------------------------------------------------- references


def official_warp(labels: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """SSP's flowwarp written out in NumPy: x reads round((x + dx) W / (W - 1) - 0.5), else 0."""
    h, w = labels.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    ix = np.rint((xs + flow[..., 0]) * w / (w - 1) - 0.5).astype(np.int64)
    iy = np.rint((ys + flow[..., 1]) * h / (h - 1) - 0.5).astype(np.int64)
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    out = np.zeros_like(labels)
    out[inside] = labels[iy[inside], ix[inside]]
    return out


def clean_warp(labels: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre nearest backward warp: (values, in view)."""
    h, w = labels.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    ix = np.rint(xs + flow[..., 0]).astype(np.int64)
    iy = np.rint(ys + flow[..., 1]).astype(np.int64)
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    out = np.zeros_like(labels)
    out[inside] = labels[iy[inside], ix[inside]]
    return out, inside


def shifted_pair(rng: np.random.Generator, h: int, w: int, dx: int, dy: int, classes: int):
    """(P_i, P_{i+1}) where content moves by (dx, dy); the uncovered border is random."""
    a = rng.integers(0, classes, (h, w))
    b = rng.integers(0, classes, (h, w))
    ys, xs = np.mgrid[0:h, 0:w]
    src_x, src_y = xs - dx, ys - dy
    ok = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    b[ok] = a[src_y[ok], src_x[ok]]
    return a, b


def constant_flow(h: int, w: int, dx: float, dy: float) -> np.ndarray:
    return np.broadcast_to(np.array([dx, dy], np.float32), (h, w, 2)).copy()


# ----------------------------------------------------------------------------- TC


@pytest.mark.parametrize("protocol", ["ssp", "clean"])
def test_identical_predictions_with_zero_flow_are_fully_consistent(protocol):
    # Odd sizes: SSP's stretched grid maps every pixel centre back onto itself.
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 5, (5, 7))
    preds = np.stack([frame] * 3)
    flows = np.zeros((2, 5, 7, 2), np.float32)
    assert temporal_consistency(preds, flows, 5, protocol) == 1.0


def test_ssp_zero_flow_on_even_sizes_fills_the_last_row_and_column_with_class_0():
    # The last centre (W - 1) maps to (W - 1) W / (W - 1) - 0.5 = W - 0.5, rounded half to even:
    # W when W is even, outside the image, so class 0 comes in even without motion.
    frame = np.array([[1, 1, 2, 2, 3, 3]] * 3 + [[3, 3, 3, 3, 3, 3]])
    preds = np.stack([frame, frame])
    flows = np.zeros((1, 4, 6, 2), np.float32)
    # Warped: rows 0-2 = 1 1 2 2 3 0, row 3 = 0. Class 0: 9 predicted, none in the target -> 0;
    # class 1: 6/6; class 2: 6/6; class 3: 3 kept of the target's 12 -> 3/12.
    assert temporal_consistency(preds, flows, 4, "ssp") == pytest.approx((0 + 1 + 1 + 0.25) / 4)
    assert temporal_consistency(preds, flows, 4, "clean") == 1.0


def test_known_shift_hand_computed():
    # Content moves right by one pixel; forward flow +1. SSP samples P_{i+1} at
    # round((x + 1) * 6/5 - 0.5) = 1, 2, 3, 4, 6 (outside), 7 (outside).
    p0 = np.array([[1, 1, 2, 2, 3, 3]])
    p1 = np.array([[1, 1, 1, 2, 2, 3]])
    preds = np.stack([p0, p1])
    fwd = constant_flow(1, 6, 1.0, 0.0)[None]
    # Warped [1, 1, 2, 2, 0, 0] vs [1, 1, 2, 2, 3, 3]: IoU 0 (class 0), 1, 1, 0 (class 3).
    assert temporal_consistency(preds, fwd, 4, "ssp") == pytest.approx(0.5)
    # Without the W/(W-1) stretch class 3 would keep one pixel: (0 + 1 + 1 + 0.5) / 4.
    assert temporal_consistency(preds, fwd, 4, "ssp") != pytest.approx(0.625)
    # Clean: pixel 5 leaves the view and is not counted; the rest matches exactly.
    assert temporal_consistency(preds, fwd, 4, "clean") == 1.0
    # Backward flow -1 on frame 1: SSP samples P_0 at round((x - 1) * 6/5 - 0.5) = outside, 0,
    # 1, 2, 3, 4 -> [0, 1, 1, 2, 2, 3] vs [1, 1, 1, 2, 2, 3]: (0 + 2/3 + 1 + 1) / 4.
    bwd = -fwd
    assert temporal_consistency(preds, bwd, 4, "ssp", direction="backward") == pytest.approx(
        (2 / 3 + 2) / 4
    )
    assert temporal_consistency(preds, bwd, 4, "clean", direction="backward") == 1.0


def test_ssp_warp_matches_the_numpy_formula_on_a_2d_example():
    rng = np.random.default_rng(1)
    for h, w in [(4, 6), (5, 8), (7, 5)]:
        labels = rng.integers(0, 6, (h, w))
        flow = rng.integers(-8, 9, (h, w, 2)).astype(np.float32) / 4
        for target in (labels, rng.integers(0, 6, (h, w))):
            preds = np.stack([target, labels])
            warped = official_warp(labels, flow)
            expected = _macro_iou(warped, target, 6)
            assert temporal_consistency(preds, flow[None], 6, "ssp") == pytest.approx(expected)


def _macro_iou(pred: np.ndarray, target: np.ndarray, classes: int) -> float:
    ious = []
    for c in range(classes):
        inter = np.sum((pred == c) & (target == c))
        union = np.sum((pred == c) | (target == c))
        if union:
            ious.append(inter / union)
    return float(np.mean(ious))


def test_ssp_tc_equals_torchmetrics_jaccard_on_the_warped_pairs():
    classification = pytest.importorskip("torchmetrics.classification")
    rng = np.random.default_rng(2)
    classes, t, h, w = 5, 4, 12, 10
    preds = rng.integers(0, classes, (t, h, w))
    preds[0, :2] = 255  # frame 0 is only ever the target, where 255 is ignored
    flows = rng.normal(0, 2, (t - 1, h, w, 2)).astype(np.float32)
    values = []
    for i in range(t - 1):
        jaccard = classification.MulticlassJaccardIndex(classes, average="macro", ignore_index=255)
        warped = official_warp(preds[i + 1], flows[i])
        values.append(float(jaccard(torch.from_numpy(warped), torch.from_numpy(preds[i]))))
    assert temporal_consistency(preds, flows, classes, "ssp") == pytest.approx(np.mean(values))


def test_clean_tc_counts_only_in_view_and_valid_pixels():
    rng = np.random.default_rng(3)
    h, w, classes = 6, 9, 4
    a, b = rng.integers(0, classes, (2, h, w))
    flow = rng.integers(-3, 4, (h, w, 2)).astype(np.float32)
    valid = rng.random((h, w)) > 0.3
    warped, inside = clean_warp(b, flow)
    counted = inside & valid
    expected = _macro_iou(warped[counted], a[counted], classes)
    got = pair_consistency(a, b, flow, classes, protocol="clean", valid=valid)
    assert got == pytest.approx(expected)
    preds = np.stack([a, b])
    masks = valid[None]
    assert temporal_consistency(preds, flow[None], classes, "clean", valid=masks) == got


def test_backward_direction_with_the_inverse_shift_equals_forward():
    # With a constant integer shift both directions pair exactly the same pixels in clean mode.
    rng = np.random.default_rng(4)
    for dx, dy in [(2, 0), (-1, 3), (1, -2)]:
        a, b = rng.integers(0, 5, (2, 8, 11))  # not a shifted copy: values below 1
        preds = np.stack([a, b])
        fwd = constant_flow(8, 11, dx, dy)[None]
        forward = temporal_consistency(preds, fwd, 5, "clean")
        backward = temporal_consistency(preds, -fwd, 5, "clean", direction="backward")
        assert forward < 1
        assert backward == pytest.approx(forward)
        a, b = shifted_pair(rng, 8, 11, dx, dy, 5)
        preds = np.stack([a, b])
        assert temporal_consistency(preds, fwd, 5, "clean") == 1.0
        assert temporal_consistency(preds, -fwd, 5, "clean", direction="backward") == 1.0


def test_torch_input_gives_the_numpy_result():
    rng = np.random.default_rng(5)
    preds = rng.integers(0, 4, (3, 6, 7)).astype(np.uint8)
    flows = rng.normal(0, 1.5, (2, 6, 7, 2)).astype(np.float32)
    for protocol in ("ssp", "clean"):
        expected = temporal_consistency(preds, flows, 4, protocol)
        got = temporal_consistency(torch.from_numpy(preds), torch.from_numpy(flows), 4, protocol)
        assert got == expected


def test_bad_input_names_the_value_at_fault():
    preds = np.zeros((3, 4, 5), np.int64)
    with pytest.raises(MetricInputError, match="flows holds 1"):
        temporal_consistency(preds, np.zeros((1, 4, 5, 2), np.float32), 2)
    with pytest.raises(MetricInputError, match=r"\(\.\.\., 4, 5, 2\)"):
        temporal_consistency(preds, np.zeros((2, 5, 4, 2), np.float32), 2)
    with pytest.raises(MetricInputError, match="integer class ids"):
        temporal_consistency(preds.astype(np.float32), np.zeros((2, 4, 5, 2), np.float32), 2)
    with pytest.raises(ConfigError, match="protocol 'bogus'"):
        temporal_consistency(preds, np.zeros((2, 4, 5, 2), np.float32), 2, "bogus")
    with pytest.raises(ConfigError, match="valid with protocol 'clean'"):
        temporal_consistency(
            preds, np.zeros((2, 4, 5, 2), np.float32), 2, valid=np.ones((2, 4, 5), bool)
        )
    with pytest.raises(MetricInputError, match="outside the valid range"):
        temporal_consistency(preds + 3, np.zeros((2, 4, 5, 2), np.float32), 2)


def test_tc_meter_matches_the_one_shot_function():
    rng = np.random.default_rng(6)
    clips = [rng.integers(0, 4, (t, 5, 6)) for t in (4, 2, 1, 3)]
    flows = [rng.normal(0, 1.5, (len(c) - 1, 5, 6, 2)).astype(np.float32) for c in clips]
    for protocol, direction in [("ssp", "forward"), ("clean", "backward")]:
        meter = TemporalConsistencyMeter(4, protocol, direction=direction)
        expected = []
        for n, (clip, flow) in enumerate(zip(clips, flows, strict=True)):
            for i in range(len(clip) - 1):
                meter.update(clip[i], clip[i + 1], flow[i])
            value = meter.end_clip(f"clip{n}")
            one_shot = temporal_consistency(clip, flow, 4, protocol, direction=direction)
            assert value == one_shot or (math.isnan(value) and math.isnan(one_shot))
            if len(clip) > 1:
                expected.append(one_shot)
        assert [name for name, _ in meter.clip_values] == ["clip0", "clip1", "clip3"]
        assert meter.compute() == pytest.approx(np.mean(expected))
    meter.update(clips[0][0], clips[0][1], flows[0][0])
    with pytest.raises(RuntimeError, match="end_clip"):
        meter.compute()


def test_ground_truth_labels_are_consistent_under_ground_truth_flow(tmp_path):
    from vidseg.data import open_dataset, synthesize

    root = synthesize(
        tmp_path / "synth",
        clips=1,
        val_clips=0,
        test_clips=0,
        frames=8,
        size=96,
        label_every=1,
        seed=0,
        show_progress=False,
    )
    clip = open_dataset(root, "train")[0]
    frames = clip.frames
    labels = np.stack([clip.label(n) for n in frames])
    flows = np.stack([clip.flow(n) for n in frames[1:]])  # frame n -> n - 1
    valid = np.stack([clip.flow_valid(n) for n in frames[1:]])
    num = clip.num_classes

    def tc(flows: np.ndarray, direction: str = "backward", protocol: str = "clean") -> float:
        mask = valid if protocol == "clean" else None
        return temporal_consistency(labels, flows, num, protocol, direction=direction, valid=mask)

    clean = tc(flows)
    # Nearest resampling of rasterised labels at sub-pixel positions flips boundary pixels; at
    # 96x96 the small classes make that 0.84 (0.95 at 256x256, see docs/metrics.md).
    assert clean >= 0.8
    # The ground-truth flow in its own direction beats a half-pixel offset, the wrong direction
    # and no motion: conventions and direction handling agree with the renderer.
    assert clean > tc(flows + 0.5) + 0.05
    assert clean > tc(flows, "forward") + 0.1
    assert clean > tc(np.zeros_like(flows)) + 0.05
    assert 0.5 < tc(flows, protocol="ssp") < clean


def test_ground_truth_tc_reaches_097_on_the_documented_512_clips(tmp_path):
    # The sanity check of data and metric documented in docs/metrics.md: 4 val clips of 30
    # frames at 512x512, seed 0, clean protocol with the flow's validity mask (0.9732 measured).
    from vidseg.data import open_dataset, synthesize

    root = synthesize(
        tmp_path / "synth",
        clips=5,
        val_clips=4,
        test_clips=0,
        frames=30,
        size=512,
        seed=0,
        workers=1,
        show_progress=False,
    )
    values = []
    for clip in open_dataset(root, "val"):
        labels = np.stack([clip.label(n) for n in clip.frames])
        flows = np.stack([clip.flow(n) for n in clip.frames[1:]])
        valid = np.stack([clip.flow_valid(n) for n in clip.frames[1:]])
        values.append(
            temporal_consistency(
                labels, flows, clip.num_classes, "clean", direction="backward", valid=valid
            )
        )
    assert np.mean(values) >= 0.97


# ----------------------------------------------------------------------------- mVC_k

# A hand-made 4-frame clip of 1x4 maps: ground truth and prediction.
GTS = np.array([[[1, 1, 2, 2]], [[1, 1, 2, 3]], [[1, 2, 2, 3]], [[1, 2, 2, 3]]])
PREDS = np.array([[[1, 1, 2, 2]], [[1, 2, 2, 2]], [[1, 2, 2, 2]], [[0, 2, 2, 2]]])


def test_mvc_hand_computed():
    # k = 2, windows (0, 1) and (1, 2); (2, 3) is dropped as in VSPW.
    # (0, 1): A = [T, T, T, F], B = [T, F, T, T] -> 2/3.  (1, 2): A = [T, F, T, T], B all -> 1.
    vc2 = video_consistency(PREDS, GTS, 2)
    assert vc2.windows == 2
    assert vc2.empty_windows == 0
    assert vc2.value == pytest.approx((2 / 3 + 1) / 2)
    # k = 3, window (0, 1, 2) only: A = [T, F, T, F], B = [T, F, T, T] -> 1.
    vc3 = video_consistency(PREDS, GTS, 3)
    assert (vc3.windows, vc3.value) == (1, 1.0)
    # k = 4: a clip of T <= k frames has no window.
    vc4 = video_consistency(PREDS, GTS, 4)
    assert vc4 == VideoConsistency()
    assert math.isnan(vc4.value)


def test_mvc_pools_windows_over_clips():
    clip_a = video_consistency(PREDS, GTS, 2)  # VC 2/3 and 1
    # 3 frames of 1x2: one window, A = both pixels, B = first pixel only -> 1/2.
    clip_b = video_consistency(np.array([[[1, 1]], [[1, 2]], [[1, 2]]]), np.ones((3, 1, 2), int), 2)
    # Ground truth changes everywhere: |A| = 0, a NaN window that VSPW's nanmean drops.
    clip_c = video_consistency(np.ones((3, 1, 2), int), np.array([[[1, 1]], [[2, 2]], [[3, 3]]]), 2)
    clip_short = video_consistency(PREDS[:2], GTS[:2], 2)
    assert (clip_c.windows, clip_c.empty_windows) == (0, 1)
    pooled = pool_video_consistency([clip_a, clip_b, clip_c, clip_short])
    assert pooled == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)  # not the clip mean (5/6 + 1/2) / 2
    assert math.isnan(pool_video_consistency([clip_short]))


def test_mvc_meter_matches_the_one_shot_function():
    rng = np.random.default_rng(7)
    clips = []
    for t in (12, 3, 9):
        # Ground truth that rarely changes, so that windows of 8 still have consistent pixels.
        gts = np.cumsum(rng.random((t, 6, 5)) < 0.05, axis=0) % 3
        preds = np.where(rng.random((t, 6, 5)) < 0.1, rng.integers(0, 3, (t, 6, 5)), gts)
        clips.append((preds, gts))
    for k in (2, 3, 8):
        meter = VideoConsistencyMeter(k)
        for n, (preds, gts) in enumerate(clips):
            for p, g in zip(preds, gts, strict=True):
                meter.update(p, g)
            result = meter.end_clip(str(n))
            one_shot = video_consistency(preds, gts, k)
            assert result.windows == one_shot.windows
            assert result.score_sum == pytest.approx(one_shot.score_sum)
        expected = pool_video_consistency(video_consistency(p, g, k) for p, g in clips)
        assert meter.compute() == pytest.approx(expected)
    with pytest.raises(ConfigError, match="k must be"):
        VideoConsistencyMeter(1)


# ----------------------------------------------------------------------------- TC5


def test_tc5_frame_hand_computed():
    center = np.array([[1, 2, 3]])
    neighbours = np.array([[[1, 2, 4]], [[1, 2, 4]], [[1, 3, 5]], [[0, 3, 6]]])
    # Votes per pixel: (1,1,1,1,0) -> 4/5, (2,2,2,3,3) -> 3/5, (3,4,4,5,6) -> 2/5.
    assert tc5_frame(center, neighbours) == pytest.approx((4 + 3 + 2) / 15)
    valid = np.ones((4, 1, 3), bool)
    valid[3, 0, 0] = False  # pixel 0: 4 of 4 counted votes agree
    assert tc5_frame(center, neighbours, valid) == pytest.approx((1 + 3 / 5 + 2 / 5) / 3)


def _naive_tc5(preds: np.ndarray, flow, protocol: str) -> float:
    t, h, w = preds.shape
    values = []
    for i in range(2, t - 2):
        warped = []
        for j in (i - 2, i - 1, i + 1, i + 2):
            if protocol == "ssp":
                warped.append((official_warp(preds[j], flow(i, j)), np.ones((h, w), bool)))
            else:
                warped.append(clean_warp(preds[j], flow(i, j)))
        scores = []
        for y in range(h):
            for x in range(w):
                votes = [preds[i, y, x]] + [v[y, x] for v, ok in warped if ok[y, x]]
                scores.append(Counter(votes).most_common(1)[0][1] / len(votes))
        values.append(np.mean(scores))
    return float(np.mean(values))


@pytest.mark.parametrize("protocol", ["ssp", "clean"])
def test_tc5_vectorised_equals_a_per_pixel_loop(protocol):
    rng = np.random.default_rng(8)
    t, h, w = 7, 5, 6
    preds = rng.integers(0, 3, (t, h, w))
    flows = {
        (i, j): rng.integers(-2, 3, (h, w, 2)).astype(np.float32)
        for i in range(t)
        for j in range(t)
    }

    def flow(i: int, j: int) -> np.ndarray:
        return flows[i, j]

    expected = _naive_tc5(preds, flow, protocol)
    assert temporal_consistency5(preds, flow, protocol=protocol) == pytest.approx(expected)
    assert math.isnan(temporal_consistency5(preds[:4], flow, protocol=protocol))
