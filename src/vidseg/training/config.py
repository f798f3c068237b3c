"""Configuration schema of ``vidseg train``: image models (configs/image/) and the video methods
around them (configs/video/, section ``video``), with knowledge distillation (section ``distill``).

Sizes are ``[H, W]`` in pixels; learning-rate factors are relative to ``optim.lr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vidseg.errors import ConfigError
from vidseg.models.segmenter import ModelConfig
from vidseg.models.ssp import SSPConfig

SCHEDULES = ("cosine", "poly", "constant")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true")
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")
VIDEO_METHODS = ("none", "ssp")
HOMOGRAPHY_SOURCES = ("model", "dataset")
FLOW_SOURCES = ("gt", "dis", "farneback", "raft", "raft_small")
KD_REDUCTIONS = ("batchmean", "pixelmean")


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
class TemporalLossConfig:
    """SSP's temporal consistency loss on the fused output against the flow-warped previous one
    (vidseg.losses.temporal_consistency_loss)."""

    # lambda; 0 turns the loss off (the official SSP value is 0.5, KD-SSP's 135000 with the
    # batchmean KL).
    weight: float = 0.0
    # Flow from the current to the previous frame, without gradient: gt (the dataset's stored
    # flow, transformed with the augmentation), or an estimator run on the augmented frames.
    flow: str = "dis"
    flow_weights: str | None = None  # RAFT checkpoint for flow raft / raft_small
    # The official formulation (signed channel sum in the weight, align-corners nearest warp,
    # out-of-view pixels as zeros); the default corrects these (docs/ssp.md).
    official: bool = False
    # Compare softmax probabilities instead of logits (bounded terms; changes lambda's scale).
    probabilities: bool = False

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"loss.temporal.weight must be >= 0, got {self.weight}")
        _check_choice(self.flow, FLOW_SOURCES, "loss.temporal.flow")


@dataclass
class LossConfig:
    """Cross-entropy over pixels whose label is not the dataset's ignore index, plus the
    temporal consistency term of the video methods."""

    class_weights: list[float] | None = None
    temporal: TemporalLossConfig = field(default_factory=TemporalLossConfig)

    def __post_init__(self) -> None:
        if self.class_weights is not None and min(self.class_weights) < 0:
            raise ConfigError(f"loss.class_weights must be >= 0, got {self.class_weights}")


@dataclass
class VideoConfig:
    """The video method trained around the image model of ``model`` (none: the image model)."""

    method: str = "none"
    ssp: SSPConfig = field(default_factory=SSPConfig)
    # Image model weights to start from: a run directory (its model.safetensors) or a
    # .safetensors file of the image model. null: model.weights only (as for image training).
    image_weights: str | None = None
    # Train only the video method's own layers; the image model stays as loaded (the paper
    # fine-tunes everything).
    freeze_image: bool = False
    # Recurrent steps unrolled in training: frames n-unroll .. n, each fused from the previous
    # fused output as at inference. 1 is the official previous-frame pair.
    unroll: int = 1
    # Homographies of the training frames: model (the method's registration on the raw frames,
    # in the DataLoader workers, then transformed with the augmentation) or dataset (stored
    # ones, e.g. the synthetic ground truth).
    homographies: str = "model"
    # Folder caching the registered homographies (vidseg.geometry.HomographyCache); null: none.
    homography_cache: str | None = None

    def __post_init__(self) -> None:
        _check_choice(self.method, VIDEO_METHODS, "video.method")
        _check_choice(self.homographies, HOMOGRAPHY_SOURCES, "video.homographies")
        if self.unroll < 1:
            raise ConfigError(f"video.unroll must be >= 1, got {self.unroll}")


@dataclass
class DistillConfig:
    """Knowledge distillation from a teacher's exported logits (KD-SSP, the KD image baseline).

    Training then uses every ``every``-th frame window of the train split, labelled or not,
    against the teacher's soft targets instead of the human labels.
    """

    # Folder written by `vidseg export-logits TEACHER_RUN --split train`; null: no distillation.
    logits: str | None = None
    temperature: float = 2.0
    # batchmean: summed over classes and pixels, divided by the batch (the official scale, hence
    # its lambda of 135000); pixelmean: divided by the pixel count as well.
    reduction: str = "batchmean"
    # Weight of the KL of the previous frame's output against its teacher target (video only).
    prev_weight: float = 1.0
    # Average each frame's target with the other frame's through flow where a forward-backward
    # check says the pixel is visible; official reproduces the official check's quirks.
    consistent: bool = True
    official_consistency: bool = False
    flow: str = "dis"
    flow_weights: str | None = None
    # Keep every k-th window of each clip (the official train_skip_frames: 2).
    every: int = 2
    # Weight of the cross-entropy on the human labels of the windows whose last frame has one
    # (0: the teacher alone, as officially).
    label_weight: float = 0.0
    # Weigh each pixel's KL by loss.class_weights of the teacher's class there (officially not).
    class_weighted: bool = False

    def __post_init__(self) -> None:
        _check_choice(self.reduction, KD_REDUCTIONS, "distill.reduction")
        _check_choice(self.flow, FLOW_SOURCES[1:], "distill.flow")
        if self.temperature <= 0:
            raise ConfigError(f"distill.temperature must be positive, got {self.temperature}")
        if self.prev_weight < 0:
            raise ConfigError(f"distill.prev_weight must be >= 0, got {self.prev_weight}")
        if self.every < 1:
            raise ConfigError(f"distill.every must be >= 1, got {self.every}")
        if self.label_weight < 0:
            raise ConfigError(f"distill.label_weight must be >= 0, got {self.label_weight}")


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
    """Everything ``vidseg train`` needs: the image model, the video method around it, data,
    optimisation, losses and the loop."""

    model: ModelConfig = field(default_factory=ModelConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        if self.distill.class_weighted and self.loss.class_weights is None:
            raise ConfigError("distill.class_weighted needs loss.class_weights")
        if self.video.method == "none":
            if self.loss.temporal.weight > 0:
                raise ConfigError(
                    "loss.temporal.weight needs a video method (video.method=ssp): an image "
                    "model has no previous output to be consistent with"
                )
            if self.video.unroll > 1:
                raise ConfigError("video.unroll > 1 needs a video method (video.method=ssp)")
