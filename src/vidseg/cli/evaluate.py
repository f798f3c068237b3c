"""``vidseg eval`` (stream a run's model over a split and score it) and ``vidseg score``
(score a folder of prediction PNGs from any tool with the same code)."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path
from typing import Any

from vidseg.cli.common import percent, stdout, table, write_json
from vidseg.errors import ConfigError
from vidseg.utils.io import atomic_write

log = logging.getLogger(__name__)

WEIGHTS = ("last", "best")
FLOWS = ("dis", "farneback", "raft", "raft_small", "gt", "none")


def _add_scoring_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument(
        "--average",
        choices=("union", "gt", "all"),
        default="union",
        help="mIoU averaging rule (see docs/metrics.md)",
    )
    parser.add_argument(
        "--flow",
        choices=FLOWS,
        default="dis",
        help="flow estimator of the temporal metrics (gt: the dataset's flow; none: skip TC)",
    )
    parser.add_argument("--flow-weights", metavar="PATH", help="RAFT checkpoint for --flow raft")
    parser.add_argument("--flow-cache", type=Path, metavar="DIR", help="cache flow fields here")
    parser.add_argument(
        "--occlusion",
        action="store_true",
        help="clean TC also excludes pixels the flow marks as occluded (gt flow only)",
    )
    parser.add_argument(
        "--vc", type=int, nargs="*", default=[8, 16], metavar="K", help="mVC window sizes"
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="where to write the reports")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the scores here")


def register(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="stream a trained run over a split: mIoU, per-class IoU, WIoU, TC, mVC",
        description="Run the model of RUN_DIR causally over every clip of a split, frame by "
        "frame from the first frame of each clip, and score it: per-class IoU, mIoU, WIoU and "
        "pixel accuracy over the labelled frames (one global confusion matrix), temporal "
        "consistency (TC, ssp and clean protocols) and mVC_k over all frames. Writes eval.json, "
        "clips.csv and summary.md (default: RUN_DIR/eval/SPLIT-WEIGHTS).",
    )
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory")
    evaluate.add_argument(
        "--data", type=Path, metavar="ROOT", help="dataset root (default: the run's data.root)"
    )
    evaluate.add_argument(
        "--weights", choices=WEIGHTS, default="last", help="model.safetensors or best.safetensors"
    )
    evaluate.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    evaluate.add_argument(
        "--save-predictions", action="store_true", help="also write prediction PNGs (class ids)"
    )
    evaluate.add_argument(
        "--video",
        action="store_true",
        help="write an overlay video of the first clip (clip.mp4) and embed it in report.html",
    )
    _add_scoring_options(evaluate)
    evaluate.set_defaults(run=run_eval, parser=evaluate)

    score = commands.add_parser(
        "score",
        help="score a folder of prediction PNGs against a dataset split",
        description="Score predictions made by any tool: PRED_DIR/<clip>/<frame>.png, uint8 "
        "class ids at the (resized) label size, one per frame of every clip of the split. "
        "Same metrics and reports as vidseg eval.",
    )
    score.add_argument("pred_dir", type=Path, metavar="PRED_DIR", help="prediction folder")
    score.add_argument("--data", type=Path, metavar="ROOT", required=True, help="dataset root")
    score.add_argument(
        "--resize", type=int, nargs=2, metavar=("H", "W"), help="resize frames and labels first"
    )
    _add_scoring_options(score)
    score.set_defaults(run=run_score, parser=score)


def _flow(args: argparse.Namespace) -> Any:
    from vidseg.flow import build

    if args.flow == "none":
        return None
    options: dict[str, Any] = {}
    if args.flow.startswith("raft"):
        if not args.flow_weights:
            raise ConfigError(
                f"--flow {args.flow} needs --flow-weights PATH (an official RAFT checkpoint, "
                "see docs/motion.md)"
            )
        options["weights"] = args.flow_weights
    elif args.flow_weights:
        raise ConfigError(f"--flow-weights is for --flow raft/raft_small, not --flow {args.flow}")
    if args.occlusion and args.flow != "gt":
        raise ConfigError("--occlusion needs --flow gt (only the dataset's flow has a validity)")
    return build(args.flow, cache=args.flow_cache, **options)


def _options(args: argparse.Namespace, resize: Any, crop: Any) -> Any:
    from vidseg.evaluation.video import EvalOptions, check_options

    options = EvalOptions(
        average=args.average,
        resize=resize,
        crop=crop,
        vc_windows=tuple(args.vc),
        occlusion=args.occlusion,
        flow_direction="backward" if args.flow == "gt" else "forward",
    )
    check_options(options)
    return options


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from vidseg.data import open_dataset
    from vidseg.data.classes import class_palette
    from vidseg.evaluation.video import PRED_DIR, evaluate_video, prepare
    from vidseg.models import as_video_model
    from vidseg.training.checkpoint import load_run_model
    from vidseg.utils.video import VideoWriter
    from vidseg.visualize import overlay

    model, cfg = load_run_model(args.run_dir, weights=args.weights)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    root = args.data or Path(cfg.data.root)
    dataset = open_dataset(root, args.split)
    options = _options(args, cfg.data.resize, cfg.data.val_crop)
    out = args.out or Path(args.run_dir) / "eval" / f"{args.split}-{args.weights}"
    palette = class_palette(dataset.info.classes)
    video = out / "clip.mp4" if args.video else None
    with contextlib.ExitStack() as stack:
        on_frame = None
        if video is not None:
            writer = stack.enter_context(VideoWriter(video, dataset.info.fps or 15.0))
            first = dataset[0].id

            def on_frame(clip: Any, n: int, pred: Any) -> None:
                if clip.id == first:
                    image, _ = prepare(clip.image(n), None, options, clip.id)
                    writer.write(overlay(image, pred, palette))

        evaluator = evaluate_video(
            as_video_model(model).to(device),
            dataset,
            options=options,
            flow=_flow(args),
            device=device,
            save_predictions=out / PRED_DIR if args.save_predictions else None,
            on_frame=on_frame,
        )
    header = {
        "run_dir": str(args.run_dir),
        "data": str(root),
        "split": args.split,
        "weights": args.weights,
        "flow": args.flow,
    }
    _report(evaluator, dataset, header, out, args.json, run_dir=args.run_dir, video=video)
    return 0


def run_score(args: argparse.Namespace) -> int:
    from vidseg.data import open_dataset
    from vidseg.evaluation.video import score_predictions

    dataset = open_dataset(args.data, args.split)
    options = _options(args, args.resize, None)
    evaluator = score_predictions(args.pred_dir, dataset, options=options, flow=_flow(args))
    header = {
        "predictions": str(args.pred_dir),
        "data": str(args.data),
        "split": args.split,
        "flow": args.flow,
    }
    _report(evaluator, dataset, header, args.out or args.pred_dir.parent, args.json)
    return 0


def _report(
    evaluator: Any,
    dataset: Any,
    header: dict[str, Any],
    out: Path,
    json_path: Path | None,
    *,
    run_dir: Path | None = None,
    video: Path | None = None,
) -> None:
    from vidseg.data.classes import class_palette
    from vidseg.evaluation.report import write_report
    from vidseg.evaluation.video import clips_csv, markdown_summary

    result = {**header, **evaluator.result(dataset.info.class_names)}
    rows = [[name, percent(iou)] for name, iou in result["per_class_iou"].items()]
    title = " ".join(f"{k} {v}" for k, v in header.items())
    stdout.print(table(title, ["class", "IoU %"], rows))
    stdout.print(
        f"mIoU ({result['average']}) {percent(result['miou'])}  WIoU {percent(result['wiou'])}  "
        f"pixel accuracy {percent(result['pixel_accuracy'])}  ({result['num_pixels']} pixels)"
    )
    temporal = [f"TC ({p}) {percent(v)}" for p, v in result["tc"].items()]
    temporal += [f"labels' TC ({p}) {percent(v)}" for p, v in result["tc_labels"].items()]
    temporal += [f"mVC{k} {percent(v)}" for k, v in result["mvc"].items()]
    if temporal:
        stdout.print("  ".join(temporal))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "eval.json", result)
    with atomic_write(out / "clips.csv", "w") as handle:
        handle.write(clips_csv(result["clips"]))
    with atomic_write(out / "summary.md", "w") as handle:
        handle.write(markdown_summary(result))
    page = write_report(
        result,
        evaluator.clips,
        out,
        palette=class_palette(dataset.info.classes),
        run_dir=run_dir,
        video=video,
    )
    log.info("wrote eval.json, clips.csv, summary.md, the plots and %s", page)
    if json_path:
        write_json(json_path, result)
