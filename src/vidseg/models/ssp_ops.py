"""SSP's building blocks: the similarity ops (aligned previous and current stride-4 features ->
the per-pixel weight of the propagated prediction) and the prediction-mixing ops (applied to the
aligned previous and the current logits before fusion).

Parameter counts for E = 96 (Hiera-S stage 1) match the official code: conv 207,841, convbase
41,665, conv2 347,521, cossim / constant / reuse 0, avg 1.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, LayerNorm, 1x1 expansion x4, GELU, 1x1 projection, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = _LayerNorm2d(channels, eps=1e-6)
        self.pwconv1 = nn.Conv2d(channels, 4 * channels, 1)
        self.pwconv2 = nn.Conv2d(4 * channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pwconv2(F.gelu(self.pwconv1(self.norm(self.dwconv(x)))))


def _sim_head(channels: int) -> nn.Sequential:
    """3x3 conv C -> C/2, BN, ReLU, 1x1 conv -> 1, sigmoid: the 'convbase' head."""
    return nn.Sequential(
        nn.Conv2d(channels, channels // 2, 3, padding=1),
        nn.BatchNorm2d(channels // 2),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels // 2, 1, 1),
        nn.Sigmoid(),
    )


class SimilarityOp(nn.Module, ABC):
    """Maps (aligned previous, current) stride-4 features (B, E, h, w) to sim (B, 1, h, w)."""

    @abstractmethod
    def forward(self, prev: Tensor, cur: Tensor) -> Tensor:
        """sim in [0, 1] (B, 1, h, w): the weight of the propagated previous prediction."""


class ConvSim(SimilarityOp):
    """The paper's op: concat (2E), 3x3 conv 2E -> E, BN, ReLU, then the convbase head."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            *_sim_head(channels),
        )

    def forward(self, prev: Tensor, cur: Tensor) -> Tensor:
        return self.net(torch.cat([prev, cur], dim=1))


class ConvBaseSim(SimilarityOp):
    """Only the aligned previous features through the convbase head (ignores the current)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = _sim_head(channels)

    def forward(self, prev: Tensor, cur: Tensor) -> Tensor:
        return self.net(prev)


class Conv2Sim(SimilarityOp):
    """Concat (2E), one ConvNeXt block on 2E, keep the first (previous) E channels, convbase."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = _ConvNeXtBlock(2 * channels)
        self.head = _sim_head(channels)
        self.channels = channels

    def forward(self, prev: Tensor, cur: Tensor) -> Tensor:
        mixed = self.block(torch.cat([prev, cur], dim=1))
        return self.head(mixed[:, : self.channels])


class CosineSim(SimilarityOp):
    """The ablation's parameter-free op: clamp(cos, 0, 1)^4, at most 0.95."""

    def forward(self, prev: Tensor, cur: Tensor) -> Tensor:
        cos = F.cosine_similarity(prev, cur, dim=1, eps=1e-8).unsqueeze(1)
        return cos.clamp(0, 1).pow(4).clamp(max=0.95)


class ConstantSim(SimilarityOp):
    """sim = ``value`` everywhere: 0 is 'no interpolation' (the image model), 1 'reuse'."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, prev: Tensor, cur: Tensor) -> Tensor:
        return cur.new_full((cur.shape[0], 1, *cur.shape[-2:]), self.value)


class AverageSim(SimilarityOp):
    """One learnable weight, initialised to 0.5 and clamped to [0, 1] (the official one is not)."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(0.5))

    def forward(self, prev: Tensor, cur: Tensor) -> Tensor:
        weight = self.alpha.clamp(0, 1)
        return weight.expand(cur.shape[0], 1, *cur.shape[-2:])


SIM_OPS = {
    "conv": ConvSim,
    "convbase": ConvBaseSim,
    "conv2": Conv2Sim,
    "cossim": lambda channels: CosineSim(),
    "constant": lambda channels: ConstantSim(0.0),
    "reuse": lambda channels: ConstantSim(1.0),
    "avg": lambda channels: AverageSim(),
}


def build_sim_op(name: str, channels: int) -> SimilarityOp:
    """The similarity op ``name`` for stride-4 features of ``channels`` channels."""
    from vidseg.models.backbones.base import unknown_name_error

    if name not in SIM_OPS:
        raise unknown_name_error("similarity op", name, list(SIM_OPS), key="ssp.sim_op")
    return SIM_OPS[name](channels)


class MixingOp(nn.Module, ABC):
    """Maps (aligned previous, current) logits (B, C, H, W) to new (previous, current) logits,
    applied before the similarity-weighted fusion."""

    @abstractmethod
    def forward(self, prev: Tensor, cur: Tensor) -> tuple[Tensor, Tensor]:
        """The mixed (previous, current) pair, same shapes as the inputs."""


class IdentityMixing(MixingOp):
    """No mixing (every official config)."""

    def forward(self, prev: Tensor, cur: Tensor) -> tuple[Tensor, Tensor]:
        return prev, cur


MIXING_OPS = {
    "id": lambda classes, layers, window: IdentityMixing(),
}


def build_mixing_op(
    name: str, num_classes: int, layers: int = 1, window: list[int] | None = None
) -> MixingOp:
    """The mixing op ``name`` for ``num_classes``-channel logits (``layers`` blocks, ``window``
    the attention window, None for the op's default)."""
    from vidseg.models.backbones.base import unknown_name_error

    if name not in MIXING_OPS:
        raise unknown_name_error("mixing op", name, list(MIXING_OPS), key="ssp.mixing_op")
    return MIXING_OPS[name](num_classes, layers, window)
