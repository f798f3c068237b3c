"""``vidseg demo``: the end-to-end demonstration on the built-in synthetic aerial video."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vidseg.cli.common import write_json

# The demo dataset; configs/data/synth-demo.yaml holds the same settings (a test keeps them equal).
DEMO_DATA: dict[str, Any] = {
    "clips": 6,
    "frames": 60,
    "size": 256,
    "label_every": 10,
    "eval_label_every": 1,
    "val_clips": 1,
    "test_clips": 1,
    "seed": 0,
    "fps": 15.0,
    "degrade": 1.0,
}


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the demonstration on built-in synthetic aerial video",
        description="Generate the synthetic aerial dataset, check its ground truth, print its "
        "statistics and write a preview picture.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="output directory")
    demo.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    demo.set_defaults(run=run_demo, parser=demo)


def run_demo(args: argparse.Namespace) -> int:
    from vidseg.cli.data import print_synth_summary, run_preview, verify_split
    from vidseg.data.synth import synthesize_with_summary

    root, summary = synthesize_with_summary(args.out / "data", overwrite=True, **DEMO_DATA)
    result = print_synth_summary(root, summary, title="1. ")
    checks, failed = verify_split(root, "val", title="2. ")
    run_preview(
        argparse.Namespace(
            root=root, split="val", clip=None, frames=None, out=args.out / "preview.png"
        )
    )
    if args.json:
        write_json(
            args.json,
            {
                "dataset": result,
                "checks": [
                    {
                        "clip": c.clip,
                        "min_label_agreement": c.min_label_agreement,
                        "max_static_flow_error": c.max_static_flow_error,
                    }
                    for c in checks
                ],
            },
        )
    return 1 if failed else 0
