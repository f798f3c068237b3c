"""Joint augmentations of a video sample: every frame, label, homography and flow moves together.

Every geometric op is an affine map ``A`` (3x3) of pixel coordinates in the contract's convention
((0, 0) is the centre of the top-left pixel), shared by all frames of the sample:

- horizontal flip of a width-W frame: ``x' = W - 1 - x``;
- crop at (top, left): ``x' = x - left``, ``y' = y - top``;
- resize by ``s = new / old`` per axis: ``x' = s x + (s - 1) / 2`` (pixel edges stay edges).

Images are flipped and cropped exactly by slicing and resized with ``cv2.resize`` (INTER_AREA when
shrinking, bilinear otherwise: INTER_LINEAR_EXACT for uint8 frames, INTER_LINEAR for float flows;
all centre-aligned). Labels are resized with
INTER_NEAREST_EXACT: plain INTER_NEAREST samples ``floor(x' / s)`` and is shifted by up to half a
source pixel. A homography ``H`` (frame i -> frame i+1) becomes ``A H A^-1``; a flow field becomes
``f'(p') = A_lin f(A^-1 p')``: it is resampled like an image and its vectors multiplied by the
linear part of ``A`` (so a flip negates dx and a resize scales dx, dy).

A transform is a callable ``t(sample, rng) -> sample``; all randomness comes from ``rng``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from vidseg.geometry.homography import conjugate_homography

__all__ = [
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "RandomHorizontalFlip",
    "RandomScaleCrop",
    "Resize",
    "Transform",
    "VideoSample",
    "crop",
    "crop_matrix",
    "flip_matrix",
    "hflip",
    "resize",
    "resize_matrix",
]


@dataclass
class VideoSample:
    """T frames of one clip, oldest first, with what belongs to them.

    - ``frames``: T arrays HxWx3 uint8 RGB; ``labels``: T arrays HxW uint8 or None;
    - ``homographies``: T-1 (3, 3) float64 or None, entry i maps frames[i] to frames[i+1];
    - ``flows``: T-1 (H, W, 2) float32 or None, entry i is the flow frames[i+1] -> frames[i];
    - ``affine``: the (3, 3) map from the original pixel coordinates to the current ones, the
      product of every geometric op applied so far (identity for a freshly loaded sample).
    """

    frames: list[np.ndarray]
    labels: list[np.ndarray | None]
    homographies: list[np.ndarray | None]
    flows: list[np.ndarray | None]
    clip_id: str = ""
    frame_numbers: tuple[int, ...] = ()
    affine: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        t = len(self.frames)
        if t == 0:
            raise ValueError("a VideoSample needs at least one frame")
        if len(self.labels) != t:
            raise ValueError(f"{t} frames but {len(self.labels)} labels")
        if len(self.homographies) != t - 1 or len(self.flows) != t - 1:
            raise ValueError(
                f"{t} frames need {t - 1} homographies and flows, got "
                f"{len(self.homographies)} and {len(self.flows)}"
            )
        if self.frame_numbers and len(self.frame_numbers) != t:
            raise ValueError(f"{t} frames but {len(self.frame_numbers)} frame numbers")
        size = self.frames[0].shape[:2]
        for i, frame in enumerate(self.frames):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(
                    f"frame {i}: expected HxWx3 uint8, got {frame.shape} {frame.dtype}"
                )
            if frame.shape[:2] != size:
                raise ValueError(f"frame {i} is {frame.shape[:2]}, frame 0 is {size}")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the frames."""
        h, w = self.frames[0].shape[:2]
        return h, w


Transform = Callable[[VideoSample, np.random.Generator], VideoSample]


# -- affine maps -------------------------------------------------------------------------------


