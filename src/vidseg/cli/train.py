"""``vidseg train``: train an image segmentation model from a YAML config."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from vidseg.cli.common import percent, stdout, write_json
from vidseg.errors import ConfigError

log = logging.getLogger(__name__)


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
