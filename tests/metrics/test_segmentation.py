import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torchmetrics.classification import MulticlassJaccardIndex

from vidseg.errors import DataError
from vidseg.metrics import (
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

IGNORE = 255
C = 7

# The hand-worked example: 4 classes, class 2 only predicted, class 3 absent from the ground truth
# and predicted only at the ignored pixel (so its union is empty).
HAND_GT = np.array([[0, 0, 1], [1, 1, IGNORE]], np.uint8)
HAND_PRED = np.array([[0, 2, 1], [1, 0, 3]], np.uint8)
# Counted pixels: (gt, pred) = (0,0) (0,2) (1,1) (1,1) (1,0).
HAND_CONF = np.array([[1, 0, 1, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def random_labels(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Label maps over C = 7 classes covering every awkward case.

    gt uses classes 0-3 and the ignore label; the prediction uses 0-4 on counted pixels (class 4 is
    only predicted) and 5 on ignored pixels only (class 5: empty union); class 6 appears nowhere.
    """
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 4, shape)
    ignored = rng.random(shape) < 0.2
    gt[ignored] = IGNORE
    # Mostly correct predictions, so IoUs are spread over (0, 1) rather than all near 0.2.
    pred = np.where(rng.random(shape) < 0.6, gt, rng.integers(0, 5, shape))
    pred[ignored] = rng.choice([5, 0, 4], size=int(ignored.sum()))
    return pred, gt


def naive_confusion(pred: np.ndarray, gt: np.ndarray, n: int) -> np.ndarray:
    conf = np.zeros((n, n), np.int64)
    for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist(), strict=True):
        if g != IGNORE:
            conf[g, p] += 1
    return conf


def naive_scores(pred: np.ndarray, gt: np.ndarray, n: int) -> dict[str, object]:
    """Every score from per-class pixel masks, without a confusion matrix."""
    valid = gt != IGNORE
    ious, accs, gt_counts = [], [], []
    for c in range(n):
        inter = np.sum((pred == c) & (gt == c) & valid)
        union = np.sum(((pred == c) | (gt == c)) & valid)
        n_gt = np.sum((gt == c) & valid)
        ious.append(inter / union if union else math.nan)
        accs.append(inter / n_gt if n_gt else math.nan)
        gt_counts.append(n_gt)
    with_union = [v for v in ious if not math.isnan(v)]
    with_gt = [v for v, k in zip(ious, gt_counts, strict=True) if k > 0]
    total = sum(gt_counts)
    return {
        "iou": ious,
        "union": sum(with_union) / len(with_union),
        "gt": sum(with_gt) / len(with_gt),
        "all": sum(0.0 if math.isnan(v) else v for v in ious) / n,
        "wiou": sum(k / total * v for v, k in zip(ious, gt_counts, strict=True) if k > 0),
        "pixel_accuracy": np.sum((pred == gt) & valid) / total,
        "acc": accs,
        "macc": np.nanmean(accs),
    }


# --------------------------------------------------------------------------- known answers


def test_hand_example_confusion_and_per_class_values():
    conf = confusion_matrix(HAND_PRED, HAND_GT, 4)
    np.testing.assert_array_equal(conf, HAND_CONF)
    np.testing.assert_allclose(per_class_iou(conf), [1 / 3, 2 / 3, 0.0, np.nan])
    np.testing.assert_allclose(class_accuracy(conf), [1 / 2, 2 / 3, np.nan, np.nan])


@pytest.mark.parametrize(
    ("average", "expected"),
    [
        ("union", (1 / 3 + 2 / 3 + 0) / 3),  # class 2 (only predicted) counts as 0
        ("gt", (1 / 3 + 2 / 3) / 2),  # only classes 0 and 1 have ground truth
        ("all", (1 / 3 + 2 / 3 + 0 + 0) / 4),  # class 3 (empty union) also counts as 0
    ],
)
def test_hand_example_three_averaging_rules_differ(average, expected):
    assert miou(HAND_CONF, average) == pytest.approx(expected, abs=1e-15)


def test_hand_example_other_scores():
    assert wiou(HAND_CONF) == pytest.approx(2 / 5 * 1 / 3 + 3 / 5 * 2 / 3, abs=1e-15)  # 8/15
    assert pixel_accuracy(HAND_CONF) == pytest.approx(3 / 5, abs=1e-15)
    assert mean_class_accuracy(HAND_CONF) == pytest.approx(7 / 12, abs=1e-15)


def test_perfect_and_fully_wrong_predictions():
    gt = np.array([[0, 1], [2, IGNORE]])
    perfect = confusion_matrix(np.array([[0, 1], [2, 1]]), gt, 3)
    for average in AVERAGES:
        assert miou(perfect, average) == 1.0
    assert wiou(perfect) == pixel_accuracy(perfect) == mean_class_accuracy(perfect) == 1.0
    wrong = confusion_matrix(np.array([[1, 2], [0, 0]]), gt, 3)
    for average in AVERAGES:
        assert miou(wrong, average) == 0.0
    assert wiou(wrong) == pixel_accuracy(wrong) == mean_class_accuracy(wrong) == 0.0


@pytest.mark.parametrize("counts", [(1, 36), (2, 31), (3, 12), (5, 7, 11, 13)])
def test_perfect_scores_are_exactly_one(counts):
    # Summing GT_c / total * IoU_c can round to 1.0000000000000002 for these class sizes.
    conf = np.diag(counts)
    assert wiou(conf) == 1.0
    assert pixel_accuracy(conf) == mean_class_accuracy(conf) == 1.0
    assert [miou(conf, a) for a in AVERAGES] == [1.0, 1.0, 1.0]


def test_empty_matrix_gives_nan_everywhere():
    conf = confusion_matrix(np.zeros((2, 2), np.uint8), np.full((2, 2), IGNORE, np.uint8), 3)
    np.testing.assert_array_equal(conf, np.zeros((3, 3)))
    for average in AVERAGES:
        assert math.isnan(miou(conf, average))
    for score in (wiou, pixel_accuracy, mean_class_accuracy):
        assert math.isnan(score(conf))
    assert np.isnan(per_class_iou(conf)).all()


def test_large_class_ids_do_not_overflow_narrow_dtypes():
    # gt * C + pred in uint8 would wrap; the matrix must still put the pixel at (199, 198).
    conf = confusion_matrix(np.full((3, 4), 198, np.uint8), np.full((3, 4), 199, np.uint8), 200)
    assert conf.dtype == np.int64
    assert conf[199, 198] == 12
    assert conf.sum() == 12


# --------------------------------------------------------------------------- independent references


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.int64, np.uint64])
@pytest.mark.parametrize(("seed", "shape"), [(0, (23, 31)), (1, (3, 17, 19)), (2, (2, 2, 9, 11))])
def test_matches_naive_loop(seed, shape, dtype):
    pred, gt = random_labels(seed, shape)
    pred, gt = pred.astype(dtype), gt.astype(dtype)
    conf = confusion_matrix(pred, gt, C)
    assert conf.dtype == np.int64
    np.testing.assert_array_equal(conf, naive_confusion(pred, gt, C))

    ref = naive_scores(pred, gt, C)
    # The generator must really produce the awkward classes, or this test checks less than it says.
    assert conf[4].sum() == 0  # class 4: only predicted
    assert conf[:, 4].sum() > 0
    assert conf[5].sum() == conf[:, 5].sum() == 0  # class 5: predicted at ignored pixels only
    assert (pred == 5).any()
    assert conf[6].sum() == conf[:, 6].sum() == 0  # absent
    np.testing.assert_allclose(per_class_iou(conf), ref["iou"], rtol=1e-12)
    for average in AVERAGES:
        assert miou(conf, average) == pytest.approx(ref[average], rel=1e-12)
    assert len({round(miou(conf, a), 9) for a in AVERAGES}) == 3
    assert wiou(conf) == pytest.approx(ref["wiou"], rel=1e-12)
    assert pixel_accuracy(conf) == pytest.approx(ref["pixel_accuracy"], rel=1e-12)
    np.testing.assert_allclose(class_accuracy(conf), ref["acc"], rtol=1e-12)
    assert mean_class_accuracy(conf) == pytest.approx(ref["macc"], rel=1e-12)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_matches_torchmetrics_over_several_batches(seed):
    meter = ConfusionMeter(C)
    tm = {
        avg: MulticlassJaccardIndex(num_classes=C, average=avg, ignore_index=IGNORE)
        for avg in ("macro", "none", "weighted")
    }
    for batch in range(3):
        pred, gt = random_labels(seed * 10 + batch, (2, 13, 15))
        meter.update(pred, gt)
        for metric in tm.values():
            metric.update(torch.from_numpy(pred), torch.from_numpy(gt))
    conf = meter.matrix
    # torchmetrics (float32) reports 0 where our per-class IoU is undefined (NaN).
    np.testing.assert_allclose(
        np.nan_to_num(per_class_iou(conf)), tm["none"].compute().numpy(), atol=1e-6
    )
    assert miou(conf, "union") == pytest.approx(tm["macro"].compute().item(), abs=1e-6)
    assert wiou(conf) == pytest.approx(tm["weighted"].compute().item(), abs=1e-6)


def test_global_accumulation_is_not_a_per_image_average():
    # Image 1 is tiny and perfect, image 2 is large and half wrong: the global score is dominated
    # by image 2, while a per-image mean would weigh both equally.
    meter = ConfusionMeter(2)
    meter.update(np.array([[0, 1]]), np.array([[0, 1]]))
    meter.update(np.array([[0] * 8]), np.array([[0] * 4 + [1] * 4]))
    conf = meter.matrix
    np.testing.assert_array_equal(conf, [[5, 0], [4, 1]])
    assert miou(conf) == pytest.approx((5 / 9 + 1 / 5) / 2)
    assert pixel_accuracy(conf) == pytest.approx(6 / 10)


# --------------------------------------------------------------------------- NumPy and torch


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int32, torch.int64, torch.uint16])
def test_torch_input_gives_the_same_matrix_as_a_tensor(dtype):
    pred, gt = random_labels(7, (3, 11, 13))
    if dtype == torch.int8:
        gt[gt == IGNORE] = -1  # int8 cannot hold 255
        ignore = -1
    else:
        ignore = IGNORE
    expected = confusion_matrix(pred, gt, C, ignore_index=ignore)
    conf = confusion_matrix(
        torch.from_numpy(pred).to(dtype), torch.from_numpy(gt).to(dtype), C, ignore_index=ignore
    )
    assert isinstance(conf, torch.Tensor)
    assert conf.dtype == torch.int64
    assert conf.device.type == "cpu"
    np.testing.assert_array_equal(conf.numpy(), expected)
    assert per_class_iou(conf) == pytest.approx(per_class_iou(expected), nan_ok=True)


def test_ignore_index_outside_the_dtype_range_ignores_nothing():
    # torch wraps 255 to -1 when comparing with an int8 tensor; a -1 label must not be taken for
    # the ignore index 255 but reported as invalid.
    gt = torch.tensor([[0, -1]], dtype=torch.int8)
    pred = torch.tensor([[0, 1]], dtype=torch.int8)
    with pytest.raises(MetricInputError, match=r"label -1 \(1 pixel"):
        confusion_matrix(pred, gt, 2)
    with pytest.raises(MetricInputError, match=r"label -1 \(1 pixel"):
        confusion_matrix(pred.numpy(), gt.numpy(), 2)


def test_ignore_index_none_counts_every_pixel():
    gt = np.array([[0, 1, 2]])
    conf = confusion_matrix(np.array([[0, 1, 1]]), gt, 3, ignore_index=None)
    np.testing.assert_array_equal(conf, [[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    with pytest.raises(MetricInputError, match=r"label 255 .*\[0, 3\)"):
        confusion_matrix(np.zeros((1, 2), np.uint8), np.array([[0, IGNORE]]), 3, ignore_index=None)


def test_autograd_tensors_are_accepted():
    pred = torch.tensor([[0.2, 0.8], [0.9, 0.1]], requires_grad=True).argmax(0)
    conf = confusion_matrix(pred, torch.tensor([1, 0]), 2)
    np.testing.assert_array_equal(conf.numpy(), [[1, 0], [0, 1]])


# --------------------------------------------------------------------------- errors


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(MetricInputError, match=r"pred \(2, 3\) vs gt \(3, 2\)"):
        confusion_matrix(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8), 4)
    with pytest.raises(ValueError, match=r"pred \(1, 2, 3\) vs gt \(2, 3\)"):
        confusion_matrix(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(2, 3).long(), 4)


def test_out_of_range_ground_truth_names_value_and_range():
    gt = np.array([[0, 9, 9], [1, IGNORE, 2]])
    with pytest.raises(
        MetricInputError, match=r"ground truth holds label 9 \(2 pixel\(s\)\).*\[0, 4\)"
    ):
        confusion_matrix(np.zeros_like(gt), gt, 4)
    with pytest.raises(MetricInputError, match=r"label -3 .*\[0, 4\)"):
        confusion_matrix(torch.zeros(2, dtype=torch.long), torch.tensor([-3, 1]), 4)


@pytest.mark.parametrize("bad", [4, 255, -1])
def test_out_of_range_prediction_names_value_and_range(bad):
    pred = np.array([[0, 1], [bad, 2]])
    gt = np.array([[0, 1], [IGNORE, 2]])  # an invalid id is refused even at an ignored pixel
    with pytest.raises(
        MetricInputError, match=rf"prediction holds class id {bad} .*\[0, 4\).*external"
    ):
        confusion_matrix(pred, gt, 4)
    with pytest.raises(MetricInputError, match=rf"class id {bad} "):
        confusion_matrix(torch.from_numpy(pred), torch.from_numpy(gt), 4)


def test_input_errors_are_data_errors_and_value_errors():
    assert issubclass(MetricInputError, DataError)
    assert issubclass(MetricInputError, ValueError)


def test_type_errors_name_the_argument():
    labels = np.zeros((2, 2), np.int64)
    with pytest.raises(TypeError, match=r"pred must hold integer class ids, got dtype float32"):
        confusion_matrix(labels.astype(np.float32), labels, 2)
    with pytest.raises(TypeError, match=r"gt must hold integer class ids, got dtype torch.bool"):
        confusion_matrix(torch.zeros(2, 2).long(), torch.zeros(2, 2, dtype=torch.bool), 2)
    with pytest.raises(TypeError, match=r"same kind.*ndarray and Tensor"):
        confusion_matrix(labels, torch.from_numpy(labels), 2)
    with pytest.raises(TypeError, match=r"gt must be a NumPy array or a torch tensor, got list"):
        confusion_matrix(labels, [[0, 0], [0, 0]], 2)


@pytest.mark.parametrize("num_classes", [0, -2])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match=rf"num_classes must be >= 1, got {num_classes}"):
        confusion_matrix(np.zeros(2, np.int64), np.zeros(2, np.int64), num_classes)
    with pytest.raises(ValueError, match=rf"got {num_classes}"):
        ConfusionMeter(num_classes)


def test_unknown_average_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"'macro'; valid: 'union', 'gt', 'all'"):
        miou(HAND_CONF, "macro")
    with pytest.raises(ValueError, match=r"'weighted'; valid"):
        ConfusionMeter(4).compute("weighted")


def test_malformed_confusion_matrices():
    with pytest.raises(ValueError, match=r"square \(C, C\) array, got \(3, 4\)"):
        per_class_iou(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"got \(9,\)"):
        miou(np.zeros(9))
    with pytest.raises(ValueError, match="negative"):
        wiou(np.array([[1, -1], [0, 1]]))


# --------------------------------------------------------------------------- properties


label_maps = st.integers(1, 6).flatmap(
    lambda n: st.tuples(
        st.just(n),
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=6).flatmap(
            lambda shape: st.tuples(
                hnp.arrays(np.uint8, shape, elements=st.integers(0, n - 1)),
                hnp.arrays(np.uint8, shape, elements=st.sampled_from([*range(n), IGNORE])),
            )
        ),
    )
)


@settings(max_examples=60, deadline=None)
@given(label_maps)
def test_matrix_counts_exactly_the_non_ignored_pixels(case):
    n, (pred, gt) = case
    conf = confusion_matrix(pred, gt, n)
    assert conf.sum() == np.count_nonzero(gt != IGNORE)
    np.testing.assert_array_equal(conf.sum(axis=1), [np.sum(gt == c) for c in range(n)])
    np.testing.assert_array_equal(
        conf.sum(axis=0), [np.sum((pred == c) & (gt != IGNORE)) for c in range(n)]
    )
    torch_conf = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(gt), n)
    np.testing.assert_array_equal(torch_conf.numpy(), conf)


@settings(max_examples=60, deadline=None)
@given(label_maps, st.randoms(use_true_random=False))
def test_scores_are_invariant_to_renaming_classes(case, rnd):
    n, (pred, gt) = case
    perm = np.arange(n)
    rnd.shuffle(perm)
    lut = np.full(256, IGNORE, np.uint8)
    lut[:n] = perm
    conf = confusion_matrix(pred, gt, n)
    renamed = confusion_matrix(lut[pred], lut[gt], n)
    for average in AVERAGES:
        assert miou(renamed, average) == pytest.approx(miou(conf, average), nan_ok=True)
    for score in (wiou, pixel_accuracy, mean_class_accuracy):
        assert score(renamed) == pytest.approx(score(conf), nan_ok=True)
    np.testing.assert_allclose(per_class_iou(renamed)[perm], per_class_iou(conf))


@settings(max_examples=60, deadline=None)
@given(label_maps)
def test_scores_are_fractions_and_rules_are_ordered(case):
    n, (pred, gt) = case
    conf = confusion_matrix(pred, gt, n)
    if conf.sum() == 0:
        return
    values = {a: miou(conf, a) for a in AVERAGES}
    for v in [*values.values(), wiou(conf), pixel_accuracy(conf), mean_class_accuracy(conf)]:
        assert 0.0 <= v <= 1.0
    # "union" adds classes scoring 0 to the "gt" set; "all" adds further zeros to "union".
    assert values["all"] <= values["union"] + 1e-12
    assert values["union"] <= values["gt"] + 1e-12


# --------------------------------------------------------------------------- ConfusionMeter


def test_meter_accumulates_mixed_inputs_and_resets():
    meter = ConfusionMeter(C)
    batches = [random_labels(s, (2, 9, 10)) for s in range(3)]
    meter.update(*batches[0])
    meter.update(*(torch.from_numpy(a) for a in batches[1]))
    meter.update(*batches[2])
    pred = np.concatenate([b[0] for b in batches])
    gt = np.concatenate([b[1] for b in batches])
    expected = naive_confusion(pred, gt, C)
    np.testing.assert_array_equal(meter.matrix, expected)
    assert meter.num_pixels == np.count_nonzero(gt != IGNORE)

    meter.matrix[0, 0] += 1000  # a copy: the meter is unaffected
    np.testing.assert_array_equal(meter.matrix, expected)

    meter.reset()
    np.testing.assert_array_equal(meter.matrix, np.zeros((C, C)))
    assert meter.compute()["miou"] is None


def test_meter_compute_returns_json_ready_values():
    meter = ConfusionMeter(4)
    meter.update(HAND_PRED, HAND_GT)
    out = meter.compute("gt")
    assert out["average"] == "gt"
    assert out["miou"] == pytest.approx(1 / 2)
    assert out["per_class_iou"][:3] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert out["per_class_iou"][3] is None
    assert out["wiou"] == pytest.approx(8 / 15)
    assert out["pixel_accuracy"] == pytest.approx(3 / 5)
    assert out["mean_class_accuracy"] == pytest.approx(7 / 12)
    assert out["num_pixels"] == 5
    assert meter.compute()["miou"] == pytest.approx(1 / 3)


def test_meter_summary_prints_percentages():
    meter = ConfusionMeter(4)
    meter.update(HAND_PRED, HAND_GT)
    text = meter.summary(["road", "tree", "car", "water"], average="all")
    lines = text.splitlines()
    assert lines[1].split() == ["road", "33.33", "50.00"]
    assert lines[3].split() == ["car", "0.00", "n/a"]
    assert lines[4].split() == ["water", "n/a", "n/a"]
    assert [line.split() for line in lines[-4:]] == [
        ["mIoU", "(all)", "25.00"],
        ["wIoU", "53.33"],
        ["mAcc", "58.33"],
        ["pixel", "acc", "60.00"],
    ]
    with pytest.raises(ValueError, match="3 names for 4 classes"):
        meter.summary(["a", "b", "c"])


def test_meter_reduce_without_distributed_is_identity_and_guards_double_counting():
    meter = ConfusionMeter(4)
    meter.update(HAND_PRED, HAND_GT)
    assert meter.reduce() is meter
    np.testing.assert_array_equal(meter.matrix, HAND_CONF)
    with pytest.raises(RuntimeError, match="already called"):
        meter.reduce()
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        meter.update(HAND_PRED, HAND_GT)
    meter.reset()
    meter.update(HAND_PRED, HAND_GT)
    np.testing.assert_array_equal(meter.matrix, HAND_CONF)
