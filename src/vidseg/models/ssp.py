"""SSP: Semantic Similarity Propagation (CVPR 2025) around any image segmenter.

For consecutive frames t-1 and t, the previous output is aligned to frame t by a global
homography ``H_{t-1 -> t}`` and blended with the current prediction through a per-pixel
similarity map computed from the aligned previous and the current stride-4 features:

    out_t = sim * warp(out_{t-1}, H) + (1 - sim) * image_model(frame_t)

``sim`` is the weight of the propagated previous prediction. Pixels with no previous frame
behind them (outside the warped previous frame) take the current prediction (sim = 0 there).

Streaming (:meth:`SSP.step`) runs the backbone once per frame: the previous frame's stage-1
features, its fused logits and what registration keeps of it are the state. Training
(:meth:`SSP.forward_pair`) pushes the previous and the current frames through the backbone in one
batched pass, as the official code's two passes do, and returns what the losses need.
Conventions: logits (B, C, H, W) at the frame size; homographies map previous-frame pixel
coordinates to current-frame ones (docs/motion.md).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vidseg.errors import ConfigError
from vidseg.geometry import rescale_homography, sample, stride_matrix
from vidseg.geometry.registration import FrameFeatures, Registrar, make_registration_config
from vidseg.geometry.warp import homography_coords
from vidseg.models.segmenter import Segmenter
from vidseg.models.ssp_ops import build_mixing_op, build_sim_op
from vidseg.models.streaming import VideoModel
from vidseg.utils.images import tensor_to_rgb_uint8
from vidseg.utils.profiling import external

FEATURE_STRIDE = 4
FUSE_AT = ("full", "stride4")


@dataclass
class SSPConfig:
    """Settings of :class:`SSP` (the paper's defaults)."""

    sim_op: str = "conv"
    # Applied to the aligned previous and the current logits before fusion (id: none).
    mixing_op: str = "id"
    mixing_layers: int = 1
    # Attention window of the windowed-attention ops ([t, h, w] for 3D, [h, w] for 2D); null:
    # the op's default.
    window_size: list[int] | None = None
    fuse_at: str = "full"  # full: fuse upsampled logits (the paper); stride4: fuse, then upsample
    features_mode: str = "bilinear"  # sampling of the warped stride-4 features
    logits_mode: str = "bilinear"  # sampling of the warped previous logits
    # Registration settings (vidseg.geometry.RegistrationConfig fields), method orb by default.
    registration: dict[str, Any] = field(default_factory=lambda: {"method": "orb"})
    # Streaming: register the frame pair in a worker thread while the backbone runs (OpenCV and
    # torch both release the GIL). Pays off when the network runs on a GPU or on cores of its
    # own; on a 2-core CPU shared with torch it measured no faster (docs/ssp.md).
    parallel_registration: bool = False
    # The two-pass formulation, for comparison only: re-encode the previous frame at every step
    # (batched with the current one) instead of reusing its cached features, as an
    # implementation of the official training forward at inference would. Same outputs.
    recompute_previous: bool = False

    def __post_init__(self) -> None:
        from vidseg.models.backbones.base import unknown_name_error
        from vidseg.models.ssp_ops import MIXING_OPS, SIM_OPS

        if self.sim_op not in SIM_OPS:
            raise unknown_name_error("similarity op", self.sim_op, list(SIM_OPS), key="ssp.sim_op")
        if self.mixing_op not in MIXING_OPS:
            raise unknown_name_error(
                "mixing op", self.mixing_op, list(MIXING_OPS), key="ssp.mixing_op"
            )
        if self.mixing_layers < 1:
            raise ConfigError(f"ssp.mixing_layers must be >= 1, got {self.mixing_layers}")
        if self.fuse_at not in FUSE_AT:
            raise ConfigError(
                f"ssp.fuse_at must be one of {', '.join(FUSE_AT)}, got '{self.fuse_at}'"
            )
        for key in ("features_mode", "logits_mode"):
            if getattr(self, key) not in ("bilinear", "nearest"):
                raise ConfigError(
                    f"ssp.{key} must be bilinear or nearest, got '{getattr(self, key)}'"
                )


@dataclass
class SSPState:
    """What :meth:`SSP.step` carries from frame to frame."""

    registration: list[FrameFeatures]  # what registration keeps of the previous frames (B)
    features: Tensor  # (B, E, h, w) their stride-4 features (raw, not warped)
    logits: Tensor  # (B, C, H', W') its fused logits (H' x W' = frame or stride-4 size)
    # (B, 1, H', W') the similarity map that fused them (None for a clip's first frame): the
    # weight of the propagated prediction, for visualisation.
    sim: Tensor | None = None
    frame: Tensor | None = None  # the previous frame itself, kept only by the two-pass option


def _as_homographies(h: Tensor | np.ndarray) -> np.ndarray:
    """(3, 3) or (B, 3, 3) homographies, NumPy or torch, as a (B, 3, 3) float64 NumPy array."""
    array = h.detach().cpu().numpy() if isinstance(h, Tensor) else np.asarray(h)
    return array.astype(np.float64, copy=False).reshape(-1, 3, 3)


def _rgb_frames(frames: Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) uint8 or float 0..1 frames -> B (H, W, 3) uint8 RGB arrays, for registration.

    Equals :func:`vidseg.utils.images.tensor_to_rgb_uint8`; for uint8 frames, interleaving the
    channel planes with ``cv2.merge`` takes 0.015 ms per 256x256 frame where torch's permuted
    copy takes 0.11 ms (2-core CPU).
    """
    if frames.dtype != torch.uint8:
        return list(tensor_to_rgb_uint8(frames))
    return [cv2.merge(list(planes)) for planes in frames.detach().cpu().numpy()]


class SSP(VideoModel):
    """Semantic similarity propagation around ``segmenter`` (see the module docstring)."""

    def __init__(self, segmenter: Segmenter, config: SSPConfig | None = None) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.num_classes = segmenter.num_classes
        self.config = config or SSPConfig()
        self.feature_channels = segmenter.encoder_channels[0]
        self.sim_op = build_sim_op(self.config.sim_op, self.feature_channels)
        self.mixing_op = build_mixing_op(
            self.config.mixing_op,
            segmenter.num_classes,
            self.config.mixing_layers,
            self.config.window_size,
        )
        options = dict(self.config.registration)
        self.registrar = Registrar(make_registration_config(**options))

    # -- the fusion, shared by streaming, offline and training paths --------------------------

    def _logits(self, features: list[Tensor], height: int, width: int) -> Tensor:
        logits = self.segmenter.decode(features)
        if self.config.fuse_at == "full":
            return self.segmenter.upsample_logits(logits, height, width)
        return logits

    def fuse(
        self,
        prev_logits: Tensor,
        prev_features: Tensor,
        logits: Tensor,
        features: Tensor,
        h_prev_to_cur: Tensor | np.ndarray,
        image_size: tuple[int, int],
    ) -> tuple[Tensor, Tensor]:
        """Fused logits (same grid as ``logits``) and sim (B, 1, same grid).

        ``h_prev_to_cur`` (3, 3) or (B, 3, 3) is in image pixels; the feature and stride-4 logit
        grids use it conjugated by the stride (pixel-centre convention) and share one sampling
        grid. When every homography is exactly the identity (identity registration, or a
        fallback) the previous maps are used as they are, which equals resampling them up to
        float rounding.
        """
        hom = _as_homographies(h_prev_to_cur)
        valid: Tensor | None = None
        if np.array_equal(hom, np.broadcast_to(np.eye(3), hom.shape)):
            warped_feats, warped = prev_features, prev_logits
        else:
            warped_feats, warped, valid = self._warp(prev_features, prev_logits, hom, image_size)
        warped, logits = self.mixing_op(warped, logits)
        sim = self.sim_op(warped_feats, features)
        if sim.shape[-2:] != logits.shape[-2:]:
            sim = F.interpolate(sim, size=logits.shape[-2:], mode="bilinear", align_corners=False)
        if valid is not None:
            # No previous frame behind a pixel: the current prediction alone.
            sim = sim * valid
        # logits + sim * (warped - logits): exactly the current logits where sim is 0.
        return torch.lerp(logits, warped, sim), sim

    def _warp(
        self,
        prev_features: Tensor,
        prev_logits: Tensor,
        hom: np.ndarray,
        image_size: tuple[int, int],
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The previous features and logits aligned to the current frame by ``hom`` (B, 3, 3),
        and the validity of the warped logits (B, 1, ...), as :func:`vidseg.geometry.sample`."""
        batch, device = prev_features.shape[0], prev_features.device
        h_feat = rescale_homography(hom, stride_matrix(FEATURE_STRIDE))
        feat_size = tuple(prev_features.shape[-2:])
        feat_coords = homography_coords(h_feat, feat_size, device=device).expand(batch, -1, -1, -1)
        warped_feats, _ = sample(prev_features, feat_coords, mode=self.config.features_mode)
        logits_size = tuple(prev_logits.shape[-2:])
        if logits_size == feat_size:
            coords = feat_coords  # stride-4 logits lie on the features' grid
        else:
            h_logits = hom if logits_size == tuple(image_size) else h_feat
            coords = homography_coords(h_logits, logits_size, device=device)
            coords = coords.expand(batch, -1, -1, -1)
        warped, valid = sample(prev_logits, coords, mode=self.config.logits_mode)
        return warped_feats, warped, valid

    def _output(self, logits: Tensor, height: int, width: int) -> Tensor:
        if logits.shape[-2:] == (height, width):
            return logits
        return self.segmenter.upsample_logits(logits, height, width)

    # -- streaming ----------------------------------------------------------------------------

    def init_state(self) -> SSPState | None:
        return None

    def _pool(self) -> ThreadPoolExecutor:
        # Created on first use and not pickled or copied with the module: threads cannot be.
        pool = self.__dict__.get("_registration_pool")
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ssp-registration")
            self.__dict__["_registration_pool"] = pool
        return pool

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_registration_pool", None)
        return state

    def register(self, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
        """(B, 3, 3) homographies prev -> cur of (B, H, W, 3) uint8 frames, timed as external."""
        with external("registration"):
            hs, _ = self.registrar.batch(prev, cur)
        return hs

    def _advance(
        self, prev: list[FrameFeatures] | None, frame: Tensor
    ) -> tuple[list[FrameFeatures], np.ndarray | None]:
        """Registration of a stream's next frames (B, 3, H, W), timed as external: what it keeps
        of them, and the (B, 3, 3) homographies from the previous ones (None without ``prev``)."""
        with external("registration"):
            steps = [
                self.registrar.advance(
                    None if prev is None else prev[i], image, where=f"item {i} of an SSP stream"
                )
                for i, image in enumerate(_rgb_frames(frame))
            ]
        kept = [features for features, _ in steps]
        if prev is None:
            return kept, None
        return kept, np.stack([result[0] for _, result in steps if result is not None])

    def step(self, frame: Tensor, state: SSPState | None) -> tuple[Tensor, SSPState]:
        height, width = frame.shape[-2:]
        prev = None if state is None else state.registration
        pending = None
        if self.config.parallel_registration:
            pending = self._pool().submit(self._advance, prev, frame)
        two_pass = self.config.recompute_previous
        prev_features = None if state is None else state.features
        if two_pass and state is not None:
            batch = frame.shape[0]
            both = self.segmenter.encode(torch.cat([state.frame, frame]))
            prev_features = both[0][:batch]
            features = [level[batch:] for level in both]
        else:
            features = self.segmenter.encode(frame)
        logits = self._logits(features, height, width)
        registration, hs = pending.result() if pending is not None else self._advance(prev, frame)
        sim = None
        if state is not None and hs is not None:
            logits, sim = self.fuse(
                state.logits, prev_features, logits, features[0], hs, (height, width)
            )
        new_state = SSPState(registration, features[0], logits, sim, frame if two_pass else None)
        return self._output(logits, height, width), new_state

    def forward(self, frames: Tensor, homographies: Tensor | np.ndarray) -> dict[str, Tensor]:
        """The recursion of :meth:`step` over a clip, backbone on all frames in one batched pass.

        ``frames`` (T, B, 3, H, W); ``homographies`` (T-1, B, 3, 3), entry i maps frame i to
        i+1. Returns ``outputs`` (T, B, C, H, W): frame 0's raw logits, then the fused ones, each
        fused from the previous fused output as at inference; and ``sims`` (T-1, B, 1, h, w) on
        the fusion grid. Training unrolls T-1 recurrent steps with gradients through all of them;
        T = 2 is the official previous-frame pair.
        """
        t, b = frames.shape[:2]
        height, width = frames.shape[-2:]
        features = self.segmenter.encode(frames.flatten(0, 1))
        logits = self._logits(features, height, width).unflatten(0, (t, b))
        stage1 = features[0].unflatten(0, (t, b))
        outputs, sims = [logits[0]], []
        for i in range(1, t):
            fused, sim = self.fuse(
                outputs[-1],
                stage1[i - 1],
                logits[i],
                stage1[i],
                homographies[i - 1],
                (height, width),
            )
            outputs.append(fused)
            sims.append(sim)
        return {
            "outputs": torch.stack([self._output(o, height, width) for o in outputs]),
            "sims": torch.stack(sims) if sims else logits.new_zeros((0, b, 1, height, width)),
        }

    @torch.no_grad()
    def forward_offline(self, frames: Tensor, homographies: Tensor | np.ndarray) -> Tensor:
        """:meth:`forward`'s outputs without gradients, (T, B, C, H, W): the reference the
        streaming path is tested against."""
        return self(frames, homographies)["outputs"]

    def forward_pair(
        self, frames: Tensor, prev_frames: Tensor, homographies: Tensor | np.ndarray | None = None
    ) -> dict[str, Tensor]:
        """Training forward on (current, previous) frames (B, 3, H, W), backbone in one pass.

        ``homographies`` (B, 3, 3) prev -> cur; registered here when None. Returns ``fused``
        (B, C, H, W), ``prev_logits`` (the previous frame's raw logits, unwarped, at the frame
        size, as the temporal consistency loss needs) and ``sim`` (on the fusion grid).
        """
        if homographies is None:
            homographies = self.register(
                tensor_to_rgb_uint8(prev_frames), tensor_to_rgb_uint8(frames)
            )
        homs = torch.as_tensor(homographies)[None]
        out = self(torch.stack([prev_frames, frames]), homs)
        return {"fused": out["outputs"][1], "prev_logits": out["outputs"][0], "sim": out["sims"][0]}