def flip_matrix(width: int) -> np.ndarray:
    """A of a horizontal flip of a ``width``-pixel-wide frame: x -> width - 1 - x."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def crop_matrix(top: int, left: int) -> np.ndarray:
    """A of a crop whose top-left pixel is (left, top) of the input: p -> p - (left, top)."""
    return np.array([[1.0, 0.0, -float(left)], [0.0, 1.0, -float(top)], [0.0, 0.0, 1.0]])


def resize_matrix(src_size: tuple[int, int], dst_size: tuple[int, int]) -> np.ndarray:
    """A of a resize from (H, W) ``src_size`` to ``dst_size``: x -> s x + (s - 1) / 2 per axis."""
    sy = dst_size[0] / src_size[0]
    sx = dst_size[1] / src_size[1]
    return np.array([[sx, 0.0, (sx - 1.0) / 2.0], [0.0, sy, (sy - 1.0) / 2.0], [0.0, 0.0, 1.0]])


def _apply_geometry(
    sample: VideoSample,
    a: np.ndarray,
    image_op: Callable[[np.ndarray], np.ndarray],
    label_op: Callable[[np.ndarray], np.ndarray],
) -> VideoSample:
    """Apply one affine map ``a`` whose resampling of images/labels is ``image_op``/``label_op``."""
    lin = a[:2, :2].T.astype(np.float32)
    return replace(
        sample,
        frames=[image_op(f) for f in sample.frames],
        labels=[None if lab is None else label_op(lab) for lab in sample.labels],
        homographies=[
            None if h is None else conjugate_homography(h, a) for h in sample.homographies
        ],
        # Vectors are row-stacked in the last axis, so f' = f @ A_lin^T.
        flows=[None if f is None else image_op(f) @ lin for f in sample.flows],
        affine=a @ sample.affine,
    )


def hflip(sample: VideoSample) -> VideoSample:
    """Flip every frame, label and flow left-right; exact (slicing)."""

    def flip(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[:, ::-1])

    return _apply_geometry(sample, flip_matrix(sample.size[1]), flip, flip)


def crop(sample: VideoSample, top: int, left: int, height: int, width: int) -> VideoSample:
    """Crop the window of ``height`` x ``width`` pixels whose top-left pixel is (left, top)."""
    h, w = sample.size
    if top < 0 or left < 0 or height <= 0 or width <= 0:
        raise ValueError(f"invalid crop: top={top}, left={left}, size {height}x{width}")
    if top + height > h or left + width > w:
        raise ValueError(
            f"crop {height}x{width} at (top={top}, left={left}) exceeds the {h}x{w} frames"
        )

    def cut(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[top : top + height, left : left + width])

    return _apply_geometry(sample, crop_matrix(top, left), cut, cut)


def resize(sample: VideoSample, size: tuple[int, int]) -> VideoSample:
    """Resize to (H, W) ``size``: images and flows INTER_AREA when shrinking, else bilinear
    (INTER_LINEAR_EXACT for uint8, INTER_LINEAR for float); labels INTER_NEAREST_EXACT."""
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"invalid resize target {size}")
    if (h, w) == sample.size:
        return sample
    src_h, src_w = sample.size
    shrink = h <= src_h and w <= src_w

    def resample(x: np.ndarray) -> np.ndarray:
        if shrink:
            interp = cv2.INTER_AREA
        else:
            # The uint8 INTER_LINEAR fast path rounds coarsely (errors up to 0.7 grey levels and
            # a bias); the bit-exact variant computes the same bilinear weights, rounded once.
            interp = cv2.INTER_LINEAR_EXACT if x.dtype == np.uint8 else cv2.INTER_LINEAR
        return cv2.resize(x, (w, h), interpolation=interp)

    def nearest(x: np.ndarray) -> np.ndarray:
        return cv2.resize(x, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)

    return _apply_geometry(sample, resize_matrix(sample.size, (h, w)), resample, nearest)


# -- transforms --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order, all drawing from the same generator."""

    transforms: Sequence[Transform]

    def __call__(self, sample: VideoSample, rng: np.random.Generator) -> VideoSample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample


def _check_probability(p: float, name: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: p must be in [0, 1], got {p}")


def _check_size(size: tuple[int, int], name: str) -> tuple[int, int]:
    if len(size) != 2 or any(int(v) != v or v <= 0 for v in size):
        raise ValueError(f"{name}: size must be two positive integers (H, W), got {size!r}")
    return int(size[0]), int(size[1])


@dataclass(frozen=True)
class RandomHorizontalFlip:
    """Flip the whole sample left-right with probability ``p``."""

    p: float = 0.5

    def __post_init__(self) -> None:
        _check_probability(self.p, "RandomHorizontalFlip")

    def __call__(self, sample: VideoSample, rng: np.random.Generator) -> VideoSample:
        return hflip(sample) if rng.random() < self.p else sample


@dataclass(frozen=True)
class RandomScaleCrop:
    """Scale by a random factor, then take a random ``crop_size`` (H, W) window.

    With probability ``p`` the factor is drawn uniformly from ``scale_range``, else it is 1. It
    is then raised to the smallest factor at which the crop fits, so no padding is ever needed
    and the output is always ``crop_size``. The two axes are resized to whole pixel counts
    (``round(H s)``, ``round(W s)``), and ``A`` uses those exact per-axis factors.
    """

    crop_size: tuple[int, int]
    scale_range: tuple[float, float] = (1.0, 1.0)
    p: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_size", _check_size(self.crop_size, "RandomScaleCrop"))
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(
                f"RandomScaleCrop: scale_range must satisfy 0 < min <= max, got {self.scale_range}"
            )
        _check_probability(self.p, "RandomScaleCrop")

    def __call__(self, sample: VideoSample, rng: np.random.Generator) -> VideoSample:
        h, w = sample.size
        ch, cw = self.crop_size
        lo, hi = self.scale_range
        scale = rng.uniform(lo, hi) if rng.random() < self.p else 1.0
        scale = max(scale, ch / h, cw / w)
        new_h, new_w = max(ch, round(h * scale)), max(cw, round(w * scale))
        sample = resize(sample, (new_h, new_w))
        top = int(rng.integers(0, new_h - ch + 1))
        left = int(rng.integers(0, new_w - cw + 1))
        return crop(sample, top, left, ch, cw)


@dataclass(frozen=True)
class Resize:
    """Resize every frame to ``size`` (H, W) (evaluation)."""

    size: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _check_size(self.size, "Resize"))

    def __call__(self, sample: VideoSample, rng: np.random.Generator) -> VideoSample:
        return resize(sample, self.size)


