"""``vidseg demo``: the end-to-end demonstration on the built-in synthetic aerial video.

Steps: synthesise the dataset (reused when an identical one is already there), check its
ground truth, train a small image segmenter on the CPU, score it on the val split, and write a
results table, ``results.json``, training curves and an overlay video of a val clip.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vidseg.cli.common import percent, stdout, table, write_json

log = logging.getLogger(__name__)

# The demo dataset; configs/data/synth-demo.yaml holds the same settings (a test keeps them equal).
DEMO_DATA: dict[str, Any] = {
    "clips": 14,
    "frames": 60,
    "size": 256,
    "label_every": 5,
    "eval_label_every": 1,
    "val_clips": 2,
    "test_clips": 1,
    "seed": 0,
    "fps": 15.0,
    "degrade": 1.0,
}

# The demo's image model and training settings (dotted overrides of the training config);
# configs/image/synth_demo.yaml holds the same settings (a test keeps them equal).
DEMO_TRAIN: dict[str, Any] = {
    "model.backbone": "small_cnn",
    "model.head": "upernet",
    "model.head_channels": 64,
    "model.dropout": 0.0,
    "data.crop": [128, 128],
    "data.scale_range": [0.75, 1.5],
    "data.scale_p": 1.0,
    "data.hflip_p": 0.5,
    "data.color_jitter_p": 0.5,
    "data.num_workers": 1,
    # Rare classes (people 0.2 % of pixels, vehicles 1 %, walls 2 %) weigh more.
    "loss.class_weights": [1.0, 1.0, 1.0, 4.0, 3.0, 1.5, 3.0, 1.0],
    "optim.lr": 3e-3,
    "optim.weight_decay": 1e-4,
    "optim.warmup_epochs": 1.0,
    "optim.start_lr": 0.01,
    "optim.final_lr": 0.01,
    "trainer.epochs": 100,
    "trainer.batch_size": 8,
    "trainer.val_every": 25,
    "trainer.log_every": 10,
    "trainer.seed": 0,
}


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the demonstration on built-in synthetic aerial video",
        description="Generate the synthetic aerial dataset (or reuse an identical one), check "
        "its ground truth, train a small image segmenter on it, score it on the val split and "
        "write results.json, training curves and an overlay video of a val clip.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory")
    demo.add_argument(
        "--fresh", action="store_true", help="regenerate the dataset even if it is already there"
    )
    demo.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training config overrides")
    demo.add_argument("--json", type=Path, metavar="PATH", help="also copy results.json here")
    demo.set_defaults(run=run_demo, parser=demo)


def demo_overrides(root: Path, out: Path, extra: list[str]) -> list[str]:
    """The demo's training config as ``key=value`` strings (``extra`` applied last)."""
    settings = {**DEMO_TRAIN, "data.root": str(root), "trainer.out_dir": str(out / "runs")}
    return [
        f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in settings.items()
    ] + list(extra)


def _cached(root: Path) -> bool:
    """Whether ``root`` holds the dataset DEMO_DATA would generate."""
    from vidseg.data import read_dataset_info
    from vidseg.data.synth import make_config
    from vidseg.data.synth.generate import GENERATOR_VERSION
    from vidseg.errors import DataError

    if not (root / "dataset.yaml").is_file():
        return False
    try:
        stored = read_dataset_info(root).extra.get("synthetic")
    except DataError:
        return False
    wanted = {k: v for k, v in make_config(**DEMO_DATA).to_dict().items() if k != "workers"}
    wanted = yaml.safe_load(yaml.safe_dump({"generator_version": GENERATOR_VERSION, **wanted}))
    return stored == wanted


