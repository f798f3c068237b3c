"""Cost of a model in the streaming setting: parameters, FLOPs, latency, memory (``vidseg bench``).

Every model runs through ``init_state`` / ``step`` at batch size 1 on a synthetic aerial clip (real
camera motion, so video methods do the work they do on video). Conventions:

- GFLOPs per frame are counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions,
  matrix products and attention, a multiply-add counting 2 FLOPs (a bias-free 3x3 Conv2d from 3 to
  8 channels on 16x16 is 2*3*8*9*16*16); element-wise ops, normalisation, pooling and
  interpolation are not counted, nor is work outside the torch graph (see
  :mod:`vidseg.utils.profiling`). The steady-state count is one ``step`` after a first frame has
  primed the state; the first frame's count is reported beside it.
- Latency is the wall time of one ``step`` with the frame already on the device, in milliseconds,
  after untimed warm-up frames of the same clip: ``time.perf_counter`` on the CPU, CUDA events
  with a synchronisation per frame on a GPU. It includes the work outside the graph, which is
  also reported on its own per name (ms per frame).
- Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the whole stream minus what was
  allocated before it (weights, inputs); on the CPU, the growth of the process's peak resident
  set size (``getrusage``) during the run, which is 0 when an earlier entry already needed as much.
"""

from __future__ import annotations

import datetime
import platform
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vidseg.errors import ConfigError
from vidseg.models import VideoModel, as_video_model, count_parameters
from vidseg.utils.console import track
from vidseg.utils.profiling import recording

DEFAULT_NUM_CLASSES = 8
CLIP_FRAMES = 32  # frames rendered; longer runs play the clip back and forth


@dataclass
class BenchResult:
    """One model's measurements (units in the field names; ``*_ratio`` fields relative to the
    first entry of a comparison, filled by :func:`add_ratios`; FLOPs per frame)."""

    params: int
    flops: int
    first_frame_flops: int
    ms_median: float
    ms_p90: float
    ms_mean: float
    fps: float
    peak_memory_mb: float | None
    memory_measure: str
    external_ms: dict[str, float] = field(default_factory=dict)
    latency_ratio: float | None = None
    flops_ratio: float | None = None

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def first_frame_gflops(self) -> float:
        return self.first_frame_flops / 1e9

    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``gflops`` and ``first_frame_gflops``."""
        return {
            **asdict(self),
            "gflops": round(self.gflops, 4),
            "first_frame_gflops": round(self.first_frame_gflops, 4),
        }


def load_bench_model(
    entry: str | Path, overrides: Sequence[str] = (), num_classes: int | None = None
) -> tuple[VideoModel, str]:
    """The model of ``entry`` on the streaming interface (eval mode, CPU) and a description.

    ``entry`` is a run directory (its config and ``model.safetensors``; ``overrides`` and
    ``num_classes`` do not apply) or a training config YAML (random initialisation, with the
    ``key=value`` overrides; classes from ``num_classes``, else the config's ``dataset.yaml``,
    else 8). A missing path or an invalid config is a :class:`~vidseg.errors.ConfigError`.
    """
    from vidseg.config import load_config
    from vidseg.data import read_dataset_info
    from vidseg.models import build_model
    from vidseg.training.checkpoint import load_run_model
    from vidseg.training.config import TrainConfig

    path = Path(entry)
    if path.is_dir():
        model, cfg = load_run_model(path, "last")
        return as_video_model(model), f"{_describe(cfg)}, trained run"
    if not path.is_file():
        raise ConfigError(f"{path}: no such run directory or config file")
    cfg = load_config(TrainConfig, path, overrides)
    if num_classes is None:
        dataset_file = Path(cfg.data.root) / "dataset.yaml"
        num_classes = (
            read_dataset_info(cfg.data.root).num_classes
            if dataset_file.is_file()
            else DEFAULT_NUM_CLASSES
        )
    model = build_model(cfg.model, cfg.video, num_classes)
    return as_video_model(model.eval()), f"{_describe(cfg)}, random init"


def _describe(cfg: Any) -> str:
    m = cfg.model
    image = f"{m.backbone} + {m.head}-{m.head_channels}"
    if cfg.video.method == "ssp":
        ssp = cfg.video.ssp
        return (
            f"SSP ({ssp.sim_op}, {ssp.registration.get('method', 'orb')}, fuse {ssp.fuse_at}) "
            f"on {image}"
        )
    return image


def synthetic_clip(size: tuple[int, int], frames: int = CLIP_FRAMES) -> list[Tensor]:
    """``frames`` consecutive frames (1, 3, H, W) uint8 of a synthetic aerial clip (train clip 0,
    seed 0, default camera motion and degradations)."""
    from vidseg.data.synth import make_config
    from vidseg.data.synth.generate import iter_clip

    cfg = make_config(frames=frames, size=size)
    return [
        torch.from_numpy(f.image).permute(2, 0, 1).unsqueeze(0).contiguous()
        for f in iter_clip(cfg, "train", 0, with_flow=False)
    ]


def _frame_at(clip: Sequence[Tensor], i: int) -> Tensor:
    """Frame ``i`` of the clip played forwards, backwards, forwards...: motion stays smooth."""
    if len(clip) == 1:
        return clip[0]
    period = 2 * (len(clip) - 1)
    k = i % period
    return clip[k if k < len(clip) else period - k]


def count_flops(model: VideoModel, clip: Sequence[Tensor]) -> tuple[int, int]:
    """(steady-state FLOPs of one ``step`` after a first frame, FLOPs of the first frame)."""
    from torch.utils.flop_counter import FlopCounterMode

    state = model.init_state()
    with FlopCounterMode(display=False) as first:
        _, state = model.step(_frame_at(clip, 0), state)
    with FlopCounterMode(display=False) as steady:
        model.step(_frame_at(clip, 1), state)
    return steady.get_total_flops(), first.get_total_flops()


class _Timer:
    """Per-frame wall time in ms: perf_counter on the CPU, CUDA events on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start_event = torch.cuda.Event(enable_timing=True)
            self.end_event = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.cuda:
            self.start_event.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            self.end_event.record()
            self.end_event.synchronize()
            return self.start_event.elapsed_time(self.end_event)
        return 1000 * (time.perf_counter() - self.t0)


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


