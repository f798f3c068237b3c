import csv
import io
import shutil

import numpy as np
import pytest
import torch

from vidseg.data import open_dataset, synthesize
from vidseg.errors import DataError
from vidseg.evaluation.video import (
    EvalOptions,
    clips_csv,
    evaluate_video,
    markdown_summary,
    score_predictions,
)
from vidseg.flow import build
from vidseg.metrics import temporal_consistency
from vidseg.models.streaming import VideoModel
from vidseg.utils.io import read_gray, write_png


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Two val clips labelled on every frame, with ground-truth flow."""
    root = tmp_path_factory.mktemp("eval") / "data"
    synthesize(root, clips=3, val_clips=2, test_clips=0, frames=10, size=64, seed=3)
    return open_dataset(root, "val")


def as_prediction(label):
    """A label map as a prediction: ignored pixels (clutter) become class 0."""
    return np.where(label == 255, 0, label).astype(np.uint8)


def write_label_predictions(dataset, out):
    for clip in dataset:
        for n in clip.frames:
            write_png(out / clip.id / f"{n:06d}.png", as_prediction(clip.label(n)))


def test_scoring_the_ground_truth_gives_perfect_scores_and_its_own_tc(labelled, tmp_path):
    write_label_predictions(labelled, tmp_path / "preds")
    options = EvalOptions(occlusion=True, flow_direction="backward", vc_windows=(2, 4))
    evaluator = score_predictions(tmp_path / "preds", labelled, options=options, flow=build("gt"))
    result = evaluator.result(labelled.info.class_names)
    assert result["miou"] == 1.0
    assert result["pixel_accuracy"] == 1.0
    assert result["mvc"] == {"2": 1.0, "4": 1.0}
    # TC of the labels themselves, computed independently clip by clip with the metric function.
    expected, expected_labels = {}, {}
    for protocol in ("ssp", "clean"):
        values, label_values = [], []
        for clip in labelled:
            raw = np.stack([clip.label(n) for n in clip.frames])
            labels = np.stack([as_prediction(lab) for lab in raw])
            flows = np.stack([clip.flow(n) for n in clip.frames[1:]])
            valid = np.stack([clip.flow_valid(n) for n in clip.frames[1:]])
            values.append(
                temporal_consistency(
                    labels,
                    flows,
                    labelled.num_classes,
                    protocol=protocol,
                    direction="backward",
                    valid=valid if protocol == "clean" else None,
                )
            )
            label_values.append(
                temporal_consistency(
                    raw,
                    flows,
                    labelled.num_classes,
                    protocol=protocol,
                    direction="backward",
                    valid=valid if protocol == "clean" else None,
                )
            )
        expected[protocol] = float(np.mean(values))
        expected_labels[protocol] = float(np.mean(label_values))
    assert result["tc"]["ssp"] == pytest.approx(expected["ssp"], abs=1e-12)
    assert result["tc"]["clean"] == pytest.approx(expected["clean"], abs=1e-12)
    # The labels' own TC (clutter not counted) is the ceiling reported beside it.
    assert result["tc_labels"] == pytest.approx(expected_labels, abs=1e-12)
    assert result["tc_labels"] != result["tc"]
    assert [row["clip"] for row in result["clips"]] == labelled.clip_ids


class CountingModel(VideoModel):
    """Predicts class (frames seen since the last state reset) mod C: exposes the state."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def init_state(self):
        return 0

    def step(self, frame, state):
        logits = torch.zeros(frame.shape[0], self.num_classes, *frame.shape[-2:])
        logits[:, state % self.num_classes] = 1
        return logits, state + 1


def test_streaming_restarts_the_state_at_each_clip(labelled, tmp_path):
    model = CountingModel(labelled.num_classes)
    evaluate_video(model, labelled, flow=None, save_predictions=tmp_path / "p", show_progress=False)
    for clip in labelled:
        for i, n in enumerate(clip.frames):
            pred = read_gray(tmp_path / "p" / clip.id / f"{n:06d}.png")
            assert np.all(pred == i % labelled.num_classes)


def test_a_gap_in_the_frame_numbers_starts_a_fresh_state(labelled, tmp_path):
    root = shutil.copytree(labelled.root, tmp_path / "gap")
    clip_dir = root / "clips" / labelled.clip_ids[0]
    gap = labelled[0].frames[4]
    for sub, ext in (("frames", "png"), ("labels", "png"), ("flow", "npy"), ("flow_valid", "png")):
        (clip_dir / sub / f"{gap:06d}.{ext}").unlink()
    (clip_dir / "homographies.npy").unlink()
    dataset = open_dataset(root, "val")
    kept = dataset[0].frames
    assert gap not in kept
    model = CountingModel(dataset.num_classes)
    out = tmp_path / "p"
    evaluator = evaluate_video(
        model,
        dataset,
        flow=build("gt"),
        save_predictions=out,
        show_progress=False,
        options=EvalOptions(flow_direction="backward"),
    )
    seen = [int(read_gray(out / dataset[0].id / f"{n:06d}.png")[0, 0]) for n in kept]
    c = dataset.num_classes
    assert seen == [i % c for i in range(4)] + [i % c for i in range(len(kept) - 4)]
    assert evaluator.clips[0].frames == len(kept)


def test_reports_have_one_row_per_clip(labelled, tmp_path):
    write_label_predictions(labelled, tmp_path / "preds")
    evaluator = score_predictions(tmp_path / "preds", labelled, flow=build("dis", preset="fast"))
    result = evaluator.result(labelled.info.class_names)
    rows = list(csv.DictReader(io.StringIO(clips_csv(result["clips"]))))
    assert [r["clip"] for r in rows] == labelled.clip_ids
    assert float(rows[0]["miou"]) == 1.0
    summary = markdown_summary({**result, "split": "val"})
    assert "| mIoU | WIoU | pixel accuracy | TC ssp | TC clean | mVC8 | mVC16 |" in summary
    assert "| 100.00 | 100.00 | 100.00 |" in summary
    # With DIS flow the labels are still very consistent, but not exactly as with the truth.
    assert 0.7 < result["tc"]["clean"] <= 1


def test_missing_or_mis_sized_predictions_are_named(labelled, tmp_path):
    write_label_predictions(labelled, tmp_path / "preds")
    clip = labelled[1]
    victim = tmp_path / "preds" / clip.id / f"{clip.frames[3]:06d}.png"
    victim.unlink()
    with pytest.raises(DataError, match=f"{victim.name}: missing prediction for frame"):
        score_predictions(tmp_path / "preds", labelled, show_progress=False)
    write_png(victim, np.zeros((5, 5), np.uint8))
    with pytest.raises(DataError, match="prediction is 5x5, the label is 64x64"):
        score_predictions(tmp_path / "preds", labelled, show_progress=False)
    write_png(victim, np.full((64, 64), 255, np.uint8))
    with pytest.raises(DataError, match=f"{victim.name}: class id 255 is not one of the 8"):
        score_predictions(tmp_path / "preds", labelled, show_progress=False)
    with pytest.raises(DataError, match="no such prediction folder"):
        score_predictions(tmp_path / "nothing", labelled)
