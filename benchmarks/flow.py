"""Speed and accuracy of the flow estimators on the synthetic world.

For every consecutive pair (n, n-1) of the chosen split, computes the flow from frame n to frame
n-1 with each estimator and compares it with the ground-truth flow: mean end-point error over the
pixels whose ground truth is valid (visible in both frames), and over all pixels. Time is wall
time per pair of the NumPy call (grey conversion and resizing included), one process.

    vidseg data synth --out data/flowbench --clips 4 --val-clips 0 --test-clips 0 --frames 30
    python benchmarks/flow.py data/flowbench
    python benchmarks/flow.py data/flowbench-512 --estimators dis:medium raft_small:random

An estimator is ``name[:option=value,...]`` (``dis:preset=fast``, ``farneback``,
``raft:weights=random,iters=12``); ``dis:medium`` is short for ``dis:preset=medium``. RAFT with
random weights measures speed only: its error is meaningless and reported as such.
Results measured with this script are in docs/benchmarks.md and docs/motion.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time

import cv2
import numpy as np
import torch
import yaml

from vidseg.data import open_dataset
from vidseg.flow import build, endpoint_error
from vidseg.utils.console import setup_logging, track

log = logging.getLogger("vidseg.benchmarks.flow")

DEFAULT = [
    "dis:preset=ultrafast",
    "dis:preset=fast",
    "dis:preset=medium",
    "dis:preset=medium,scale=0.5",
    "farneback",
    "raft_small:weights=random,iters=12",
    "raft:weights=random,iters=12",
]


def parse_spec(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    options: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            key, value = "preset", key
        options[key] = yaml.safe_load(value)
    return name, options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="a clip-folder dataset with ground-truth flow")
    parser.add_argument("--split", default="train")
    parser.add_argument("--estimators", nargs="+", default=DEFAULT)
    parser.add_argument("--max-pairs", type=int, default=0, help="0 = every pair")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    setup_logging()

    clips = open_dataset(args.root, args.split)
    pairs = [(clip, n) for clip in clips for n in clip.frames if clip.flow(n) is not None]
    if args.max_pairs:
        pairs = pairs[: args.max_pairs]
    frames = {(clip.id, m): clip.image(m) for clip, n in pairs for m in (n, n - 1)}
    truth = [(clip.flow(n), clip.flow_valid(n)) for clip, n in pairs]
    height, width = pairs[0][0].size
    results = []
    for spec in args.estimators:
        name, options = parse_spec(spec)
        est = build(name, **options)
        random_weights = options.get("weights") == "random"
        est(frames[pairs[0][0].id, pairs[0][1]], frames[pairs[0][0].id, pairs[0][1] - 1])
        times, valid_epe, all_epe = [], [], []
        for (clip, n), (gt, valid) in zip(track(pairs, spec), truth, strict=True):
            start = time.perf_counter()
            flow = est(frames[clip.id, n], frames[clip.id, n - 1])
            times.append(time.perf_counter() - start)
            valid_epe.append(endpoint_error(flow, gt, valid))
            all_epe.append(endpoint_error(flow, gt))
        row = {
            "estimator": spec,
            "ms_per_pair": 1000 * float(np.median(times)),
            "pairs_per_s": 1 / float(np.median(times)),
            "epe_valid_median": None if random_weights else float(np.median(valid_epe)),
            "epe_valid_mean": None if random_weights else float(np.mean(valid_epe)),
            "epe_all_mean": None if random_weights else float(np.mean(all_epe)),
        }
        results.append(row)
        log.info("%s: %s", spec, row)

    report = {
        "dataset": str(args.root),
        "split": args.split,
        "size": [height, width],
        "pairs": len(pairs),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "results": results,
    }
    lines = [
        f"{len(pairs)} pairs at {height}x{width}; EPE in px over valid pixels (median and mean "
        "over pairs) and over all pixels",
        "",
        "| estimator | ms/pair | pairs/s | EPE valid median | EPE valid mean | EPE all mean |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        epe = (
            ["n/a (random weights)"] * 3
            if r["epe_valid_median"] is None
            else [f"{r[k]:.3f}" for k in ("epe_valid_median", "epe_valid_mean", "epe_all_mean")]
        )
        lines.append(
            f"| {r['estimator']} | {r['ms_per_pair']:.1f} | {r['pairs_per_s']:.3g} | "
            + " | ".join(epe)
            + " |"
        )
    # The table is this script's output: plain stdout, not wrapped by the log handler.
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
