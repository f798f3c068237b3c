"""``vidseg data``: synthesise, inspect and verify datasets in the clip-folder layout."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from vidseg.cli.common import frame_range, percent, stdout, table, write_json
from vidseg.data.classes import colorize
from vidseg.data.folder import FolderDataset, list_splits, open_dataset
from vidseg.data.info import read_dataset_info
from vidseg.data.samples import labelled_samples
from vidseg.data.synth import SynthSummary
from vidseg.data.synth.config import SynthConfig, make_config, parse_size
from vidseg.data.verify import ClipCheck, check_clip
from vidseg.errors import ConfigError, DataError
from vidseg.utils.console import track
from vidseg.utils.io import read_yaml, write_png
from vidseg.visualize import flow_to_rgb, grid

# Defaults of the ground-truth checks (`vidseg data verify`, the demo): calibrated on the synthetic
# data at 256x256 and above (docs/synthetic-data.md#exactness).
MOVING_CLASSES = ("human", "vehicle")
MIN_AGREEMENT = 0.97
MAX_FLOW_ERROR = 0.05  # pixels


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("data", help="create, inspect and verify datasets")
    group.set_defaults(parser=group)
    sub = group.add_subparsers(title="data commands", metavar="COMMAND", parser_class=type(group))

    synth = sub.add_parser(
        "synth",
        help="generate the synthetic aerial video dataset",
        description="Generate synthetic aerial clips with exact labels, homographies and flow, "
        "written in the clip-folder layout with train/val/test splits by clip.",
    )
    synth.add_argument("--out", type=Path, required=True, help="output dataset directory")
    synth.add_argument(
        "--config",
        type=Path,
        metavar="YAML",
        help="settings file (option names as keys, e.g. configs/data/synth-demo.yaml); "
        "options given on the command line override it",
    )
    _add_config_options(synth, SynthConfig)
    synth.add_argument(
        "--overwrite", action="store_true", help="replace an existing dataset at --out"
    )
    synth.add_argument("--json", type=Path, metavar="PATH", help="also write the summary as JSON")
    synth.set_defaults(run=run_synth, parser=synth)

    stats = sub.add_parser("stats", help="frame, label and class-frequency statistics of a dataset")
    stats.add_argument("root", type=Path, help="dataset root (holds dataset.yaml)")
    stats.add_argument("--split", action="append", help="split to count (repeatable; default: all)")
    stats.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the statistics as JSON"
    )
    stats.set_defaults(run=run_stats, parser=stats)

    verify = sub.add_parser(
        "verify",
        help="check labels, homographies and flow against each other",
        description="For each consecutive frame pair: warp the previous labels with the stored "
        "homography and measure agreement with the current labels on covered pixels; compare "
        "the stored flow with the homography's away from movable classes.",
    )
    verify.add_argument("root", type=Path, help="dataset root")
    verify.add_argument("--split", default="val", help="split to verify")
    verify.add_argument(
        "--moving-classes",
        default=",".join(MOVING_CLASSES),
        help="comma-separated class names excluded from the flow check",
    )
    verify.add_argument(
        "--min-agreement",
        type=float,
        default=MIN_AGREEMENT,
        help="fail (exit code 1) if a pair's label agreement falls below this fraction",
    )
    verify.add_argument(
        "--max-flow-error",
        type=float,
        default=MAX_FLOW_ERROR,
        help="fail if the flow departs from the homography by more pixels on static ground",
    )
    verify.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    verify.set_defaults(run=run_verify, parser=verify)

    preview = sub.add_parser(
        "preview",
        help="picture of a clip: frames, labels, flow and flow validity",
        description="Write a PNG with one column per frame and rows for the frames, their "
        "labels in the dataset palette, the backward flow (hue = direction, saturation = "
        "magnitude) and the flow validity mask, where the clip has them.",
    )
    preview.add_argument("root", type=Path, help="dataset root")
    preview.add_argument("--split", default="train", help="split holding the clip")
    preview.add_argument("--clip", help="clip id (default: the split's first clip)")
    preview.add_argument(
        "--frames",
        type=frame_range,
        default=None,
        metavar="START:STOP[:STEP]",
        help="positions of the frames to show (default: 5 frames spread over the clip)",
    )
    preview.add_argument("--out", type=Path, required=True, help="PNG file to write")
    preview.set_defaults(run=run_preview, parser=preview)


def _add_config_options(parser: argparse.ArgumentParser, config: type) -> None:
    """One option per dataclass field, with the field's help and default.

    Options default to "not given" so that values from ``--config`` are only overridden by the
    options actually typed.
    """
    defaults = config()
    for f in dataclasses.fields(config):
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f"{f.metadata.get('help', '')} (default: {shown})",
        }
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, tuple):
            kwargs["type"] = parse_size
            kwargs["metavar"] = "N|H,W"
        elif "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        else:
            kwargs["type"] = type(default)
            kwargs["metavar"] = f.name.upper()
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def _config_file(path: Path | None) -> dict[str, Any]:
    """Settings from a YAML file of option names (underscores or dashes) to values."""
    if path is None:
        return {}
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def run_synth(args: argparse.Namespace) -> int:
    from vidseg.data.synth import synthesize_with_summary

    options = _config_file(args.config)
    try:
        make_config(**options)  # check the file on its own, so that errors name it
    except ConfigError as exc:
        raise ConfigError(f"{args.config}: {exc}") from None
    typed = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(SynthConfig)
        if hasattr(args, f.name)
    }
    out, summary = synthesize_with_summary(
        args.out, overwrite=args.overwrite, **{**options, **typed}
    )
    result = print_synth_summary(out, summary)
    if args.json:
        write_json(args.json, result)
    return 0


def frequency_table(title: str, freq: dict[str, dict[str, float]]) -> Table:
    """Class frequencies (fractions) per split as a table of percentages."""
    names = list(next(iter(freq.values())))
    rows = [[name, *(percent(freq[split][name]) for split in freq)] for name in names]
    return table(title, ["class", *freq], rows)


def print_synth_summary(out: Path, summary: SynthSummary, title: str = "") -> dict[str, Any]:
    """Print the size, speed and class frequencies of a synthesised dataset; return them."""
    result = summary.to_dict()
    row = [
        len(summary.clips),
        result["frames"],
        f"{result['seconds']:.1f}",
        f"{result['frames_per_second']:.1f}",
        f"{result['render_frames_per_second']:.1f}",
    ]
    columns = ["clips", "frames", "seconds", "frames/s (all)", "frames/s (render)"]
    stdout.print(table(f"{title}synthetic dataset {out}", columns, [row]))
    stdout.print(
        frequency_table(
            f"{title}class frequency over labelled frames (% of pixels)",
            result["class_frequency"],
        )
    )
    return result


def _splits(root: Path, requested: list[str] | None) -> list[str]:
    available = list_splits(root)
    if requested:
        return requested
    if not available:
        raise DataError(f"{root}: no split files (splits/*.txt)")
    return available


def dataset_stats(ds: FolderDataset) -> dict[str, Any]:
    """Counts and class frequencies (over labelled frames) of one opened split."""
    counts = np.zeros(256, np.int64)
    frames = labelled = 0
    for clip in track(ds, f"reading {ds.split}", total=len(ds)):
        frames += len(clip.frames)
        for n in clip.labelled_frames:
            counts += np.bincount(clip.label(n).ravel(), minlength=256)
            labelled += 1
    samples = labelled_samples(ds, num_prev=1)
    total = max(int(counts.sum()), 1)
    freq = {name: float(counts[i]) / total for i, name in enumerate(ds.info.class_names)}
    freq["ignore"] = float(counts[ds.ignore_index]) / total
    return {
        "clips": len(ds),
        "frames": frames,
        "labelled_frames": labelled,
        "samples_with_previous_frame": len(samples),
        "samples_skipped": samples.skipped,
        "class_frequency": freq,
    }


def run_stats(args: argparse.Namespace) -> int:
    read_dataset_info(args.root)  # a clear error for a missing or bad dataset.yaml first
    result = {
        split: dataset_stats(open_dataset(args.root, split))
        for split in _splits(args.root, args.split)
    }
    keys = ["clips", "frames", "labelled_frames", "samples_with_previous_frame", "samples_skipped"]
    stdout.print(
        table(
            f"dataset {args.root}",
            ["", *result],
            [[k, *(result[s][k] for s in result)] for k in keys],
        )
    )
    stdout.print(
        frequency_table(
            "class frequency over labelled frames (% of pixels)",
            {split: stats["class_frequency"] for split, stats in result.items()},
        )
    )
    if args.json:
        write_json(args.json, result)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    checks, failed = verify_split(
        args.root,
        args.split,
        [n.strip() for n in args.moving_classes.split(",") if n.strip()],
        args.min_agreement,
        args.max_flow_error,
    )
    if args.json:
        write_json(
            args.json,
            [{"clip": c.clip, "pairs": [dataclasses.asdict(p) for p in c.pairs]} for c in checks],
        )
    return 1 if failed else 0


def verify_split(
    root: Path,
    split: str,
    moving_classes: tuple[str, ...] | list[str] = MOVING_CLASSES,
    min_agreement: float = MIN_AGREEMENT,
    max_flow_error: float = MAX_FLOW_ERROR,
    title: str = "",
) -> tuple[list[ClipCheck], bool]:
    """Run the ground-truth checks on every clip of a split, print a table, report failure."""
    ds = open_dataset(root, split)
    unknown = [n for n in moving_classes if n not in ds.info.class_names]
    if unknown:
        raise ConfigError(
            f"--moving-classes: unknown class {unknown[0]!r}; "
            f"classes are {', '.join(ds.info.class_names)}"
        )
    moving = tuple(ds.info.class_names.index(n) for n in moving_classes)
    checks = [check_clip(clip, moving) for clip in track(ds, "verifying", total=len(ds))]
    if not any(c.pairs for c in checks):
        raise DataError(f"{root} ({split}): no frame pair has a homography to check")
    rows, failed = [], False
    for c in checks:
        agreement, error = c.min_label_agreement, c.max_static_flow_error
        bad = (agreement is not None and agreement < min_agreement) or (
            error is not None and error > max_flow_error
        )
        failed |= bad
        rows.append(
            [
                c.clip,
                len(c.pairs),
                percent(agreement),
                percent(c.mean_label_agreement),
                "-" if error is None else f"{error:.4f}",
                percent(c.mean_moving_fraction),
                "FAIL" if bad else "ok",
            ]
        )
    columns = [
        "clip",
        "pairs",
        "label agreement min %",
        "mean %",
        "static flow error px",
        "moving %",
        "",
    ]
    stdout.print(table(f"{title}ground-truth checks: {root} ({split})", columns, rows))
    return checks, failed


def run_preview(args: argparse.Namespace) -> int:
    ds = open_dataset(args.root, args.split)
    clip = ds.clip(args.clip) if args.clip else ds[0]
    positions = range(len(clip.frames))
    if args.frames is None:
        chosen = (
            np.linspace(0, len(clip.frames) - 1, min(5, len(clip.frames)))
            .round()
            .astype(int)
            .tolist()
        )
    else:
        chosen = list(positions[args.frames])
    if not chosen:
        raise ConfigError(
            f"--frames selects no frame of clip '{clip.id}' ({len(clip.frames)} frames)"
        )
    frames = [clip.frames[i] for i in chosen]
    h, w = clip.size
    blank = np.full((h, w, 3), 200, np.uint8)
    images = [clip.image(n) for n in frames]
    labels = [clip.label(n) for n in frames]
    flows = [clip.flow(n) for n in frames]
    valid = [clip.flow_valid(n) for n in frames]
    rows = [images]
    if any(lab is not None for lab in labels):
        rows.append([blank if lab is None else colorize(lab, ds.info.classes) for lab in labels])
    if any(f is not None for f in flows):
        scale = max(float(np.hypot(f[..., 0], f[..., 1]).max()) for f in flows if f is not None)
        rows.append([blank if f is None else flow_to_rgb(f, scale) for f in flows])
    if any(v is not None for v in valid):
        rows.append(
            [
                blank if v is None else np.repeat(v[..., None] * np.uint8(255), 3, axis=2)
                for v in valid
            ]
        )
    write_png(args.out, grid(rows))
    stdout.print(
        f"wrote {args.out}: clip {clip.id}, frames {', '.join(map(str, frames))}, rows: "
        + ", ".join(["frames", "labels", "flow", "flow validity"][: len(rows)])
    )
    return 0
