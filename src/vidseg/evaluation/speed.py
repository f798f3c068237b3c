"""Per-frame latency of a model, measured the same way for every method."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any

import torch
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    size: tuple[int, int],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 3,
    runs: int = 20,
) -> dict[str, Any]:
    """Wall time of ``model`` on one uint8 (1, 3, H, W) frame, after ``warmup`` untimed calls.

    Returns milliseconds (median, mean, min over ``runs``), frames per second from the median,
    and the settings (device, threads, machine) needed to compare numbers.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    frame = torch.randint(0, 256, (1, 3, *size), dtype=torch.uint8, device=device)
    for _ in range(warmup):
        model(frame)
    _sync(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model(frame)
        _sync(device)
        times.append(1000 * (time.perf_counter() - start))
    model.train(was_training)
    median = statistics.median(times)
    return {
        "ms_median": round(median, 3),
        "ms_mean": round(statistics.fmean(times), 3),
        "ms_min": round(min(times), 3),
        "fps": round(1000 / median, 2),
        "input": [1, 3, *size],
        "runs": runs,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
