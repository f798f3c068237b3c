"""How hard is the synthetic aerial world for a small per-frame model?

Trains a small U-Net (0.49M parameters) on the labelled train frames of a clip-folder dataset for
a fixed number of steps on the CPU, then runs it frame by frame over the val split and reports
mIoU (union rule), per-class IoU, pixel accuracy and flicker: the share of pixels whose predicted
class changes between consecutive frames along the ground-truth flow, over pixels whose flow is
valid (visible in both frames). Extra ``--eval-root`` datasets (for instance the same clips
rendered with ``--degrade 0``) are scored with the same model.

    vidseg data synth --out data/difficulty --clips 24 --val-clips 2 --test-clips 2
    vidseg data synth --out data/difficulty-clean --clips 24 --val-clips 2 --test-clips 2 \
        --degrade 0
    python benchmarks/synth_difficulty.py data/difficulty --eval-root data/difficulty-clean

Results measured with this script are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidseg.data import (
    ClipSampleDataset,
    Compose,
    RandomHorizontalFlip,
    RandomScaleCrop,
    collate_samples,
    labelled_samples,
    open_dataset,
    worker_init_fn,
)
from vidseg.metrics import ConfusionMeter
from vidseg.utils.console import progress_bar, setup_logging

log = logging.getLogger("vidseg.benchmarks.difficulty")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallUNet(nn.Module):
    """Four-level U-Net with ``width`` channels at full resolution."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.enc = nn.ModuleList(
            [
                conv_block(3, w),
                conv_block(w, 2 * w),
                conv_block(2 * w, 4 * w),
                conv_block(4 * w, 8 * w),
            ]
        )
        self.dec = nn.ModuleList(
            [conv_block(12 * w, 4 * w), conv_block(6 * w, 2 * w), conv_block(3 * w, w)]
        )
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in self.dec:
            x = block(torch.cat([F.interpolate(x, scale_factor=2.0), skips.pop()], 1))
        return self.head(x)


def normalise(frames: torch.Tensor) -> torch.Tensor:
    return (frames.float() / 255 - MEAN) / STD


def train(model: nn.Module, root: str, steps: int, batch: int, crop: int, seed: int) -> float:
    data = open_dataset(root, "train")
    transform = Compose([RandomHorizontalFlip(), RandomScaleCrop((crop, crop), (0.75, 1.5))])
    dataset = ClipSampleDataset(data, labelled_samples(data, num_prev=0), transform, seed=seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        collate_fn=collate_samples,
        num_workers=1,
        drop_last=True,
        persistent_workers=True,
        worker_init_fn=worker_init_fn,
        generator=torch.Generator().manual_seed(seed),
    )
    optimizer = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps)
    model.train()
    step, epoch, start = 0, 0, time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task("training", total=steps)
        while step < steps:
            dataset.set_epoch(epoch)
            epoch += 1
            for item in loader:
                logits = model(normalise(item["frames"][:, 0]))
                loss = F.cross_entropy(logits, item["labels"][:, 0], ignore_index=data.ignore_index)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                progress.update(task, advance=1, description=f"training loss {loss.item():.3f}")
                if step == steps:
                    break
    return time.perf_counter() - start


@torch.no_grad()
def evaluate(model: nn.Module, root: str, split: str) -> dict:
    data = open_dataset(root, split)
    model.eval()
    meter = ConfusionMeter(data.num_classes, data.ignore_index)
    changed = visible = 0
    for clip in data:
        h, w = clip.size
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        previous = None
        for n in clip.frames:
            image = torch.from_numpy(clip.image(n)).permute(2, 0, 1)[None]
            pred = model(normalise(image)).argmax(1)[0].numpy().astype(np.uint8)
            label = clip.label(n)
            if label is not None:
                meter.update(pred, label)
            flow, valid = clip.flow(n), clip.flow_valid(n)
            if previous is not None and flow is not None and valid is not None:
                warped = cv2.remap(
                    previous, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_NEAREST
                )
                changed += int((warped[valid] != pred[valid]).sum())
                visible += int(valid.sum())
            previous = pred
    result = meter.compute()
    names = data.info.class_names
    return {
        "root": root,
        "split": split,
        "miou": result["miou"],
        "pixel_accuracy": result["pixel_accuracy"],
        "per_class_iou": dict(zip(names, result["per_class_iou"], strict=True)),
        "flicker": changed / max(visible, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="training dataset (clip-folder layout)")
    parser.add_argument("--eval-root", action="append", default=[], help="more datasets to score")
    parser.add_argument("--split", default="val")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    setup_logging()
    torch.manual_seed(args.seed)
    model = SmallUNet(len(open_dataset(args.root, "train").info.classes), args.width)
    params = sum(p.numel() for p in model.parameters())
    seconds = train(model, args.root, args.steps, args.batch, args.crop, args.seed)
    results = [evaluate(model, root, args.split) for root in [args.root, *args.eval_root]]
    report = {
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "model": f"SmallUNet width {args.width}, {params} parameters",
        "settings": vars(args),
        "train_seconds": round(seconds, 1),
        "results": results,
    }
    for r in results:
        per_class = ", ".join(
            f"{k} {100 * v:.1f}" for k, v in r["per_class_iou"].items() if v is not None
        )
        log.info(
            "%s (%s): mIoU %.2f, pixel accuracy %.2f, flicker %.2f%%; per class: %s",
            r["root"],
            r["split"],
            100 * r["miou"],
            100 * r["pixel_accuracy"],
            100 * r["flicker"],
            per_class,
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
