"""``vidseg ablate``: the SSP paper's ablation rows (Table 3) and ours, trained and scored alike.

Every row fine-tunes the same trained image run with the base video config plus the row's
overrides, then streams the val split: mIoU, TC (both protocols), mVC8 and the latency per frame.
Rows whose result is already in the output folder are not run again, so an interrupted ablation
resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from vidseg.cli.common import percent, stdout, table, write_json
from vidseg.errors import ConfigError

log = logging.getLogger(__name__)

# name: (the paper's row label or ours, overrides of the base SSP config)
ABLATIONS: dict[str, tuple[str, list[str]]] = {
    "base": ("Base parameters", []),
    "cossim": ("Cos. sim. interpolation", ["video.ssp.sim_op=cossim"]),
    "no_registration": (
        "No registration alignment",
        ["video.ssp.registration={method: identity}"],
    ),
    "no_interpolation": ("No interpolation", ["video.ssp.sim_op=constant"]),
    "no_consistency_loss": ("No consistency loss", ["loss.temporal.weight=0"]),
    "unroll2": ("2-step (unrolled) training", ["video.unroll=2"]),
    "untrained_image": ("Untrained image model", ["video.image_weights=null"]),
    "lambda_0.2": ("lambda 0.2", ["loss.temporal.weight=0.2"]),
    "lambda_0.35": ("lambda 0.35", ["loss.temporal.weight=0.35"]),
    "lambda_0.65": ("lambda 0.65", ["loss.temporal.weight=0.65"]),
    "stride4": ("Fusion at stride 4", ["video.ssp.fuse_at=stride4"]),
    "official_loss": ("Official loss formulation", ["loss.temporal.official=true"]),
}
PAPER_ROWS = [
    "base",
    "cossim",
    "no_registration",
    "no_interpolation",
    "no_consistency_loss",
    "unroll2",
    "untrained_image",
]


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "ablate",
        help="train and score the SSP ablation rows",
        description="Fine-tune the image run RUN with the video config --config once per "
        "ablation row (the paper's Table 3 and ours), score every row by streaming over the val "
        "split and write ablation.json and ablation.md to --out. Finished rows are reused.",
    )
    parser.add_argument(
        "--image-run", type=Path, required=True, metavar="RUN", help="the trained image run"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("configs/video/synth_ssp.yaml"),
        help="the base SSP config",
    )
    parser.add_argument(
        "--rows",
        default=",".join(PAPER_ROWS),
        help=f"comma-separated rows, or 'all'; known: {', '.join(ABLATIONS)}",
    )
    parser.add_argument("--out", type=Path, default=Path("ablation_out"), help="output folder")
    parser.add_argument(
        "--flow",
        default="gt",
        help="flow of the TC metric: gt (synthetic data), dis, farneback (default: gt)",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="for every row")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also copy ablation.json here")
    parser.set_defaults(run=run_ablate, parser=parser)


def _rows(text: str) -> list[str]:
    rows = list(ABLATIONS) if text == "all" else [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ABLATIONS]
    if unknown:
        raise ConfigError(f"--rows: unknown row '{unknown[0]}'; known: {', '.join(ABLATIONS)}")
    return rows


def run_ablate(args: argparse.Namespace) -> int:
    from vidseg.config import load_config
    from vidseg.data import open_dataset
    from vidseg.flow import build
    from vidseg.training.checkpoint import check_run_dir
    from vidseg.training.config import TrainConfig
    from vidseg.training.trainer import train

    rows = _rows(args.rows)
    image_run = check_run_dir(args.image_run)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    base = [f"video.image_weights={image_run}", f"trainer.out_dir={out / 'runs'}"]
    configs = {
        row: load_config(TrainConfig, args.config, [*base, *ABLATIONS[row][1], *args.overrides])
        for row in rows
    }
    val = open_dataset(configs[rows[0]].data.root, configs[rows[0]].data.val_split)
    flow = build(args.flow)
    setting = {"config": str(args.config), "image_run": str(image_run), "flow": args.flow}
    results: dict[str, Any] = {
        "image": _score("image", "Base image model", image_run, val, flow, out, setting)
    }
    for i, row in enumerate(rows, 1):
        done = out / "rows" / f"{row}.json"
        wanted = {**setting, "overrides": [*ABLATIONS[row][1], *args.overrides]}
        if done.is_file():
            stored = json.loads(done.read_text())
            if stored.get("setting") == wanted:
                stdout.print(f"{i}/{len(rows)} {row}: reusing {done}")
                results[row] = stored
                continue
            log.warning("%s was made with other settings; training the row again", done)
        stdout.print(f"{i}/{len(rows)} {row}: training (progress on stderr)")
        began = time.perf_counter()
        run_dir = train(configs[row], name=f"ablation-{row}")
        seconds = round(time.perf_counter() - began, 1)
        results[row] = _score(row, ABLATIONS[row][0], run_dir, val, flow, out, wanted, seconds)
    report = {
        "config": str(args.config),
        "image_run": str(image_run),
        "overrides": list(args.overrides),
        "flow": args.flow,
        "split": configs[rows[0]].data.val_split,
        "rows": results,
    }
    write_json(out / "ablation.json", report)
    if args.json:
        write_json(args.json, report)
    (out / "ablation.md").write_text(markdown_table(results))
    stdout.print(_table(results))
    stdout.print(f"wrote {out / 'ablation.json'} and {out / 'ablation.md'}")
    return 0


def _score(
    key: str,
    label: str,
    run_dir: Path,
    val: Any,
    flow: Any,
    out: Path,
    setting: dict[str, Any],
    train_seconds: float | None = None,
) -> dict[str, Any]:
    from vidseg.evaluation.bench import benchmark
    from vidseg.evaluation.video import evaluate_run
    from vidseg.training.checkpoint import load_run_model

    scored = evaluate_run(run_dir, val, flow=flow)
    model, _ = load_run_model(run_dir)
    speed = benchmark(model, val[0].size, frames=30, warmup=5, description=key)
    row = {
        "label": label,
        "setting": setting,
        "overrides": ABLATIONS[key][1] if key in ABLATIONS else [],
        "run_dir": str(run_dir),
        "miou": scored["miou"],
        "tc_ssp": scored.get("tc_ssp"),
        "tc_clean": scored.get("tc_clean"),
        "mvc8": scored.get("mvc8"),
        "params": speed.params,
        "ms_per_frame": speed.ms_median,
        "train_seconds": train_seconds,
    }
    if key != "image":
        write_json(out / "rows" / f"{key}.json", row)
    return row


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """The rows as a Markdown table (percentages; latency on this machine)."""
    lines = [
        "| row | overrides | mIoU % | TC ssp % | TC clean % | mVC8 % | ms/frame |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results.values():
        overrides = ", ".join(f"`{o}`" for o in row["overrides"]) or "-"
        lines.append(
            f"| {row['label']} | {overrides} | {percent(row['miou'])} | "
            f"{percent(row['tc_ssp'])} | {percent(row['tc_clean'])} | {percent(row['mvc8'])} | "
            f"{row['ms_per_frame']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _table(results: dict[str, dict[str, Any]]) -> Any:
    return table(
        "SSP ablation (streaming over the val split)",
        ["row", "mIoU %", "TC ssp %", "TC clean %", "mVC8 %", "ms/frame"],
        [
            [
                r["label"],
                percent(r["miou"]),
                percent(r["tc_ssp"]),
                percent(r["tc_clean"]),
                percent(r["mvc8"]),
                f"{r['ms_per_frame']:.1f}",
            ]
            for r in results.values()
        ],
    )
