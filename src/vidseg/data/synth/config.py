"""Settings of the synthetic aerial video generator: one typed dataclass, also the CLI options."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, replace
from typing import Any

from vidseg.errors import ConfigError


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a synthetic dataset: equal settings give identical files."""

    clips: int = _opt(6, "total number of clips (val and test clips included)")
    frames: int = _opt(60, "frames per clip")
    size: tuple[int, int] = _opt((256, 256), "frame size: one number or height,width")
    label_every: int = _opt(
        10,
        "train split: label one frame in every N (the last of each block of N, so every "
        "labelled frame has N-1 unlabelled predecessors); 1 labels every frame",
    )
    eval_label_every: int = _opt(
        1, "the same for the val and test splits (temporal metrics want 1)"
    )
    val_clips: int = _opt(1, "clips in the val split")
    test_clips: int = _opt(1, "clips in the test split")
    seed: int = _opt(0, "random seed; a clip depends only on the seed, its split and its index")
    fps: float = _opt(
        15.0, "nominal frame rate: sets object speeds per frame, written to dataset.yaml"
    )
    degrade: float = _opt(
        1.0,
        "strength of the per-frame degradations (exposure and white-balance drift, noise, "
        "motion blur, compression, cloud shadows); 0 renders clean frames",
    )
    motion: float = _opt(1.0, "scale of the camera motion per frame (0.5 = half as fast)")
    image_format: str = _opt(
        "png", "frame file format: png (lossless) or jpg (quality 95)", choices=("png", "jpg")
    )
    flow: bool = _opt(
        True, "write ground-truth backward flow flow/<n>.npy (float16) and flow_valid/<n>.png"
    )
    workers: int = _opt(1, "processes generating clips in parallel (output does not depend on it)")

    def __post_init__(self) -> None:
        positive = ("clips", "frames", "label_every", "eval_label_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("val_clips", "test_clips"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.val_clips + self.test_clips >= self.clips:
            raise ConfigError(
                f"clips={self.clips} leaves no train clip after val_clips={self.val_clips} "
                f"and test_clips={self.test_clips}"
            )
        h, w = self.size
        if min(h, w) < 32 or max(h, w) > 4096:
            raise ConfigError(f"size must be between 32 and 4096 pixels per side, got {h},{w}")
        if self.frames < 2:
            raise ConfigError(f"frames must be at least 2 (a video), got {self.frames}")
        if not self.fps > 0:
            raise ConfigError(f"fps must be positive, got {self.fps}")
        if not 0 <= self.degrade <= 3:
            raise ConfigError(f"degrade must be in [0, 3], got {self.degrade}")
        if not 0 <= self.motion <= 4:
            raise ConfigError(f"motion must be in [0, 4], got {self.motion}")
        if self.image_format not in ("png", "jpg"):
            raise ConfigError(f"image_format must be png or jpg, got {self.image_format!r}")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")

    @property
    def train_clips(self) -> int:
        return self.clips - self.val_clips - self.test_clips

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.train_clips, "val": self.val_clips, "test": self.test_clips}

    def to_dict(self) -> dict:
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in fields(self)
        }


def parse_size(value: int | str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``256`` or ``"256"`` -> (256, 256); ``"192,256"`` or ``(192, 256)`` -> (height, width)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, tuple | list) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    if isinstance(value, str):
        parts = value.split(",")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            nums = []
        if len(nums) == 1:
            return (nums[0], nums[0])
        if len(nums) == 2:
            return (nums[0], nums[1])
    raise ConfigError(f"size must be one integer or height,width, got {value!r}")


def make_config(**options: Any) -> SynthConfig:
    """Build a :class:`SynthConfig` from option values, e.g. read from YAML or a caller.

    An unknown option name is an error that suggests the closest valid one; a value of the wrong
    type (``frames: "60"``) is an error naming the option.
    """
    defaults = SynthConfig()
    valid = sorted(f.name for f in fields(SynthConfig))
    values = {}
    for name, value in options.items():
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown synthesis option {name!r}{hint}")
        values[name] = _check_type(name, value, getattr(defaults, name))
    return replace(defaults, **values)


def _check_type(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, tuple):
        return parse_size(value)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        kind = "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        kind = "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        kind = "a number"
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
        kind = "a string"
    if not ok:
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    return value
