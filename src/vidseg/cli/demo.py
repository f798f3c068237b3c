"""``vidseg demo``: the end-to-end demonstration on the built-in synthetic aerial video.

Steps: synthesise the dataset (reused when an identical one is already there), check its
ground truth, then train on the CPU the image model, SSP around it, a larger teacher and KD-SSP
distilled from the teacher's exported logits; score all four by streaming over the val split
(mIoU, TC with ground-truth flow, mVC8, parameters, latency) and write the table,
``results.json``, training curves, a side-by-side video (image model, SSP, ground truth) and the
similarity maps of one clip. ``--quick`` runs the same steps with short trainings.
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
# configs/image/synth_demo.yaml holds the same settings (a test keeps them equal, and the other
# stages' files below).
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


# SSP around the image model (configs/video/synth_ssp.yaml): the image run's weights are
# fine-tuned with the conv similarity op, KLT registration and the temporal loss on DIS flow.
DEMO_SSP: dict[str, Any] = {
    **DEMO_TRAIN,
    "video.method": "ssp",
    "video.ssp.sim_op": "conv",
    "video.ssp.fuse_at": "full",
    "video.ssp.registration": {"method": "klt"},
    "video.homographies": "model",
    "loss.temporal.weight": 0.5,
    "loss.temporal.flow": "dis",
    "optim.lr": 1e-3,
    "optim.warmup_epochs": 0.5,
    "trainer.epochs": 10,
    "trainer.val_every": 10,
}

# The teacher (configs/image/synth_teacher.yaml): a wider CNN (1.9x the parameters) trained like
# the image model.
DEMO_TEACHER: dict[str, Any] = {
    **DEMO_TRAIN,
    "model.backbone": "medium_cnn",
}

# KD-SSP (configs/video/synth_kd_ssp.yaml): SSP trained on every second frame pair of the train
# split, labelled or not, against the teacher's logits (targets made consistent through DIS flow).
DEMO_KD_SSP: dict[str, Any] = {
    **DEMO_SSP,
    "distill.reduction": "pixelmean",
    "distill.flow": "dis",
    "distill.every": 2,
    "trainer.epochs": 4,
    "trainer.val_every": 4,
}

STAGES: dict[str, dict[str, Any]] = {
    "image": DEMO_TRAIN,
    "ssp": DEMO_SSP,
    "teacher": DEMO_TEACHER,
    "kd_ssp": DEMO_KD_SSP,
}
# --quick: the same stages with short trainings (a smoke test of about 3 minutes).
QUICK_EPOCHS = {"image": 12, "ssp": 2, "teacher": 12, "kd_ssp": 1}

# Streaming evaluation of the demo: ground-truth flow, both TC protocols, mVC8.
VC_WINDOW = 8


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the demonstration on built-in synthetic aerial video",
        description="Generate the synthetic aerial dataset (or reuse an identical one), check "
        "its ground truth, train an image model, SSP around it, a teacher and KD-SSP on it, score "
        "all four on the val split (mIoU, temporal consistency, latency) and write results.json, "
        "training curves, a side-by-side video and similarity maps.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory")
    demo.add_argument(
        "--fresh", action="store_true", help="regenerate the dataset even if it is already there"
    )
    demo.add_argument(
        "--quick", action="store_true", help="short trainings: a smoke test of about 3 minutes"
    )
    demo.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every stage"
    )
    demo.add_argument("--json", type=Path, metavar="PATH", help="also copy results.json here")
    demo.set_defaults(run=run_demo, parser=demo)


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip()


def demo_overrides(
    root: Path, out: Path, extra: list[str], stage: str = "image", quick: bool = False
) -> list[str]:
    """The training config of demo ``stage`` as ``key=value`` strings (``extra`` applied last)."""
    settings = {**STAGES[stage], "data.root": str(root), "trainer.out_dir": str(out / "runs")}
    if quick:
        epochs = QUICK_EPOCHS[stage]
        settings.update({"trainer.epochs": epochs, "trainer.val_every": epochs})
    return [f"{k}={_yaml_value(v)}" for k, v in settings.items()] + list(extra)


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
    from vidseg.data import open_dataset
    from vidseg.data.synth import synthesize_with_summary
    from vidseg.data.teacher_logits import export_logits
    from vidseg.training.checkpoint import load_run_model
    from vidseg.training.config import TrainConfig
    from vidseg.training.trainer import train

    out: Path = args.out
    root = out / "data"
    start = time.perf_counter()

    def config(stage: str, *extra: str) -> TrainConfig:
        overrides = demo_overrides(root, out, [*extra, *args.overrides], stage, args.quick)
        return load_config(TrainConfig, None, overrides)

    # Every stage's config is checked before the first minute of work.
    config("kd_ssp", "distill.logits=unset", "video.image_weights=unset")
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
    runs: dict[str, Path] = {}
    stage_seconds: dict[str, float] = {}

    def stage(key: str, title: str, *extra: str) -> None:
        stdout.print(f"{title} (progress on stderr)")
        began = time.perf_counter()
        runs[key] = train(config(key, *extra), name=key)
        stage_seconds[key] = round(time.perf_counter() - began, 1)

    stage("image", "3. training the image model")
    stage("ssp", "4. training SSP around it", f"video.image_weights={runs['image']}")
    stage("teacher", "5. training the teacher")
    stdout.print("6. exporting the teacher's logits of the train split")
    began = time.perf_counter()
    teacher, _ = load_run_model(runs["teacher"])
    logits_dir = runs["teacher"] / "logits" / "train-last"
    export = export_logits(teacher, open_dataset(root, "train"), logits_dir)
    stage_seconds["export_logits"] = round(time.perf_counter() - began, 1)
    stage(
        "kd_ssp",
        "7. training KD-SSP from the teacher",
        f"video.image_weights={runs['image']}",
        f"distill.logits={logits_dir}",
    )
    results = _evaluate(runs, root, out)
    results["teacher_logits"] = export.to_dict()
    results["dataset"] = dataset
    results["checks"] = [
        {
            "clip": c.clip,
            "min_label_agreement": c.min_label_agreement,
            "max_static_flow_error": c.max_static_flow_error,
        }
        for c in checks
    ]
    results["quick"] = bool(args.quick)
    results["stage_seconds"] = stage_seconds
    results["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out / "results.json", results)
    if args.json:
        write_json(args.json, results)
    stdout.print(
        f"wrote {out / 'results.json'}, {out / 'training_curves.png'}, "
        f"{out / 'val_clip.mp4'}, {out / 'similarity.png'} and {out / 'preview.png'} in "
        f"{results['seconds']:.0f} s"
    )
    return 1 if failed else 0


NAMES = {
    "image": "image model",
    "ssp": "SSP",
    "teacher": "teacher",
    "kd_ssp": "KD-SSP",
}


def _evaluate(runs: dict[str, Path], root: Path, out: Path) -> dict[str, Any]:
    """Score every model by streaming over the val split; print and return the table."""
    import torch

    from vidseg.data import open_dataset
    from vidseg.evaluation.bench import benchmark
    from vidseg.evaluation.video import EvalOptions, evaluate_run, prepare
    from vidseg.flow import build
    from vidseg.models import as_video_model
    from vidseg.training.checkpoint import load_run_model

    val = open_dataset(root, "val")
    flow = build("gt")
    clip = val[0]
    stdout.print("8. scoring every model by streaming over the val split")
    models: list[dict[str, Any]] = []
    loaded: dict[str, Any] = {}
    labels_tc = None
    for key, run_dir in runs.items():
        scored = evaluate_run(run_dir, val, flow=flow, vc_windows=(VC_WINDOW,))
        labels_tc = scored["tc_labels"]
        model, cfg = load_run_model(run_dir)
        video = as_video_model(model)
        loaded[key] = video
        # At the model's own input size (the teacher sees frames resized to twice the size).
        options = EvalOptions(resize=cfg.data.resize)
        frames = [
            torch.from_numpy(prepare(clip.image(n), None, options)[0]).permute(2, 0, 1)[None]
            for n in clip.frames
        ]
        speed = benchmark(video, clip=frames, frames=60, warmup=10, description=NAMES[key])
        models.append(
            {
                "key": key,
                "name": NAMES[key],
                "model": _describe(cfg),
                "run_dir": str(run_dir),
                "input_size": list(frames[0].shape[-2:]),
                "miou": scored["miou"],
                "wiou": scored["wiou"],
                "pixel_accuracy": scored["pixel_accuracy"],
                "per_class_iou": scored["per_class_iou"],
                "tc_ssp": scored["tc_ssp"],
                "tc_clean": scored["tc_clean"],
                f"mvc{VC_WINDOW}": scored[f"mvc{VC_WINDOW}"],
                "params": speed.params,
                "latency": speed.to_dict(),
            }
        )
    image_ms = models[0]["latency"]["ms_median"]
    for row in models:
        row["latency_ratio"] = round(row["latency"]["ms_median"] / image_ms, 3)
    image_frames = [torch.from_numpy(clip.image(n)).permute(2, 0, 1)[None] for n in clip.frames]
    two_pass = _two_pass_latency(runs["ssp"], image_frames)
    _print_tables(models, val.info.class_names, labels_tc, two_pass, image_ms)
    _write_curves(runs["image"], out / "training_curves.png")
    with torch.no_grad():
        _write_video(loaded["image"], loaded["ssp"], val, out)
    return {
        "models": models,
        "ssp_two_pass": {**two_pass, "latency_ratio": round(two_pass["ms_median"] / image_ms, 3)},
        "tc_labels": labels_tc,
        "split": "val",
        "flow": "gt",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _describe(cfg: Any) -> str:
    m = cfg.model
    size = f", input {cfg.data.resize[0]}x{cfg.data.resize[1]}" if cfg.data.resize else ""
    return f"{m.backbone} + {m.head}-{m.head_channels}{size}"


def _two_pass_latency(run_dir: Path, frames: list[Any]) -> dict[str, Any]:
    """Latency of the SSP run re-encoding the previous frame at every step (the official
    training forward used for inference), for comparison with the one-pass stream."""
    from vidseg.evaluation.bench import benchmark
    from vidseg.training.checkpoint import load_run_model

    model, _ = load_run_model(run_dir)
    model.config.recompute_previous = True
    return benchmark(model, clip=frames, frames=60, warmup=10, description="SSP two-pass").to_dict()


def _print_tables(
    models: list[dict[str, Any]],
    class_names: list[str],
    labels_tc: dict[str, Any] | None,
    two_pass: dict[str, Any],
    image_ms: float,
) -> None:
    rows = [
        [
            m["name"],
            percent(m["miou"]),
            percent(m["tc_ssp"]),
            percent(m["tc_clean"]),
            percent(m[f"mvc{VC_WINDOW}"]),
            f"{m['params'] / 1e6:.3f}M",
            f"{m['latency']['ms_median']:.1f}",
            f"{m['latency_ratio']:.2f}",
        ]
        for m in models
    ]
    rows.append(
        [
            "SSP two-pass",
            "",
            "",
            "",
            "",
            "",
            f"{two_pass['ms_median']:.1f}",
            f"{two_pass['ms_median'] / image_ms:.2f}",
        ]
    )
    stdout.print(
        table(
            "9. results on the synthetic val split (streaming; TC with ground-truth flow)",
            [
                "model",
                "mIoU %",
                "TC ssp %",
                "TC clean %",
                f"mVC{VC_WINDOW} %",
                "params",
                "ms/frame",
                "x image",
            ],
            rows,
        )
    )
    for m in models:
        stdout.print(f"{m['name']}: {m['model']}")
    stdout.print(
        "SSP two-pass: SSP re-encoding the previous frame at every step; ms/frame: median CPU "
        "latency per frame, batch 1, registration included"
    )
    if labels_tc is not None:
        stdout.print(
            f"TC of the ground-truth labels (the ceiling): ssp {percent(labels_tc.get('ssp'))} %, "
            f"clean {percent(labels_tc.get('clean'))} %"
        )
    stdout.print(
        table(
            "per-class IoU (%)",
            ["class", *[m["name"] for m in models]],
            [[c, *[percent(m["per_class_iou"][c]) for m in models]] for c in class_names],
        )
    )


def _write_curves(run_dir: Path, path: Path) -> None:
    from vidseg.evaluation.report import training_curves
    from vidseg.utils.io import write_png

    curves = training_curves(run_dir)
    if curves is not None:
        write_png(path, curves)


def _sim_to_rgb(sim: np.ndarray) -> np.ndarray:
    """A similarity map in [0, 1] (H, W) as a uint8 RGB heat map (dark: current prediction,
    bright: propagated previous prediction)."""
    import cv2

    gray = np.clip(sim * 255 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)


def _write_video(image_model: Any, ssp: Any, val: Any, out: Path) -> None:
    """The side-by-side video of the first val clip (frame, image model, SSP, ground truth) and
    a grid of SSP's similarity maps on eight of its frames."""
    import torch

    from vidseg.data.classes import class_palette
    from vidseg.utils.console import track
    from vidseg.utils.io import write_png
    from vidseg.utils.video import VideoWriter
    from vidseg.visualize import grid, label_text, overlay

    clip = val[0]
    palette = class_palette(val.info.classes)
    shown = set(clip.frames[1 :: max(1, (len(clip.frames) - 1) // 8)][:8])
    sims: list[list[np.ndarray]] = []
    state = None
    with VideoWriter(out / "val_clip.mp4", fps=val.info.fps or 15.0) as writer:
        for n in track(clip.frames, f"video of {clip.id}"):
            image = clip.image(n)
            frame = torch.from_numpy(image).permute(2, 0, 1)[None]
            plain = image_model.step(frame, None)[0].argmax(1)[0].numpy()
            logits, state = ssp.step(frame, state)
            fused = logits.argmax(1)[0].numpy()
            label = clip.label(n)
            writer.write(
                np.concatenate(
                    [
                        label_text(overlay(image, plain, palette), "image model"),
                        label_text(overlay(image, fused, palette), "SSP"),
                        label_text(
                            overlay(image, label, palette) if label is not None else image,
                            "ground truth",
                        ),
                    ],
                    axis=1,
                )
            )
            if n in shown and state.sim is not None:
                sim = torch.nn.functional.interpolate(state.sim, size=image.shape[:2])
                sims.append(
                    [
                        label_text(image, f"frame {n}"),
                        label_text(_sim_to_rgb(sim[0, 0].numpy()), "similarity"),
                    ]
                )
    if sims:
        half = (len(sims) + 1) // 2
        rows = [sims[i] + (sims[i + half] if i + half < len(sims) else []) for i in range(half)]
        write_png(out / "similarity.png", grid(rows))
