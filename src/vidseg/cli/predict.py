"""``vidseg predict``: segment a video file or a folder of frames with one or two trained runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vidseg.cli.common import stdout, write_json
from vidseg.errors import ConfigError, DataError


def register(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict",
        help="segment a video file or a folder of frames (no labels needed)",
        description="Run the model of RUN_DIR causally over INPUT (a video file, or a folder of "
        ".png/.jpg frames ordered by the number in their names) and write label PNGs (class "
        "ids) and an overlay video. With --run given twice, also a side-by-side comparison "
        "video (compare.mp4).",
    )
    predict.add_argument("input", type=Path, metavar="INPUT", help="video file or frame folder")
    predict.add_argument(
        "--run",
        dest="runs",
        type=Path,
        action="append",
        required=True,
        metavar="RUN_DIR",
        help="run directory (give it twice to compare two models)",
    )
    predict.add_argument("--weights", choices=("last", "best"), default="last")
    predict.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    predict.add_argument(
        "--resize", type=int, nargs=2, metavar=("H", "W"), help="resize the frames first"
    )
    predict.add_argument("--fps", type=float, help="frame rate of the video (default: the input's)")
    predict.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    predict.add_argument("--no-labels", action="store_true", help="do not write label PNGs")
    predict.add_argument("--no-video", action="store_true", help="do not write the video")
    predict.add_argument("--json", type=Path, metavar="PATH", help="also write a summary as JSON")
    predict.set_defaults(run=run_predict, parser=predict)


def _palette(num_classes: int, data_root: str) -> Any:
    """The run's class colours, or evenly spaced hues when its dataset is not at hand."""
    import cv2
    import numpy as np

    from vidseg.data import read_dataset_info
    from vidseg.data.classes import class_palette

    try:
        info = read_dataset_info(data_root)
    except DataError:
        info = None
    if info is not None and info.num_classes == num_classes:
        return class_palette(info.classes)
    hues = np.linspace(0, 180, num_classes, endpoint=False).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 200), np.full_like(hues, 230)], -1)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def run_predict(args: argparse.Namespace) -> int:
    import torch

    from vidseg.evaluation.predict import Predictor, predict_video
    from vidseg.models import as_video_model
    from vidseg.training.checkpoint import load_run_model

    if len(args.runs) > 2:
        raise ConfigError(f"--run is given {len(args.runs)} times; compare at most two models")
    if args.no_labels and args.no_video:
        raise ConfigError("--no-labels and --no-video together leave nothing to write")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    predictors = []
    for i, run_dir in enumerate(args.runs):
        model, cfg = load_run_model(run_dir, weights=args.weights)
        name = Path(run_dir).resolve().name
        if any(p.name == name for p in predictors):
            name = f"{name}-{i + 1}"
        palette = _palette(model.num_classes, cfg.data.root)
        predictors.append(Predictor(name, as_video_model(model).to(device), palette))
    summary = predict_video(
        predictors,
        args.input,
        args.out,
        resize=args.resize,
        device=device,
        fps=args.fps,
        write_labels=not args.no_labels,
        write_video=not args.no_video,
    )
    stdout.print(
        f"{summary['frames']} frames of {args.input}: "
        + ", ".join(str(v) for v in (summary["video"], summary["labels"]) if v)
    )
    if args.json:
        write_json(args.json, summary)
    return 0
