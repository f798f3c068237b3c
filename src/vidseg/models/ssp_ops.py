"""SSP's building blocks: the similarity ops (aligned previous and current stride-4 features ->
the per-pixel weight of the propagated prediction) and the prediction-mixing ops (applied to the
aligned previous and the current logits before fusion).

Parameter counts for E = 96 (Hiera-S stage 1) match the official code: conv 207,841, convbase
41,665, conv2 347,521, cossim / constant / reuse 0, avg 1. The windowed-attention ones have
168,025 (3dwmsaconv), 292,633 (3dwmsaconv2) and 126,360 (3dwmsacos): the official 167,833 and
292,441 plus 192, the second LayerNorm of the attention layer (see
:class:`~vidseg.models.layers.WindowTransformerLayer`); the official 3dwmsacos builds the same
layer (126,168 with its shared norm) but never applies it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.errors import ConfigError
from vidseg.models.layers import WindowTransformerLayer


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a channels-first (B, C, *S) map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class _ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 (or 7x7x7), LayerNorm, 1x1 expansion x4, GELU, 1x1 projection, residual, on
    (B, C, H, W) (or (B, C, T, H, W) with ``spatial_dims=3``). The 1x1 convs are ConvNeXt's
    channels-last Linear layers."""

    def __init__(self, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
        self.dwconv = conv(channels, channels, 7, padding=3, groups=channels)
        self.norm = _ChannelLayerNorm(channels, eps=1e-6)
        self.pwconv1 = conv(channels, 4 * channels, 1)
        self.pwconv2 = conv(4 * channels, channels, 1)

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


def _cosine_weight(prev: Tensor, cur: Tensor, most: float) -> Tensor:
    """clamp(per-pixel cosine similarity over channels, 0, 1)^4, at most ``most``: (B, 1, h, w)."""
    cos = F.cosine_similarity(prev, cur, dim=1, eps=1e-8).unsqueeze(1)
    return cos.clamp(0, 1).pow(4).clamp(max=most)


class CosineSim(SimilarityOp):
    """The ablation's parameter-free op: clamp(cos, 0, 1)^4, at most 0.95."""

    def forward(self, prev: Tensor, cur: Tensor) -> Tensor:
        return _cosine_weight(prev, cur, 0.95)


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


def _attention_heads(channels: int, most: int = 8) -> int:
    """The official 8 heads when they divide ``channels`` (the stage-1 widths 64, 96 and 112 all
    qualify), else the largest divisor of ``channels`` not above 8, so that any width builds."""
    return max(h for h in range(1, most + 1) if channels % h == 0)


class _WindowAttentionSim(SimilarityOp):
    """Base of the 3dwmsa* ops: (previous, current) features stacked as T = 2 through one 3D
    window-attention layer (dim E, window [2, 7, 7], no shift, 8 heads, FFN 4E); the window
    spans both frames, so every pixel attends to the pixels of its 7x7 window in both."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = WindowTransformerLayer(
            channels, (2, 7, 7), (0, 0, 0), heads=_attention_heads(channels), hidden=4 * channels
        )

    def attend(self, prev: Tensor, cur: Tensor) -> tuple[Tensor, Tensor]:
        """The attended (previous, current) slices, (B, E, h, w) each."""
        out = self.attention(torch.stack([prev, cur], dim=2))
        return out[:, :, 0], out[:, :, 1]


class WindowAttentionConvSim(_WindowAttentionSim):
    """'3dwmsaconv': the attention layer, its previous (T = 0) slice, the convbase head."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.head = _sim_head(channels)

    def forward(self, prev: Tensor, cur: Tensor) -> Tensor:
        return self.head(self.attend(prev, cur)[0])


class WindowAttentionConv2Sim(_WindowAttentionSim):
    """'3dwmsaconv2': the attention layer, both slices concatenated (2E), 3x3 conv 2E -> E, BN,
    ReLU, 1x1 conv E -> 1, sigmoid."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.head = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, 1),
            nn.Sigmoid(),
        )

    def forward(self, prev: Tensor, cur: Tensor) -> Tensor:
        return self.head(torch.cat(self.attend(prev, cur), dim=1))


class WindowAttentionCosineSim(_WindowAttentionSim):
    """'3dwmsacos': clamp(cos of the two attended slices, 0, 1)^4, at most 0.99. The official op
    builds the attention layer but never applies it (plain cossim with a 0.99 cap); here it is
    applied, so the features it compares are learned."""

    def forward(self, prev: Tensor, cur: Tensor) -> Tensor:
        return _cosine_weight(*self.attend(prev, cur), 0.99)


SIM_OPS = {
    "conv": ConvSim,
    "convbase": ConvBaseSim,
    "conv2": Conv2Sim,
    "cossim": lambda channels: CosineSim(),
    "constant": lambda channels: ConstantSim(0.0),
    "reuse": lambda channels: ConstantSim(1.0),
    "avg": lambda channels: AverageSim(),
    "3dwmsaconv": WindowAttentionConvSim,
    "3dwmsaconv2": WindowAttentionConv2Sim,
    "3dwmsacos": WindowAttentionCosineSim,
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


def _window_and_shift(
    name: str, window: Sequence[int] | None, default: tuple[int, ...], shift: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``window`` (``default`` when None) and the official ``shift``, capped at window // 2 so that
    it stays inside a window smaller than the default one."""
    if window is None:
        window = default
    if len(window) != len(default) or min(window) < 1:
        raise ConfigError(
            f"ssp.window_size: {name} needs {len(default)} positive sizes "
            f"(default {list(default)}), got {list(window)}"
        )
    return tuple(window), tuple(min(s, w // 2) for s, w in zip(shift, window, strict=True))


class WindowAttention3DMixing(MixingOp):
    """'3dwmsa': (previous, current) stacked as T = 2, ``layers`` 3D window-attention layers
    (dim C, window [2, 7, 7], shift [0, 3, 3], 1 head, FFN 4C), split back into the two slices."""

    def __init__(self, classes: int, layers: int, window: Sequence[int] | None = None) -> None:
        super().__init__()
        window, shift = _window_and_shift("3dwmsa", window, (2, 7, 7), (0, 3, 3))
        self.layers = nn.Sequential(
            *(
                WindowTransformerLayer(classes, window, shift, heads=1, hidden=4 * classes)
                for _ in range(layers)
            )
        )

    def forward(self, prev: Tensor, cur: Tensor) -> tuple[Tensor, Tensor]:
        out = self.layers(torch.stack([prev, cur], dim=2))
        return out[:, :, 0], out[:, :, 1]


class WindowAttention2DMixing(MixingOp):
    """'2dwmsa': (previous, current) concatenated (2C), ``layers`` 2D window-attention layers
    (window [9, 9], shift [3, 3], 1 head, FFN 8C), split back into the two C-channel halves."""

    def __init__(self, classes: int, layers: int, window: Sequence[int] | None = None) -> None:
        super().__init__()
        window, shift = _window_and_shift("2dwmsa", window, (9, 9), (3, 3))
        self.layers = nn.Sequential(
            *(
                WindowTransformerLayer(2 * classes, window, shift, heads=1, hidden=8 * classes)
                for _ in range(layers)
            )
        )

    def forward(self, prev: Tensor, cur: Tensor) -> tuple[Tensor, Tensor]:
        out = self.layers(torch.cat([prev, cur], dim=1))
        return out[:, : prev.shape[1]], out[:, prev.shape[1] :]


class Conv2DMixing(MixingOp):
    """'2d_conv': (previous, current) concatenated (2C), ``layers`` ConvNeXt blocks (depthwise
    7x7, LayerNorm, 2C -> 8C, GELU, 8C -> 2C, residual), split back."""

    def __init__(self, classes: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(_ConvNeXtBlock(2 * classes) for _ in range(layers)))

    def forward(self, prev: Tensor, cur: Tensor) -> tuple[Tensor, Tensor]:
        out = self.layers(torch.cat([prev, cur], dim=1))
        return out[:, : prev.shape[1]], out[:, prev.shape[1] :]


class Conv3DMixing(MixingOp):
    """'3d_conv': (previous, current) stacked as (B, C, 2, H, W), ``layers`` 3D ConvNeXt blocks
    (depthwise 7x7x7 with padding 3, LayerNorm, C -> 4C, GELU, 4C -> C, residual), split back."""

    def __init__(self, classes: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(_ConvNeXtBlock(classes, 3) for _ in range(layers)))

    def forward(self, prev: Tensor, cur: Tensor) -> tuple[Tensor, Tensor]:
        out = self.layers(torch.stack([prev, cur], dim=2))
        return out[:, :, 0], out[:, :, 1]


MIXING_OPS = {
    "id": lambda classes, layers, window: IdentityMixing(),
    "3dwmsa": WindowAttention3DMixing,
    "2dwmsa": WindowAttention2DMixing,
    "2d_conv": lambda classes, layers, window: Conv2DMixing(classes, layers),
    "3d_conv": lambda classes, layers, window: Conv3DMixing(classes, layers),
}


def build_mixing_op(
    name: str, num_classes: int, layers: int = 1, window: list[int] | None = None
) -> MixingOp:
    """The mixing op ``name`` for ``num_classes``-channel logits (``layers`` blocks, ``window``
    the attention window of 3dwmsa ([t, h, w]) and 2dwmsa ([h, w]), None for the op's default;
    the other ops have no window and ignore it)."""
    from vidseg.models.backbones.base import unknown_name_error

    if name not in MIXING_OPS:
        raise unknown_name_error("mixing op", name, list(MIXING_OPS), key="ssp.mixing_op")
    return MIXING_OPS[name](num_classes, layers, window)
