"""RAFT optical flow (Teed & Deng, ECCV 2020): our implementation, loading the official weights.

``raft`` is the full model (residual encoders, radius-4 lookup, separable ConvGRU, convex x8
upsampling); ``raft_small`` the small one (bottleneck encoders, radius 3, 3x3 ConvGRU, bilinear
x8 upsampling). Parameter names and shapes are those of the princeton-vl/RAFT checkpoints
(``raft-things.pth``, ``raft-sintel.pth``, ``raft-kitti.pth``, ``raft-small.pth``), which load
strictly, with or without DataParallel's ``module.`` prefix.

- :class:`RAFT` is the network. ``forward`` takes *scaled* images (see :func:`scale_frames`) whose
  height and width are multiples of 8 and at least 64, and returns flow from ``image1`` to
  ``image2`` in pixels (channel 0 = dx): the list of per-iteration full-resolution flows, or
  ``(flow at 1/8, final flow)`` with ``test_mode=True``. It is differentiable, for fine-tuning.
- :class:`RaftFlow` is the :class:`~vidseg.flow.base.FlowEstimator`: it scales the frames,
  replicate-pads them to a multiple of 8 (and at least 64), runs the network and crops the flow
  to the input size. Memory: the correlation volume holds (H/8 * W/8)^2 float32 per pair, about
  4.3 GB at 1024x2048.
- :func:`load_raft` reads a checkpoint; :func:`build_raft` is what ``vidseg.flow.build`` calls.

One deliberate difference from the official code: a pyramid level one pixel high or wide (1/8
size below 16, i.e. padded frames under 128 px) makes the official lookup divide by zero and
return NaN; here such a level samples as a single pixel with zero padding. Outputs agree
everywhere the official ones are finite.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.errors import ConfigError
from vidseg.flow.base import FlowEstimator, check_batch, check_pair
from vidseg.geometry.warp import pixel_grid
from vidseg.models.backbones.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    format_keys,
    unknown_name_error,
)

log = logging.getLogger(__name__)

OFFICIAL_REPO = "https://github.com/princeton-vl/RAFT"
# The archive that the official download_models.sh fetches (all four checkpoints).
OFFICIAL_MODELS_URL = "https://dropbox.com/s/4j4z58wuv8o0mfz/models.zip"

INPUT_NORMS = ("raft", "imagenet")
PADDINGS = ("sintel", "kitti")
#: Seed of the network built by ``build_raft(weights="random")``.
RANDOM_SEED = 0

_STRIDE = 8
# Three 2x poolings of the 1/8 correlation volume need at least 8 cells: 64 input pixels.
_MIN_SIDE = 64
# Keys that exist in one variant only; they tell which model a checkpoint was trained as.
_FULL_ONLY_KEY = "update_block.mask.0.weight"
_SMALL_ONLY_KEY = "update_block.gru.convz.weight"


def _norm(kind: str, channels: int) -> nn.Module:
    """The encoders' normalisation: ``batch`` (context net), ``instance`` (feature net) or none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        # Not affine and no running stats: contributes no checkpoint keys.
        return nn.InstanceNorm2d(channels)
    return nn.Identity()


