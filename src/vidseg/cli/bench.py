"""``vidseg bench``: parameters, GFLOPs, latency, FPS and memory of models, side by side."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from rich.console import Console

from vidseg.cli.common import stdout, table, write_json
from vidseg.errors import ConfigError

log = logging.getLogger(__name__)

PIPE_WIDTH = 120
COLUMNS = [
    "model",
    "params M",
    "GFLOPs",
    "ms med.",
    "ms p90",
    "FPS",
    "mem MB",
    "ext. ms",
    "lat. x",
    "GFLOPs x",
]


def _size(text: str) -> tuple[int, int]:
    from vidseg.data.synth.config import parse_size

    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench",
        help="compare the cost of models: parameters, GFLOPs, latency, FPS, memory",
        description="Stream a synthetic aerial clip through each ENTRY (a run directory or a "
        "training config YAML, randomly initialised) at batch size 1 and print parameters, "
        "GFLOPs per frame in the steady streaming state, latency per frame (median, p90), FPS, "
        "peak memory and the time spent outside the torch graph, with ratios to the first entry. "
        "See docs/benchmarks.md for what each number counts.",
    )
    bench.add_argument("entries", nargs="+", metavar="ENTRY", help="run directory or config YAML")
    bench.add_argument(
        "--size", type=_size, default=(256, 256), metavar="H,W", help="frame size (or one number)"
    )
    bench.add_argument("--frames", type=int, default=50, help="timed frames per entry")
    bench.add_argument("--warmup", type=int, default=10, help="untimed frames before them")
    bench.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="default: cuda if present"
    )
    bench.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    bench.add_argument(
        "--num-classes",
        type=int,
        help="classes of config entries (default: from the config's dataset.yaml, else 8)",
    )
    bench.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every config entry, e.g. -o model.weights=null (repeatable)",
    )
    bench.add_argument("--json", type=Path, metavar="PATH", help="also write everything as JSON")
    bench.set_defaults(run=run_bench, parser=bench)


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from vidseg.evaluation.bench import add_ratios, benchmark, environment, load_bench_model

    if args.frames < 1 or args.warmup < 0:
        raise ConfigError(
            f"--frames must be >= 1 and --warmup >= 0, got {args.frames}, {args.warmup}"
        )
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda: no CUDA device is available (torch " + torch.__version__ + ")"
        )
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.num_classes is not None and args.num_classes < 1:
        raise ConfigError(f"--num-classes must be >= 1, got {args.num_classes}")

    # Load every entry first, so a bad one fails before minutes of measuring.
    models = [load_bench_model(e, args.override, args.num_classes) for e in args.entries]
    results = []
    for entry, (model, description) in zip(args.entries, models, strict=True):
        log.info("benchmarking %s (%s)", entry, description)
        results.append(
            benchmark(
                model,
                args.size,
                frames=args.frames,
                warmup=args.warmup,
                device=device,
                description=Path(entry).name,
            )
        )
        model.cpu()
    add_ratios(results)
    env = environment(device)
    descriptions = [description for _, description in models]
    _print_table(args, env, descriptions, results)
    if args.json:
        write_json(
            args.json,
            {
                "environment": env,
                "settings": {
                    "size": list(args.size),
                    "batch": 1,
                    "frames": args.frames,
                    "warmup": args.warmup,
                    "input": "synthetic aerial clip (vidseg.data.synth, train clip 0, seed 0)",
                    "overrides": list(args.override),
                },
                "entries": [
                    {"entry": e, "description": d, **r.to_dict()}
                    for e, d, r in zip(args.entries, descriptions, results, strict=True)
                ],
            },
        )
    return 0


def _print_table(
    args: argparse.Namespace, env: dict[str, Any], descriptions: list[str], results: list[Any]
) -> None:
    rows = []
    for i, (entry, res) in enumerate(zip(args.entries, results, strict=True), 1):
        external = ", ".join(f"{k} {v:.2f}" for k, v in res.external_ms.items()) or "-"
        rows.append(
            [
                f"{i}. {Path(entry).stem}",
                f"{res.params / 1e6:.2f}",
                f"{res.gflops:.2f}",
                f"{res.ms_median:.2f}",
                f"{res.ms_p90:.2f}",
                f"{res.fps:.1f}",
                "-" if res.peak_memory_mb is None else f"{res.peak_memory_mb:.0f}",
                external,
                f"{res.latency_ratio:.2f}",
                "-" if res.flops_ratio is None else f"{res.flops_ratio:.2f}",
            ]
        )
    h, w = args.size
    # A pipe or a file gets one line per model, not rich's default width of 80 columns.
    out = stdout if stdout.is_terminal else Console(soft_wrap=True, width=PIPE_WIDTH)
    out.print(
        table(
            f"{h}x{w}, batch 1, {args.frames} frames after {args.warmup} warm-up; "
            f"{env['device']}, {env['torch_threads']} threads, torch {env['torch']}",
            COLUMNS,
            rows,
        )
    )
    for i, (entry, description, res) in enumerate(
        zip(args.entries, descriptions, results, strict=True), 1
    ):
        first = (
            f"; first frame {res.first_frame_gflops:.2f} GFLOPs"
            if res.first_frame_flops != res.flops
            else ""
        )
        stdout.print(f"{i}. {entry}: {description}{first}")
    memory = (
        "CUDA max_memory_allocated above the weights"
        if env["device_type"] == "cuda"
        else "growth of the process's peak RSS"
    )
    stdout.print(
        "GFLOPs per frame in the steady streaming state (convolutions and matrix products, "
        "multiply-add = 2; work outside the torch graph excluded); ms = latency per frame, "
        f"which includes it; ext. ms = work outside the graph per frame; mem = {memory}; "
        "x = ratio to the first entry."
    )