@dataclass(frozen=True)
class CenterCrop:
    """Crop the central ``size`` (H, W) window (evaluation); the top-left offset rounds down."""

    size: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _check_size(self.size, "CenterCrop"))

    def __call__(self, sample: VideoSample, rng: np.random.Generator) -> VideoSample:
        h, w = sample.size
        ch, cw = self.size
        if ch > h or cw > w:
            raise ValueError(
                f"CenterCrop{self.size} is larger than the {h}x{w} frames of clip "
                f"'{sample.clip_id}'"
            )
        return crop(sample, (h - ch) // 2, (w - cw) // 2, ch, cw)


def _factor_range(value: float | tuple[float, float], name: str) -> tuple[float, float]:
    """A jitter strength v (-> [max(0, 1 - v), 1 + v]) or an explicit (min, max) factor range."""
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"ColorJitter: {name} must be >= 0, got {value}")
        return max(0.0, 1.0 - value), 1.0 + value
    lo, hi = value
    if not 0 <= lo <= hi:
        raise ValueError(f"ColorJitter: {name} range must satisfy 0 <= min <= max, got {value}")
    return float(lo), float(hi)


_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class ColorJitter:
    """Random photometric change of the uint8 frames (labels, flows and geometry untouched).

    Applied with probability ``p`` per sample, in this fixed order, on values scaled to [0, 1]
    and clipped after each step: brightness ``x * b``; contrast ``m + c (x - m)`` with ``m`` the
    frame's mean grey level; saturation ``g + s (x - g)`` with ``g`` the pixel's grey level; hue
    rotation by ``h`` of the full circle; gamma ``x ** g``. ``brightness``, ``contrast``,
    ``saturation`` and ``gamma`` take a strength v (factor in [max(0, 1 - v), 1 + v]) or a
    (min, max) range; ``hue`` takes v in [0, 0.5] (shift in [-v, v]). With
    ``same_for_all_frames`` one set of factors is drawn per sample (as SSP does), else per frame.
    """

    brightness: float | tuple[float, float] = 0.0
    contrast: float | tuple[float, float] = 0.0
    saturation: float | tuple[float, float] = 0.0
    hue: float = 0.0
    gamma: float | tuple[float, float] = 0.0
    p: float = 1.0
    same_for_all_frames: bool = True

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation", "gamma"):
            _factor_range(getattr(self, name), name)
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"ColorJitter: hue must be in [0, 0.5], got {self.hue}")
        lo_gamma = _factor_range(self.gamma, "gamma")[0]
        if lo_gamma <= 0:
            raise ValueError(f"ColorJitter: gamma factors must be > 0, got {self.gamma}")
        _check_probability(self.p, "ColorJitter")

    def _draw(self, rng: np.random.Generator) -> dict[str, float]:
        """The factors of one application; ops configured as identity draw nothing."""
        params = {}
        for name in ("brightness", "contrast", "saturation", "gamma"):
            lo, hi = _factor_range(getattr(self, name), name)
            if (lo, hi) != (1.0, 1.0):
                params[name] = float(rng.uniform(lo, hi))
        if self.hue > 0:
            params["hue"] = float(rng.uniform(-self.hue, self.hue))
        return params

    def __call__(self, sample: VideoSample, rng: np.random.Generator) -> VideoSample:
        if not rng.random() < self.p:
            return sample
        shared = self._draw(rng) if self.same_for_all_frames else None
        frames = [
            _jitter(f, shared if shared is not None else self._draw(rng)) for f in sample.frames
        ]
        return replace(sample, frames=frames)


def _jitter(frame: np.ndarray, params: dict[str, float]) -> np.ndarray:
    if not params:
        return frame
    x = frame.astype(np.float32) * np.float32(1 / 255)
    if "brightness" in params:
        x = np.clip(x * params["brightness"], 0, 1)
    if "contrast" in params:
        mean = float((x @ _GRAY_WEIGHTS).mean())
        x = np.clip(mean + params["contrast"] * (x - mean), 0, 1)
    if "saturation" in params:
        gray = (x @ _GRAY_WEIGHTS)[..., None]
        x = np.clip(gray + params["saturation"] * (x - gray), 0, 1)
    if "hue" in params:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # float input: H in degrees [0, 360)
        hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * params["hue"], 360.0)
        x = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0, 1)
    if "gamma" in params:
        x = x ** params["gamma"]
    return np.rint(x * 255).astype(np.uint8)
