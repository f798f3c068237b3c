"""``vidseg demo``: the end-to-end demonstration on the built-in synthetic aerial video."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidseg.cli.common import percent, stdout, table, write_json


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
    from vidseg.data.folder import open_dataset
    from vidseg.data.synth import synthesize_with_summary
    from vidseg.data.verify import check_clip

    data_root = args.out / "data"
    root, summary = synthesize_with_summary(data_root, overwrite=True, clips=6, frames=60, size=256)
    result = summary.to_dict()
    stdout.print(
        table(
            f"1. synthetic aerial dataset: {root}",
            ["clips", "frames", "seconds", "frames/s"],
            [
                [
                    len(summary.clips),
                    result["frames"],
                    f"{result['seconds']:.1f}",
                    f"{result['frames_per_second']:.1f}",
                ]
            ],
        )
    )
    freq = result["class_frequency"]
    names = list(next(iter(freq.values())))
    stdout.print(
        table(
            "2. class frequency over labelled frames (% of pixels)",
            ["class", *freq],
            [[n, *(percent(freq[s][n]) for s in freq)] for n in names],
        )
    )
    ds = open_dataset(root, "val")
    moving = tuple(ds.info.class_names.index(n) for n in ("human", "vehicle"))
    checks = [check_clip(clip, moving) for clip in ds]
    stdout.print(
        table(
            "3. exactness of the ground truth (val split)",
            ["clip", "pairs", "label agreement min %", "static flow error px", "moving pixels %"],
            [
                [
                    c.clip,
                    len(c.pairs),
                    percent(c.min_label_agreement),
                    f"{c.max_static_flow_error:.4f}",
                    percent(c.mean_moving_fraction),
                ]
                for c in checks
            ],
        )
    )
    from vidseg.cli.data import run_preview

    preview = args.out / "preview.png"
    run_preview(argparse.Namespace(root=root, split="val", clip=None, frames=None, out=preview))
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
    return 0