@torch.no_grad()
def benchmark(
    model: torch.nn.Module,
    size: tuple[int, int] = (256, 256),
    *,
    frames: int = 50,
    warmup: int = 10,
    device: torch.device | str = "cpu",
    clip: Sequence[Tensor] | None = None,
    description: str = "",
) -> BenchResult:
    """Measure ``model`` (a segmenter or a VideoModel) streaming a clip at batch size 1.

    ``clip``: frames (1, 3, H, W) uint8 or float 0..1 (default: :func:`synthetic_clip` at
    ``size``, which a given clip overrides), played back and forth as long as needed. ``warmup``
    untimed frames, then ``frames`` timed ones, all in one clip (one ``init_state``);
    ``description`` labels the progress bar. See the module docstring for what each number means.
    The model is left in eval mode on ``device``.
    """
    if frames < 1 or warmup < 0:
        raise ConfigError(f"frames must be >= 1 and warmup >= 0, got {frames} and {warmup}")
    device = torch.device(device)
    video = as_video_model(model).to(device).eval()
    if clip is None:
        clip = synthetic_clip(size, min(CLIP_FRAMES, frames + warmup + 1))
    clip = [f.to(device) for f in clip]
    flops, first_flops = count_flops(video, clip)

    timer = _Timer(device)
    cuda = device.type == "cuda"
    base_memory = 0
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base_memory = torch.cuda.memory_allocated(device)
    rss_before = _peak_rss_mb()
    state = video.init_state()
    for i in range(warmup):
        _, state = video.step(_frame_at(clip, i), state)
    if cuda:
        # The first timed frame must not wait for queued warm-up kernels.
        torch.cuda.synchronize(device)
    times: list[float] = []
    label = f"bench {description}".strip()
    with recording() as rec:
        for i in track(range(warmup, warmup + frames), label):
            frame = _frame_at(clip, i)
            timer.start()
            _, state = video.step(frame, state)
            times.append(timer.stop())

    if cuda:
        peak = (torch.cuda.max_memory_allocated(device) - base_memory) / 2**20
        memory_measure = "CUDA max_memory_allocated during the stream, above the weights"
    else:
        peak = _peak_rss_mb() - rss_before
        memory_measure = "growth of the process's peak RSS during the stream (CPU)"
    median = statistics.median(times)
    return BenchResult(
        params=count_parameters(video),
        flops=flops,
        first_frame_flops=first_flops,
        ms_median=round(median, 3),
        ms_p90=round(_percentile(times, 0.9), 3),
        ms_mean=round(statistics.fmean(times), 3),
        fps=round(1000 / median, 2),
        peak_memory_mb=round(peak, 1),
        memory_measure=memory_measure,
        external_ms={k: round(1000 * v / frames, 3) for k, v in sorted(rec.seconds.items())},
    )


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), ``q`` in [0, 1]."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def add_ratios(results: Sequence[BenchResult]) -> None:
    """Fill ``latency_ratio`` (median ms) and ``flops_ratio`` of each result against the first."""
    ref = results[0]
    for res in results:
        res.latency_ratio = round(res.ms_median / ref.ms_median, 3)
        res.flops_ratio = round(res.flops / ref.flops, 3) if ref.flops else None


def environment(device: torch.device | str) -> dict[str, Any]:
    """What a benchmark number depends on besides the model: machine, versions, threads, date."""
    import cv2

    device = torch.device(device)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
