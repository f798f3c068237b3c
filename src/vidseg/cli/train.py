"""``vidseg train`` and ``vidseg eval``: train an image segmentation model, score a run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from vidseg.cli.common import percent, stdout, table, write_json
from vidseg.errors import ConfigError

log = logging.getLogger(__name__)

WEIGHTS = ("last", "best")


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train an image segmentation model from a YAML config",
        description="Train the model of CONFIG (a YAML file, e.g. configs/image/synth_tiny.yaml), "
        "with dotted key=value overrides (trainer.epochs=5 model.backbone=mit_b0). Writes a new "
        "run directory under trainer.out_dir; --resume continues a run where it stopped.",
    )
    train.add_argument("config", nargs="?", type=Path, help="YAML config file")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    train.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue this run from its last checkpoint (its config.yaml is used)",
    )
    train.add_argument(
        "--devices", type=int, help="processes/GPUs per node (same as trainer.devices=N)"
    )
    train.add_argument("--json", type=Path, metavar="PATH", help="also write a summary as JSON")
    train.set_defaults(run=run_train, parser=train)

    evaluate = commands.add_parser(
        "eval",
        help="score a trained run on a split (mIoU, per-class IoU, WIoU, pixel accuracy)",
        description="Run the model of RUN_DIR on every labelled frame of a split and print "
        "per-class IoU, mIoU, WIoU and pixel accuracy from one global confusion matrix.",
    )
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory")
    evaluate.add_argument("--split", default="val", help="split to score")
    evaluate.add_argument(
        "--data", type=Path, metavar="ROOT", help="dataset root (default: the run's data.root)"
    )
    evaluate.add_argument(
        "--weights", choices=WEIGHTS, default="last", help="model.safetensors or best.safetensors"
    )
    evaluate.add_argument(
        "--average",
        choices=("union", "gt", "all"),
        default="union",
        help="mIoU averaging rule (see docs/metrics.md)",
    )
    evaluate.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    evaluate.add_argument("--json", type=Path, metavar="PATH", help="also write the scores as JSON")
    evaluate.set_defaults(run=run_eval, parser=evaluate)


def run_train(args: argparse.Namespace) -> int:
    from vidseg.config import load_config
    from vidseg.training.checkpoint import CONFIG_FILE, check_run_dir
    from vidseg.training.config import TrainConfig
    from vidseg.training.trainer import train

    overrides = list(args.overrides)
    if args.config is not None and "=" in args.config.name and not args.config.exists():
        # ``vidseg train --resume RUN key=value``: argparse puts the first override here.
        overrides.insert(0, str(args.config))
        args.config = None
    if args.devices is not None:
        overrides.append(f"trainer.devices={args.devices}")
    if args.resume is not None:
        if args.config is not None:
            raise ConfigError("give either CONFIG or --resume RUN_DIR, not both")
        run_dir = check_run_dir(args.resume)
        cfg = load_config(TrainConfig, run_dir / CONFIG_FILE, overrides)
        name = run_dir.name
    elif args.config is None:
        raise ConfigError("missing CONFIG (a YAML file such as configs/image/synth_tiny.yaml)")
    else:
        cfg = load_config(TrainConfig, args.config, overrides)
        name = args.config.stem
    run_dir = train(cfg, name=name, resume=args.resume)
    _print_train_summary(run_dir, args.json)
    return 0


def _print_train_summary(run_dir: Path, json_path: Path | None) -> None:
    import json

    from vidseg.training.checkpoint import BEST_INFO_FILE

    best_file = run_dir / BEST_INFO_FILE
    best = json.loads(best_file.read_text()) if best_file.exists() else None
    summary: dict[str, Any] = {"run_dir": str(run_dir), "best": best}
    if best is not None:
        stdout.print(
            f"run {run_dir}: best val mIoU {percent(best['val_miou'])} at epoch {best['epoch']}"
        )
    else:
        stdout.print(f"run {run_dir}: finished (no validation score)")
    if json_path:
        write_json(json_path, summary)


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from vidseg.data import open_dataset
    from vidseg.evaluation.image import evaluate_segmenter, scores
    from vidseg.training.checkpoint import load_run_model

    model, cfg = load_run_model(args.run_dir, weights=args.weights)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    root = args.data or Path(cfg.data.root)
    dataset = open_dataset(root, args.split)
    meter = evaluate_segmenter(
        model.to(device), dataset, resize=cfg.data.resize, crop=cfg.data.val_crop, device=device
    )
    result = scores(meter, dataset.info.class_names, args.average)
    rows = [[name, percent(iou)] for name, iou in result["per_class_iou"].items()]
    stdout.print(
        table(f"{args.run_dir} on {root} ({args.split}, {args.weights})", ["class", "IoU %"], rows)
    )
    stdout.print(
        f"mIoU ({args.average}) {percent(result['miou'])}  WIoU {percent(result['wiou'])}  "
        f"pixel accuracy {percent(result['pixel_accuracy'])}  ({result['num_pixels']} pixels)"
    )
    if args.json:
        write_json(
            args.json,
            {
                "run_dir": str(args.run_dir),
                "data": str(root),
                "split": args.split,
                "weights": args.weights,
                **result,
            },
        )
    return 0