def run_demo(args: argparse.Namespace) -> int:
    from vidseg.cli.data import print_synth_summary, run_preview, verify_split
    from vidseg.config import load_config
    from vidseg.data.synth import synthesize_with_summary
    from vidseg.training.config import TrainConfig
    from vidseg.training.trainer import train

    out: Path = args.out
    root = out / "data"
    start = time.perf_counter()
    cfg = load_config(TrainConfig, None, demo_overrides(root, out, args.overrides))
    if args.fresh or not _cached(root):
        root, summary = synthesize_with_summary(root, overwrite=True, workers=2, **DEMO_DATA)
        dataset = print_synth_summary(root, summary, title="1. ")
    else:
        stdout.print(f"1. synthetic dataset: reusing {root} (same settings; --fresh regenerates)")
        dataset = {"out": str(root), "reused": True}
    checks, failed = verify_split(root, "val", title="2. ")
    run_preview(
        argparse.Namespace(root=root, split="val", clip=None, frames=None, out=out / "preview.png")
    )
    stdout.print("3. training the image model (progress on stderr)")
    run_dir = train(cfg, name="image")
    results = _evaluate(run_dir, root, out)
    results["dataset"] = dataset
    results["checks"] = [
        {
            "clip": c.clip,
            "min_label_agreement": c.min_label_agreement,
            "max_static_flow_error": c.max_static_flow_error,
        }
        for c in checks
    ]
    results["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out / "results.json", results)
    if args.json:
        write_json(args.json, results)
    stdout.print(
        f"wrote {out / 'results.json'}, {out / 'training_curves.png'}, "
        f"{out / 'val_clip.mp4'} and {out / 'preview.png'} in {results['seconds']:.0f} s"
    )
    return 1 if failed else 0


def _evaluate(run_dir: Path, root: Path, out: Path) -> dict[str, Any]:
    """Score the trained model, print the tables, write the curves and the video."""
    import torch

    from vidseg.data import open_dataset
    from vidseg.data.classes import class_palette
    from vidseg.evaluation.image import evaluate_segmenter, scores
    from vidseg.evaluation.speed import measure_latency
    from vidseg.models import count_parameters
    from vidseg.training.checkpoint import load_run_model

    model, cfg = load_run_model(run_dir, "last")
    val = open_dataset(root, "val")
    result = scores(evaluate_segmenter(model, val), val.info.class_names)
    latency = measure_latency(model, val[0].size)
    params = count_parameters(model)
    name = f"image ({cfg.model.backbone} + {cfg.model.head}-{cfg.model.head_channels})"
    stdout.print(
        table(
            "4. results on the synthetic val split",
            ["model", "params", "mIoU %", "WIoU %", "pixel acc. %", "ms/frame (CPU)", "FPS"],
            [
                [
                    name,
                    f"{params / 1e6:.2f}M",
                    percent(result["miou"]),
                    percent(result["wiou"]),
                    percent(result["pixel_accuracy"]),
                    f"{latency['ms_median']:.1f}",
                    f"{latency['fps']:.1f}",
                ]
            ],
        )
    )
    stdout.print(
        table(
            "per-class IoU (%)",
            ["class", name],
            [[c, percent(v)] for c, v in result["per_class_iou"].items()],
        )
    )
    _write_curves(run_dir, out / "training_curves.png")
    with torch.no_grad():
        palette = class_palette(val.info.classes)
        _write_video(model, val[0], palette, out / "val_clip.mp4", val.info.fps)
    return {
        "models": [
            {
                "name": name,
                "run_dir": str(run_dir),
                "miou": result["miou"],
                "wiou": result["wiou"],
                "pixel_accuracy": result["pixel_accuracy"],
                "per_class_iou": result["per_class_iou"],
                "params": params,
                "latency": latency,
            }
        ],
        "split": "val",
        "torch": torch.__version__,
    }


def _write_curves(run_dir: Path, path: Path) -> None:
    from vidseg.evaluation.report import training_curves
    from vidseg.utils.io import write_png

    curves = training_curves(run_dir)
    if curves is not None:
        write_png(path, curves)


def _write_video(model: Any, clip: Any, palette: np.ndarray, path: Path, fps: float) -> None:
    import torch

    from vidseg.utils.console import track
    from vidseg.utils.video import VideoWriter
    from vidseg.visualize import label_text, overlay

    with VideoWriter(path, fps=fps) as writer:
        for n in track(clip.frames, f"video of {clip.id}"):
            image = clip.image(n)
            frame = torch.from_numpy(image).permute(2, 0, 1)[None]
            pred = model(frame).argmax(1)[0].numpy()
            label = clip.label(n)
            panels = [
                label_text(image, "frame"),
                label_text(overlay(image, pred, palette), "prediction"),
                label_text(
                    overlay(image, label, palette) if label is not None else image, "ground truth"
                ),
            ]
            writer.write(np.concatenate(panels, axis=1))