class _ResidualBlock(nn.Module):
    """Two 3x3 convolutions; a strided block projects its shortcut with a strided 1x1 conv."""

    def __init__(self, cin: int, cout: int, norm: str, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm1 = _norm(norm, cout)
        self.norm2 = _norm(norm, cout)
        shortcut = None
        if stride != 1:
            # One module under two names, so the checkpoints hold its tensors twice.
            self.norm3 = _norm(norm, cout)
            shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), self.norm3)
        self.downsample = shortcut

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class _BottleneckBlock(nn.Module):
    """1x1 reduce to a quarter of the width, strided 3x3, 1x1 expand (the small encoders)."""

    def __init__(self, cin: int, cout: int, norm: str, stride: int) -> None:
        super().__init__()
        mid = cout // 4
        self.conv1 = nn.Conv2d(cin, mid, 1)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1)
        self.conv3 = nn.Conv2d(mid, cout, 1)
        self.norm1 = _norm(norm, mid)
        self.norm2 = _norm(norm, mid)
        self.norm3 = _norm(norm, cout)
        shortcut = None
        if stride != 1:
            self.norm4 = _norm(norm, cout)
            shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), self.norm4)
        self.downsample = shortcut

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = F.relu(self.norm3(self.conv3(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class _Encoder(nn.Module):
    """7x7/2 stem, three stages of two blocks (strides 1, 2, 2), 1x1 projection: 1/8 resolution."""

    def __init__(
        self, widths: tuple[int, int, int], out_dim: int, norm: str, small: bool, dropout: float
    ) -> None:
        super().__init__()
        block = _BottleneckBlock if small else _ResidualBlock

        def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(block(cin, cout, norm, stride), block(cout, cout, norm, 1))

        # The stem has the width of the first stage.
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3)
        self.norm1 = _norm(norm, widths[0])
        self.layer1 = stage(widths[0], widths[0], 1)
        self.layer2 = stage(widths[0], widths[1], 2)
        self.layer3 = stage(widths[1], widths[2], 2)
        self.conv2 = nn.Conv2d(widths[2], out_dim, 1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        # The official initialisation, so that training from scratch starts where theirs did.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.dropout(self.conv2(x))


class _MotionEncoder(nn.Module):
    """Correlation features and the current flow -> motion features, the flow appended last."""

    def __init__(self, corr_channels: int, small: bool) -> None:
        super().__init__()
        if small:
            self.convc1 = nn.Conv2d(corr_channels, 96, 1)
            self.convc2 = None
            self.convf1 = nn.Conv2d(2, 64, 7, padding=3)
            self.convf2 = nn.Conv2d(64, 32, 3, padding=1)
            self.conv = nn.Conv2d(96 + 32, 80, 3, padding=1)
        else:
            self.convc1 = nn.Conv2d(corr_channels, 256, 1)
            self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
            self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
            self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
            self.conv = nn.Conv2d(192 + 64, 128 - 2, 3, padding=1)
        self.out_channels = self.conv.out_channels + 2

    def forward(self, flow: Tensor, corr: Tensor) -> Tensor:
        c = F.relu(self.convc1(corr))
        if self.convc2 is not None:
            c = F.relu(self.convc2(c))
        f = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat([c, f], dim=1)))
        return torch.cat([out, flow], dim=1)


class _ConvGRU(nn.Module):
    """A GRU cell with convolutional gates over the hidden state h and the input x.

    ``separable`` (full RAFT) runs two passes, 1x5 then 5x1 kernels (gate convs ``convz1`` ...,
    ``convz2`` ...); otherwise one pass with 3x3 kernels (``convz``, ``convr``, ``convq``).
    """

    def __init__(self, hidden: int, inputs: int, separable: bool) -> None:
        super().__init__()
        passes = {"1": (1, 5), "2": (5, 1)} if separable else {"": (3, 3)}
        for suffix, kernel in passes.items():
            padding = (kernel[0] // 2, kernel[1] // 2)
            for gate in "zrq":
                conv = nn.Conv2d(hidden + inputs, hidden, kernel, padding=padding)
                self.add_module(f"conv{gate}{suffix}", conv)
        self._passes = tuple(passes)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        for suffix in self._passes:
            hx = torch.cat([h, x], dim=1)
            z = torch.sigmoid(self.get_submodule(f"convz{suffix}")(hx))
            r = torch.sigmoid(self.get_submodule(f"convr{suffix}")(hx))
            q = torch.tanh(self.get_submodule(f"convq{suffix}")(torch.cat([r * h, x], dim=1)))
            h = (1 - z) * h + z * q
        return h


class _FlowHead(nn.Module):
    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(hidden, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(h)))


class _UpdateBlock(nn.Module):
    """One refinement step: new hidden state, upsampling mask logits (full model), flow delta."""

    def __init__(self, corr_channels: int, hidden: int, context: int, small: bool) -> None:
        super().__init__()
        self.encoder = _MotionEncoder(corr_channels, small)
        self.gru = _ConvGRU(hidden, context + self.encoder.out_channels, separable=not small)
        self.flow_head = _FlowHead(hidden, 128 if small else 256)
        self.mask = None
        if not small:
            # 9 neighbour weights for each of the 8x8 sub-pixels of a 1/8 cell.
            self.mask = nn.Sequential(
                nn.Conv2d(hidden, 256, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(256, 9 * _STRIDE * _STRIDE, 1),
            )

    def forward(
        self, net: Tensor, inp: Tensor, corr: Tensor, flow: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        motion = self.encoder(flow, corr)
        net = self.gru(net, torch.cat([inp, motion], dim=1))
        delta = self.flow_head(net)
        # The 0.25 balances the mask's gradients against the flow's (part of the trained model).
        mask = None if self.mask is None else 0.25 * self.mask(net)
        return net, mask, delta


def _sample_pixels(volume: Tensor, points: Tensor) -> Tensor:
    """Bilinear samples of (N, 1, H, W) at pixel positions (N, h, w, 2) = (x, y); zero outside."""
    height, width = volume.shape[-2:]
    x, y = points.split([1, 1], dim=-1)
    # With align_corners=True this normalisation puts pixel centres at integer positions.
    grid = torch.cat([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1], dim=-1)
    return F.grid_sample(volume, grid, align_corners=True)


class CorrPyramid:
    """All-pairs correlation of two (B, C, h, w) feature maps, average-pooled into levels.

    Level 0 holds, for each pixel p of ``fmap1``, the dot products with every pixel of ``fmap2``
    divided by sqrt(C); level l is level 0 pooled 2x2 l times (odd sizes drop their last row).
    Calling it with ``coords`` (B, 2, h, w), the (x, y) positions in ``fmap2``'s pixels, samples a
    (2r+1)^2 window around ``coords / 2**l`` in each level: (B, levels * (2r+1)^2, h, w).
    """

    def __init__(self, fmap1: Tensor, fmap2: Tensor, levels: int = 4, radius: int = 4) -> None:
        batch, dim, height, width = fmap1.shape
        self.radius = radius
        # The volume and its lookup stay float32 under a caller's autocast, as in the official code.
        with torch.autocast(fmap1.device.type, enabled=False):
            f1 = fmap1.float().reshape(batch, dim, height * width)
            f2 = fmap2.float().reshape(batch, dim, height * width)
            corr = torch.matmul(f1.transpose(1, 2), f2) / math.sqrt(dim)
            corr = corr.reshape(batch * height * width, 1, height, width)
            self.levels = [corr]
            for _ in range(levels - 1):
                corr = F.avg_pool2d(corr, 2, stride=2)
                self.levels.append(corr)
        # A side of 1 would make the sampling normalisation divide by zero; an appended zero row
        # or column is exactly the zero padding that sampling applies anyway.
        self.levels = [
            F.pad(level, (0, int(level.shape[-1] == 1), 0, int(level.shape[-2] == 1)))
            for level in self.levels
        ]

    def __call__(self, coords: Tensor) -> Tensor:
        batch, _, height, width = coords.shape
        r = self.radius
        side = 2 * r + 1
        offsets = torch.arange(-r, r + 1, dtype=torch.float32, device=coords.device)
        # Window cell (i, j) samples at (x + offsets[i], y + offsets[j]): the x offset runs along
        # the first window axis, which fixes the channel order the trained weights expect.
        window = torch.stack(
            [offsets.view(side, 1).expand(side, side), offsets.view(1, side).expand(side, side)],
            dim=-1,
        ).view(1, side, side, 2)
        centres = coords.float().permute(0, 2, 3, 1).reshape(batch * height * width, 1, 1, 2)
        with torch.autocast(coords.device.type, enabled=False):
            samples = [
                _sample_pixels(level, centres / 2**n + window).view(batch, height, width, -1)
                for n, level in enumerate(self.levels)
            ]
        return torch.cat(samples, dim=-1).permute(0, 3, 1, 2).contiguous()


def convex_upsample(flow: Tensor, mask: Tensor) -> Tensor:
    """(B, 2, h, w) flow at 1/8 and (B, 9*64, h, w) mask logits -> (B, 2, 8h, 8w) flow.

    Each full-resolution pixel is a softmax-weighted mix of the 3x3 coarse cells around its cell
    (zero beyond the border), in full-resolution pixels. Mask channel ``k*64 + 8a + b`` weights
    neighbour k (row-major in the 3x3 window) for sub-pixel row a, column b.
    """
    batch, _, height, width = flow.shape
    weights = torch.softmax(mask.view(batch, 1, 9, _STRIDE, _STRIDE, height, width), dim=2)
    neighbours = F.unfold(_STRIDE * flow, [3, 3], padding=1)
    neighbours = neighbours.view(batch, 2, 9, 1, 1, height, width)
    fine = torch.sum(weights * neighbours, dim=2)  # (B, 2, a, b, h, w)
    return fine.permute(0, 1, 4, 2, 5, 3).reshape(batch, 2, _STRIDE * height, _STRIDE * width)


def bilinear_upsample(flow: Tensor) -> Tensor:
    """(B, 2, h, w) flow at 1/8 -> (B, 2, 8h, 8w): bilinear with aligned corners, scaled by 8."""
    size = (_STRIDE * flow.shape[2], _STRIDE * flow.shape[3])
    return _STRIDE * F.interpolate(flow, size=size, mode="bilinear", align_corners=True)


class RAFT(nn.Module):
    """The RAFT network; ``small`` selects RAFT-S. See the module docstring for the conventions.

    ``dropout`` is applied to both encoders' outputs in training mode. ``mixed_precision`` runs
    the encoders and the update block under ``torch.autocast`` (the correlation stays float32);
    without it, a caller's own autocast context applies in the same places.
    """

    def __init__(self, small: bool = False, dropout: float = 0.0, mixed_precision: bool = False):
        super().__init__()
        self.small = small
        self.mixed_precision = mixed_precision
        self.hidden_dim, self.context_dim = (96, 64) if small else (128, 128)
        self.corr_levels = 4
        self.corr_radius = 3 if small else 4
        widths, feature_dim = ((32, 64, 96), 128) if small else ((64, 96, 128), 256)
        context_norm = "none" if small else "batch"
        context_dim = self.hidden_dim + self.context_dim
        self.fnet = _Encoder(widths, feature_dim, "instance", small, dropout)
        self.cnet = _Encoder(widths, context_dim, context_norm, small, dropout)
        corr_channels = self.corr_levels * (2 * self.corr_radius + 1) ** 2
        self.update_block = _UpdateBlock(corr_channels, self.hidden_dim, self.context_dim, small)

    def freeze_bn(self) -> None:
        """Put the batch norms in eval mode (the official fine-tuning recipe keeps them frozen)."""
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()

    def _amp(self, device: torch.device) -> contextlib.AbstractContextManager:
        return torch.autocast(device.type) if self.mixed_precision else contextlib.nullcontext()

    def forward(
        self,
        image1: Tensor,
        image2: Tensor,
        iters: int = 12,
        flow_init: Tensor | None = None,
        test_mode: bool = False,
    ) -> list[Tensor] | tuple[Tensor, Tensor]:
        """Flow from ``image1`` to ``image2``, both (B, 3, H, W) scaled by :func:`scale_frames`.

        ``flow_init`` (B, 2, H/8, W/8) starts the iterations from a flow at 1/8 resolution, in
        1/8-resolution pixels. Returns the ``iters`` flows (B, 2, H, W) in pixels, or with
        ``test_mode`` the pair (final flow at 1/8 in 1/8 pixels, final flow at full resolution).
        """
        batch, _, height, width = image1.shape
        if height % _STRIDE or width % _STRIDE or min(height, width) < _MIN_SIDE:
            raise ConfigError(
                f"RAFT input {height}x{width}: height and width must be multiples of {_STRIDE} "
                f"and at least {_MIN_SIDE} (RaftFlow pads frames itself)"
            )
        if iters < 1:
            raise ConfigError(f"RAFT iters must be at least 1, got {iters}")
        image1, image2 = image1.contiguous(), image2.contiguous()
        amp = self._amp(image1.device)
        with amp:
            fmap1, fmap2 = torch.split(self.fnet(torch.cat([image1, image2])), [batch, batch])
        pyramid = CorrPyramid(fmap1, fmap2, self.corr_levels, self.corr_radius)
        with amp:
            context = self.cnet(image1)
            net, inp = torch.split(context, [self.hidden_dim, self.context_dim], dim=1)
            net, inp = torch.tanh(net), torch.relu(inp)

        coords0 = pixel_grid(height // _STRIDE, width // _STRIDE, device=image1.device)
        coords0 = coords0.repeat(batch, 1, 1, 1)
        coords1 = coords0.clone()
        if flow_init is not None:
            coords1 = coords1 + flow_init
        flows = []
        for _ in range(iters):
            # Each step's gradient stops at its starting point, as in the official training.
            coords1 = coords1.detach()
            corr = pyramid(coords1)
            with amp:
                net, mask, delta = self.update_block(net, inp, corr, coords1 - coords0)
            coords1 = coords1 + delta
            coarse = coords1 - coords0
            fine = bilinear_upsample(coarse) if mask is None else convex_upsample(coarse, mask)
            flows.append(fine)
        if test_mode:
            return coords1 - coords0, flows[-1]
        return flows


def scale_frames(frames: Tensor, input_norm: str = "raft") -> Tensor:
    """(B, 3, H, W) RGB, uint8 in 0..255 or float in 0..1 -> float32 input of :class:`RAFT`.

    ``raft``: ``2 x/255 - 1`` in [-1, 1], the official scaling (what the checkpoints were trained
    on). ``imagenet``: ``(x/255 - mean) / std`` with the ImageNet statistics, the frames the SSP
    code feeds RAFT; use it only to reproduce SSP's numbers.
    """
    if input_norm not in INPUT_NORMS:
        raise unknown_name_error("RAFT input_norm", input_norm, list(INPUT_NORMS))
    unit = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    if input_norm == "raft":
        return 2 * unit - 1.0
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames.device).view(1, 3, 1, 1)
    return (unit - mean) / std


def pad_amounts(height: int, width: int, mode: str = "sintel") -> tuple[int, int, int, int]:
    """(left, right, top, bottom) replicate padding that makes a frame RAFT-sized.

    Sides grow to the next multiple of 8, and to at least 64. ``sintel`` centres the frame (the
    official demo and Sintel evaluation); ``kitti`` centres it horizontally and pads only at the
    bottom (the official KITTI evaluation).
    """
    if mode not in PADDINGS:
        raise unknown_name_error("RAFT padding", mode, list(PADDINGS))
    pad_h = max(-height % _STRIDE, _MIN_SIDE - height)
    pad_w = max(-width % _STRIDE, _MIN_SIDE - width)
    left, right = pad_w // 2, pad_w - pad_w // 2
    if mode == "kitti":
        return left, right, 0, pad_h
    return left, right, pad_h // 2, pad_h - pad_h // 2


class RaftFlow(FlowEstimator):
    """RAFT behind the :class:`~vidseg.flow.base.FlowEstimator` interface (flow ``src -> dst``).

    Frames are scaled by ``input_norm``, replicate-padded by ``padding`` (see
    :func:`pad_amounts`), and the flow after ``iters`` iterations is cropped back to the input
    size. The network runs in eval mode without gradients on the device of the tensors given to
    :meth:`batch` (the weights follow them there) and on ``device`` for NumPy frames.
    ``weights`` describes the weights for :meth:`settings` (file name and SHA-256, or a seed);
    by default it is a SHA-256 of the model's tensors at construction.
    """

    name = "raft"

    def __init__(
        self,
        model: RAFT,
        *,
        iters: int = 20,
        input_norm: str = "raft",
        padding: str = "sintel",
        device: str | torch.device = "cpu",
        weights: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
            raise ConfigError(f"RAFT iters must be a positive integer, got {iters!r}")
        if input_norm not in INPUT_NORMS:
            raise unknown_name_error("RAFT input_norm", input_norm, list(INPUT_NORMS))
        if padding not in PADDINGS:
            raise unknown_name_error("RAFT padding", padding, list(PADDINGS))
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"RAFT device {device!r} is not a torch device: {exc}") from exc
        self.name = "raft_small" if model.small else "raft"
        self.model = model.to(self.device).eval()
        self.iters = iters
        self.input_norm = input_norm
        self.padding = padding
        self.weights = dict(weights or {"weights": "state_dict", "weights_sha256": _digest(model)})

    def settings(self) -> dict[str, Any]:
        return {
            "variant": self.name,
            "iters": self.iters,
            "input_norm": self.input_norm,
            "padding": self.padding,
            **self.weights,
        }

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        check_pair(src, dst)
        a = torch.from_numpy(np.ascontiguousarray(src)).permute(2, 0, 1)[None].to(self.device)
        b = torch.from_numpy(np.ascontiguousarray(dst)).permute(2, 0, 1)[None].to(self.device)
        return self.batch(a, b)[0].permute(1, 2, 0).cpu().numpy()

    def batch(self, src: Tensor, dst: Tensor) -> Tensor:
        check_batch(src, dst)
        if src.device != self.device:
            log.info("moving RAFT weights from %s to %s", self.device, src.device)
            self.device = src.device
            self.model.to(self.device)
        height, width = src.shape[-2:]
        left, right, top, bottom = pad_amounts(height, width, self.padding)
        pads = (left, right, top, bottom)
        self.model.eval()
        with torch.no_grad():
            x1, x2 = (
                F.pad(scale_frames(x, self.input_norm), pads, mode="replicate")
                for x in (src, dst.to(src.device))
            )
            _, flow = self.model(x1, x2, iters=self.iters, test_mode=True)
        return flow[..., top : top + height, left : left + width].float().contiguous()


def _digest(model: nn.Module) -> str:
    """SHA-256 of a model's state dict: names, dtypes, shapes and values."""
    hasher = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        hasher.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        hasher.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_raft_state(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a RAFT checkpoint, ``module.`` prefixes removed.

    Reads ``.safetensors`` files and torch pickles (``weights_only``), including state dicts
    wrapped under a ``state_dict`` or ``model`` key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"RAFT weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # whatever the reader raises, the file is unusable
        raise ConfigError(f"RAFT weights {path}: cannot read it ({_first_line(exc)})") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise ConfigError(f"RAFT weights {path}: expected a state dict, got {type(state).__name__}")
    if not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"RAFT weights {path}: expected a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_raft_state(model: RAFT, state: Mapping[str, Tensor], source: str | Path) -> None:
    """Load ``state`` into ``model`` strictly; a ConfigError names ``source`` and the bad keys.

    BatchNorm ``num_batches_tracked`` counters may be absent (they do not change the output).
    """
    if model.small and _FULL_ONLY_KEY in state:
        raise ConfigError(
            f"RAFT weights {source}: this looks like a full RAFT checkpoint (it has "
            f"'{_FULL_ONLY_KEY}'), not RAFT-small; load it as 'raft' (small=False)"
        )
    if not model.small and _SMALL_ONLY_KEY in state:
        raise ConfigError(
            f"RAFT weights {source}: this looks like a RAFT-small checkpoint (it has "
            f"'{_SMALL_ONLY_KEY}'), not full RAFT; load it as 'raft_small' (small=True)"
        )
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    if missing:
        problems.append(f"missing keys {format_keys(missing)}")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        problems.append(f"unexpected keys {format_keys(unexpected)}")
    misshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if misshaped:
        first = misshaped[0]
        problems.append(
            f"wrongly shaped keys {format_keys(misshaped)} ('{first}' is "
            f"{tuple(state[first].shape)}, expected {tuple(expected[first].shape)})"
        )
    if problems:
        variant = "raft_small" if model.small else "raft"
        raise ConfigError(f"RAFT weights {source} do not fit {variant}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=False)


def save_raft(model: RAFT | RaftFlow, path: str | Path) -> None:
    """Write the weights: ``.safetensors`` (variant in the metadata) or a torch state dict."""
    network = model.model if isinstance(model, RaftFlow) else model
    path = Path(path)
    # Cloning separates the tensors that two names share (norm3 and downsample.1).
    state = {k: v.detach().cpu().clone().contiguous() for k, v in network.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        variant = "raft_small" if network.small else "raft"
        save_file(state, str(path), metadata={"format": "pt", "variant": variant})
    else:
        torch.save(state, path)


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_raft(
    path: str | Path,
    small: bool = False,
    iters: int = 20,
    input_norm: str = "raft",
    device: str | torch.device = "cpu",
    padding: str = "sintel",
) -> RaftFlow:
    """A ready :class:`RaftFlow` with the weights in ``path`` (official ``.pth`` or our own)."""
    path = Path(path)
    state = read_raft_state(path)
    model = RAFT(small=small)
    load_raft_state(model, state, path)
    weights = {"weights": path.name, "weights_sha256": _sha256(path)}
    log.info("loaded RAFT%s weights from %s", "-small" if small else "", path)
    return RaftFlow(
        model, iters=iters, input_norm=input_norm, padding=padding, device=device, weights=weights
    )


def missing_weights_message(small: bool = False) -> str:
    """How to get and pass the official checkpoints (one line)."""
    name, file = ("raft_small", "raft-small.pth") if small else ("raft", "raft-things.pth")
    return (
        f"{name} needs weights: download the official checkpoints from {OFFICIAL_REPO} (its "
        f"download_models.sh fetches {OFFICIAL_MODELS_URL}; unzip it) and pass one, e.g. "
        f"vidseg.flow.build('{name}', weights='models/{file}') or "
        f"vidseg.flow.raft.load_raft('models/{file}'{', small=True' if small else ''}); "
        "weights='random' builds an untrained network for tests and timing"
    )


def build_raft(
    weights: str | Path | None = None,
    small: bool = False,
    iters: int = 20,
    input_norm: str = "raft",
    device: str | torch.device = "cpu",
    padding: str = "sintel",
) -> RaftFlow:
    """The estimator for ``vidseg.flow.build('raft' | 'raft_small', ...)``.

    ``weights`` is a checkpoint path, or ``"random"`` for an untrained network initialised with
    seed :data:`RANDOM_SEED` (for speed measurements and tests). Nothing is ever downloaded.
    """
    if weights is None or weights == "":
        raise ConfigError(missing_weights_message(small))
    if weights != "random":
        return load_raft(weights, small, iters, input_norm, device, padding)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = RAFT(small=small)
    return RaftFlow(
        model,
        iters=iters,
        input_norm=input_norm,
        padding=padding,
        device=device,
        weights={"weights": "random", "seed": RANDOM_SEED},
    )
