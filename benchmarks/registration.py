"""Accuracy and speed of homography registration on the synthetic aerial world.

For each frame size, renders ``--clips`` synthetic train clips of ``--frames`` frames in memory
(``iter_clip``: default degradations and camera motion, no files written), or reads one split of
an existing clip-folder dataset (``--root``), and registers every consecutive frame pair with
each configuration below. Reported per configuration:

- corner error: for each pair, the mean over the four frame corners of ``|H_est(c) - H_gt(c)|``
  in pixels against the ground-truth homography; then the mean, median and 90th percentile over
  pairs (a fallback counts with the error of the identity it returns);
- fallbacks (identity returned) and weak results (``info.quality``);
- pairs/s: ``Registrar(prev, cur)`` calls per second in this single process, both frames'
  feature detection included, frames already in memory, after one warm-up pair; OpenCV threads
  as set by ``--threads``. The ``stream`` row uses ``Registrar.track``, which detects each frame
  once.

    python benchmarks/registration.py --sizes 256 512 --json registration.json
    python benchmarks/registration.py --sizes 256 --degrade 0 2 3 --only orb-0.5-magsac

Results measured with this script are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import cv2
import numpy as np

from vidseg.data import open_dataset
from vidseg.data.synth import SynthConfig, iter_clip
from vidseg.geometry.registration import Registrar, RegistrationInfo, corner_error
from vidseg.utils.console import setup_logging

log = logging.getLogger("vidseg.benchmarks.registration")

# name -> Registrar options; "orb-0.5-magsac" is the default configuration.
CONFIGS: dict[str, dict[str, Any]] = {
    "identity": {"method": "identity"},
    "orb-1.0-magsac": {"scale": 1.0},
    "orb-1.0-ransac": {"scale": 1.0, "estimator": "ransac"},
    "orb-0.5-magsac": {},
    "orb-0.5-ransac": {"estimator": "ransac"},
    "orb-0.5-magsac-no-refine": {"refine": "none"},
    "orb-0.25-magsac": {"scale": 0.25},
    "orb-0.25-ransac": {"scale": 0.25, "estimator": "ransac"},
    "sift-1.0-magsac": {"method": "sift", "scale": 1.0},
    "sift-1.0-ransac": {"method": "sift", "scale": 1.0, "estimator": "ransac"},
    "sift-0.5-magsac": {"method": "sift"},
    "sift-0.5-ransac": {"method": "sift", "estimator": "ransac"},
}


@dataclass
class Clip:
    frames: list[np.ndarray]
    homographies: list[np.ndarray]  # entry n maps frame n-1 to frame n


def synthetic_clips(size: int, clips: int, frames: int, degrade: float, seed: int) -> list[Clip]:
    cfg = SynthConfig(clips=clips + 2, frames=frames, size=(size, size), degrade=degrade, seed=seed)
    out = []
    for i in range(clips):
        rendered = list(iter_clip(cfg, "train", i, with_flow=False))
        out.append(Clip([f.image for f in rendered], [f.homography for f in rendered]))
    return out


def dataset_clips(root: str, split: str) -> list[Clip]:
    out = []
    for clip in open_dataset(root, split):
        homographies = [clip.homography(n) for n in clip.frames]
        if any(h is None for h in homographies[1:]):
            raise SystemExit(f"clip {clip.id} of {root} lacks ground-truth homographies")
        out.append(Clip([clip.image(n) for n in clip.frames], homographies))
    return out


def measure(name: str, options: dict[str, Any], clips: list[Clip]) -> dict[str, Any]:
    registrar = Registrar(**options)
    pairs = [(c, n) for c in clips for n in range(1, len(c.frames))]
    first, n = pairs[0]
    registrar(first.frames[n - 1], first.frames[n])  # warm-up: first-call allocations
    results = []
    start = time.perf_counter()
    for clip, n in pairs:
        results.append(registrar(clip.frames[n - 1], clip.frames[n]))
    seconds = time.perf_counter() - start
    size = clips[0].frames[0].shape[:2]
    errors = np.array(
        [
            corner_error(h, clip.homographies[n], size)
            for (h, _), (clip, n) in zip(results, pairs, strict=True)
        ]
    )
    return summarise(name, registrar, size, errors, [info for _, info in results], seconds)


def measure_stream(clips: list[Clip]) -> dict[str, Any]:
    registrar = Registrar()
    list(registrar.track(clips[0].frames[:2]))  # warm-up
    size = clips[0].frames[0].shape[:2]
    errors, infos = [], []
    start = time.perf_counter()
    for clip in clips:
        for n, (h, info) in enumerate(registrar.track(clip.frames), start=1):
            errors.append(corner_error(h, clip.homographies[n], size))
            infos.append(info)
    seconds = time.perf_counter() - start
    return summarise("orb-0.5-magsac, stream", registrar, size, np.array(errors), infos, seconds)


def summarise(
    name: str,
    registrar: Registrar,
    size: tuple[int, ...],
    errors: np.ndarray,
    infos: list[RegistrationInfo],
    seconds: float,
) -> dict[str, Any]:
    """One result row: corner-error statistics over the pairs, quality counts and the rate."""
    return {
        "config": name,
        "options": registrar.config.to_dict(),
        "size": f"{size[0]}x{size[1]}",
        "pairs": len(errors),
        "mean_px": float(errors.mean()),
        "median_px": float(np.median(errors)),
        "p90_px": float(np.percentile(errors, 90)),
        "max_px": float(errors.max()),
        "fallbacks": sum(i.fallback for i in infos),
        "weak": sum(i.quality == "weak" for i in infos),
        "pairs_per_s": len(errors) / seconds,
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| size | degrade | configuration | pairs | mean px | median px | p90 px | max px "
        "| fallbacks | weak | pairs/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        # The identity row is the reference error of doing nothing; its speed means nothing.
        speed = "-" if r["config"] == "identity" else f"{r['pairs_per_s']:.1f}"
        lines.append(
            f"| {r['size']} | {r['degrade']} | {r['config']} | {r['pairs']} "
            f"| {r['mean_px']:.3f} | {r['median_px']:.3f} | {r['p90_px']:.3f} "
            f"| {r['max_px']:.2f} | {r['fallbacks']} | {r['weak']} | {speed} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--clips", type=int, default=8, help="synthetic clips per size")
    parser.add_argument("--frames", type=int, default=31, help="frames per synthetic clip")
    parser.add_argument("--degrade", type=float, nargs="+", default=[1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", help="use this dataset's frames instead of synthetic ones")
    parser.add_argument("--split", default="val", help="split of --root")
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGS), help="configurations")
    parser.add_argument("--no-stream", action="store_true", help="skip the stream row")
    parser.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    setup_logging()
    # Fallbacks are counted in the table; their rate-limited warnings would only interleave.
    logging.getLogger("vidseg.geometry.registration").setLevel(logging.ERROR)
    cv2.setNumThreads(args.threads)
    names = args.only or list(CONFIGS)
    if args.root is None:
        sources = [
            (f"{d:g}", partial(synthetic_clips, size, args.clips, args.frames, d, args.seed))
            for size in args.sizes
            for d in args.degrade
        ]
    else:
        sources = [(f"{args.root}:{args.split}", partial(dataset_clips, args.root, args.split))]
    rows = []
    for degrade, load in sources:
        clips = load()
        shorter = min(clips[0].frames[0].shape[:2])
        for name in names:
            scale = CONFIGS[name].get("scale", 0.5)
            if CONFIGS[name].get("method") != "identity" and scale * shorter < 128:
                log.info("skipping %s at %d px: the scale would be raised to 128 px", name, shorter)
                continue
            row = {**measure(name, CONFIGS[name], clips), "degrade": degrade}
            log.info(
                "%s degrade %s %s: median %.3f px, %.1f pairs/s",
                row["size"],
                degrade,
                name,
                row["median_px"],
                row["pairs_per_s"],
            )
            rows.append(row)
        if not args.no_stream:
            rows.append({**measure_stream(clips), "degrade": degrade})
    print(table(rows))
    report = {
        "machine": cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        # Other processes on the machine slow the timings down: record how busy it was.
        "load_average_at_end": os.getloadavg(),
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "settings": vars(args),
        "results": rows,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "results"}))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
