"""Run directories and checkpoints (layout fixed in contracts.md).

A run directory holds ``config.yaml`` (fully resolved), ``model.safetensors`` (the latest
weights), ``state.pt`` (optimizer, scheduler, position in training, seed), ``metrics.jsonl`` and,
once validated, ``best.safetensors`` with ``best.json``. Every file is written to a temporary
name and renamed, so a killed run never leaves a half-written file. ``model.safetensors`` and
``state.pt`` both record the step they belong to; resuming checks that they agree.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from vidseg.errors import ConfigError
from vidseg.utils.io import atomic_write, write_bytes

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"
BEST_FILE = "best.safetensors"
BEST_INFO_FILE = "best.json"
STATE_FORMAT = 1


def create_run_dir(out_dir: str | os.PathLike[str], name: str) -> Path:
    """Create and return a new ``out_dir/<name>-<YYYYmmdd-HHMMSS>[-k]`` directory.

    The directory is created exclusively, so two runs started in the same second get
    different directories (``-2``, ``-3``, ...) instead of sharing one.
    """
    base = Path(out_dir)
    base.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for k in range(1, 10_000):
        path = base / (stem if k == 1 else f"{stem}-{k}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise ConfigError(f"could not create a new run directory under {base} (too many named {stem})")


def save_weights(
    path: str | os.PathLike[str], state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]
) -> None:
    """Write a state dict as safetensors atomically; ``metadata`` values are stored as JSON."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    write_bytes(path, save_safetensors_bytes(tensors, metadata=meta))


def load_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file written by :func:`save_weights`: (state dict, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {path} does not exist")
    data = path.read_bytes()
    try:
        tensors = load_safetensors_bytes(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a readable safetensors file ({exc})") from None
    meta = {k: json.loads(v) for k, v in header.get("__metadata__", {}).items()}
    return tensors, meta


def save_state(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write the training state atomically with ``torch.save``."""
    buffer = io.BytesIO()
    torch.save({"format": STATE_FORMAT, **state}, buffer)
    write_bytes(path, buffer.getvalue())


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training state written by :func:`save_state` (tensors on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: the run has not saved a checkpoint yet")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt pickles
        raise ConfigError(f"{path} is not a readable training state ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ConfigError(f"{path} is not a vidseg training state (format {STATE_FORMAT})")
    return state


@dataclass(frozen=True)
class ResumePoint:
    """What ``--resume`` continues from."""

    run_dir: Path
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]


def check_run_dir(run_dir: str | os.PathLike[str]) -> Path:
    """``run_dir`` as a Path, or a ConfigError when it is not a run directory."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"run directory {path} does not exist")
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"{path} is not a run directory: it has no {CONFIG_FILE}")
    return path


def load_resume_point(run_dir: str | os.PathLike[str]) -> ResumePoint:
    """The latest consistent checkpoint of ``run_dir``."""
    path = check_run_dir(run_dir)
    state = load_state(path / STATE_FILE)
    weights, meta = load_weights(path / MODEL_FILE)
    if meta.get("step") != state["step"]:
        raise ConfigError(
            f"{path}: {MODEL_FILE} is from step {meta.get('step')} but {STATE_FILE} from step "
            f"{state['step']} (the run was killed between the two writes); resume is not exact"
        )
    return ResumePoint(path, weights, state)


def truncate_metrics(path: str | os.PathLike[str], last_step: int) -> None:
    """Drop ``metrics.jsonl`` records logged after ``last_step`` (by a run killed later)."""
    path = Path(path)
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if record.get("step", 0) <= last_step:
            keep.append(line)
    with atomic_write(path, "w") as handle:
        handle.write("".join(line + "\n" for line in keep))


def load_run_model(run_dir: str | os.PathLike[str], weights: str = "last") -> tuple[Any, Any]:
    """The trained model of ``run_dir`` (eval mode, CPU) and its :class:`TrainConfig`: a
    :class:`~vidseg.models.Segmenter`, or the video model of the config's ``video`` section.

    ``weights`` is ``last`` (``model.safetensors``) or ``best`` (``best.safetensors``).
    """
    from vidseg.config import load_config
    from vidseg.data import read_dataset_info
    from vidseg.models import build_model
    from vidseg.training.config import TrainConfig

    path = check_run_dir(run_dir)
    files = {"last": MODEL_FILE, "best": BEST_FILE}
    if weights not in files:
        raise ConfigError(f"weights must be 'last' or 'best', got '{weights}'")
    weights_path = path / files[weights]
    if not weights_path.is_file():
        raise ConfigError(f"{weights_path} does not exist (the run saved no {weights} weights yet)")
    cfg = load_config(TrainConfig, path / CONFIG_FILE)
    state, meta = load_weights(weights_path)
    num_classes = meta.get("num_classes")
    if num_classes is None:
        num_classes = read_dataset_info(cfg.data.root).num_classes
    model = build_model(cfg.model, cfg.video, int(num_classes))
    load_state_dict_strict(model, state, weights_path)
    return model.eval(), cfg


def load_state_dict_strict(model: Any, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``weights`` into ``model``; any missing, unexpected or reshaped key is a ConfigError."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        from vidseg.models.backbones.base import format_keys

        parts = []
        if missing:
            parts.append(f"missing {format_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected {format_keys(unexpected)}")
        raise ConfigError(f"{path} does not match the configured model: {'; '.join(parts)}")
    for key, value in weights.items():
        if value.shape != expected[key].shape:
            raise ConfigError(
                f"{path}: '{key}' has shape {tuple(value.shape)}, the model expects "
                f"{tuple(expected[key].shape)}"
            )
    model.load_state_dict(weights)


def load_image_weights(segmenter: Any, source: str | os.PathLike[str]) -> Path:
    """Load an image model's weights into ``segmenter`` strictly; returns the file read.

    ``source`` is a run directory (its ``model.safetensors``; an image run, or a video run whose
    ``segmenter.*`` weights are taken) or a ``.safetensors`` file.
    """
    path = Path(source)
    if path.is_dir():
        path = check_run_dir(path) / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"video.image_weights: {path} does not exist")
    state, _ = load_weights(path)
    prefix = "segmenter."
    if state and all(k.startswith(prefix) or not k.startswith("backbone.") for k in state):
        nested = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if nested:
            state = nested
    load_state_dict_strict(segmenter, state, path)
    return path
