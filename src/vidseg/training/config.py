"""Configuration schema of ``vidseg train`` for image segmentation models (configs/image/).

Sizes are ``[H, W]`` in pixels; learning-rate factors are relative to ``optim.lr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vidseg.errors import ConfigError
from vidseg.models.segmenter import ModelConfig

SCHEDULES = ("cosine", "poly", "constant")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true")
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")


def _check_size(value: list[int] | None, key: str) -> None:
    if value is not None and (len(value) != 2 or min(value) <= 0):
        raise ConfigError(f"{key} must be [height, width] with positive values, got {value}")


def _check_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got '{value}'")


@dataclass
class DataConfig:
    """Dataset in the clip-folder layout and the image augmentations."""

    root: str = "data/synth"
    train_split: str = "train"
    val_split: str = "val"
    # Every frame is first resized to this size (the official UAVid setting is [736, 1280]).
    resize: list[int] | None = None
    # Random crop after the random scaling; null trains on the whole (resized) frame.
    crop: list[int] | None = None
    scale_range: list[float] = field(default_factory=lambda: [1.0, 1.0])
    scale_p: float = 0.0
    hflip_p: float = 0.5
    color_jitter_p: float = 0.0
    # Validation takes the central window of this size (the official teacher: [1440, 1440]).
    val_crop: list[int] | None = None
    num_workers: int = 2

    def __post_init__(self) -> None:
        for key in ("resize", "crop", "val_crop"):
            _check_size(getattr(self, key), f"data.{key}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(
                f"data.scale_range must be [min, max], 0 < min <= max; got {self.scale_range}"
            )
        for key in ("scale_p", "hflip_p", "color_jitter_p"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"data.{key} must be a probability in [0, 1]")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class OptimConfig:
    """AdamW and the per-iteration warm-up + cosine schedule (defaults: the official SSP values)."""

    lr: float = 2.5e-5
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    # Norm weights, biases and position embeddings get no weight decay.
    decay_norm_and_bias: bool = False
    schedule: str = "cosine"
    warmup_epochs: float = 2.0
    start_lr: float = 1e-4
    final_lr: float = 1e-4
    poly_power: float = 0.9
    # The schedule's horizon in epochs; training may stop earlier (trainer.epochs), as the
    # official runs do (250 scheduled, 200 run). null: equal to trainer.epochs.
    schedule_epochs: int | None = None

    def __post_init__(self) -> None:
        _check_choice(self.schedule, SCHEDULES, "optim.schedule")
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"optim.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas must be two numbers, got {self.betas}")


@dataclass
class LossConfig:
    """Cross-entropy over pixels whose label is not the dataset's ignore index."""

    class_weights: list[float] | None = None

    def __post_init__(self) -> None:
        if self.class_weights is not None and min(self.class_weights) < 0:
            raise ConfigError(f"loss.class_weights must be >= 0, got {self.class_weights}")


@dataclass
class TrainerConfig:
    """Loop, devices, checkpoints and logging."""

    epochs: int = 10
    # Global batch over all devices; each of N devices gets batch_size / N samples.
    batch_size: int = 4
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    precision: str = "32-true"
    grad_clip: float | None = None
    # Batch-norm layers use their running statistics and do not update them (small batches,
    # fine-tuning; also makes a DDP run equal to one process on the combined batch).
    freeze_bn: bool = False
    val_every: int = 1
    # Also save a resumable checkpoint every N steps (0: only after each epoch).
    checkpoint_every: int = 0
    log_every: int = 10
    seed: int = 0
    out_dir: str = "runs"
    # Run directory name prefix (default: the config file's name).
    name: str | None = None
    tensorboard: bool = False

    def __post_init__(self) -> None:
        _check_choice(self.precision, PRECISIONS, "trainer.precision")
        _check_choice(self.accelerator, ACCELERATORS, "trainer.accelerator")
        for key in ("epochs", "batch_size", "devices", "num_nodes", "val_every", "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"trainer.{key} must be >= 1, got {getattr(self, key)}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"trainer.checkpoint_every must be >= 0, got {self.checkpoint_every}")
        world = self.devices * self.num_nodes
        if self.batch_size % world:
            raise ConfigError(
                f"trainer.batch_size {self.batch_size} is not divisible by the {world} processes "
                "(devices x num_nodes)"
            )


@dataclass
class TrainConfig:
    """Everything ``vidseg train`` needs for an image segmentation model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
