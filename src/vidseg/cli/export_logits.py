"""``vidseg export-logits``: a teacher run's logits over every frame of a split, for KD-SSP."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidseg.cli.common import stdout, write_json
from vidseg.errors import ConfigError


def register(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export-logits",
        help="store a teacher's logits over every frame of a split (for distillation)",
        description="Run the image model of RUN_DIR (the teacher) over every frame of a split, "
        "with the run's data.resize, and store its logits as float16: one <clip>.npy per clip "
        "and a manifest.json with checksums. Resumable: clips already exported with a "
        "matching checksum are skipped.",
    )
    export.add_argument(
        "run_dir", type=Path, metavar="RUN_DIR", help="run directory of the teacher"
    )
    export.add_argument("--split", default="train", help="split to export")
    export.add_argument(
        "--data", type=Path, metavar="ROOT", help="dataset root (default: the run's data.root)"
    )
    export.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder (default: RUN_DIR/logits/SPLIT-WEIGHTS)",
    )
    export.add_argument(
        "--weights",
        choices=("last", "best"),
        default="last",
        help="model.safetensors or best.safetensors",
    )
    export.add_argument(
        "--resolution",
        choices=("stride4", "full"),
        default="stride4",
        help="stride4: the decoder's logits (exact, 16x smaller); full: upsampled to the input",
    )
    export.add_argument(
        "--batch-size", type=int, default=4, metavar="N", help="frames per forward pass"
    )
    export.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    export.add_argument("--json", type=Path, metavar="PATH", help="also write the summary here")
    export.set_defaults(run=run_export_logits, parser=export)


def run_export_logits(args: argparse.Namespace) -> int:
    import torch

    from vidseg.data import open_dataset
    from vidseg.data.teacher_logits import export_logits, format_size
    from vidseg.models import Segmenter
    from vidseg.training.checkpoint import load_run_model

    model, cfg = load_run_model(args.run_dir, weights=args.weights)
    if not isinstance(model, Segmenter):
        raise ConfigError(
            f"{args.run_dir} holds a video model ({type(model).__name__}); a teacher must be an "
            "image model (a run trained without a video method)"
        )
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    root = args.data or Path(cfg.data.root)
    dataset = open_dataset(root, args.split)
    out = args.out or Path(args.run_dir) / "logits" / f"{args.split}-{args.weights}"
    summary = export_logits(
        model,
        dataset,
        out,
        resolution=args.resolution,
        resize=cfg.data.resize,
        device=device,
        teacher={"run_dir": str(Path(args.run_dir).resolve()), "weights": args.weights},
        batch_size=args.batch_size,
    )
    stdout.print(
        f"{summary.frames} frames of {summary.clips} clips in {out}: "
        f"{format_size(summary.bytes)} on disk, {summary.ratio:.1f}x smaller than the official "
        f"fp32 full-resolution logits ({format_size(summary.official_bytes)}); "
        f"{summary.computed_clips} clips computed, {summary.skipped_clips} already done"
    )
    if args.json:
        write_json(
            args.json,
            {
                "run_dir": str(args.run_dir),
                "weights": args.weights,
                "data": str(root),
                "split": args.split,
                "resolution": args.resolution,
                **summary.to_dict(),
            },
        )
    return 0
