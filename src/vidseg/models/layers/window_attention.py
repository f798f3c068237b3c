"""Shifted-window multi-head self-attention (after Swin / Video-Swin) in 2D and 3D, a Mix-FFN
(after SegFormer) and the pre-norm transformer layer that combines them.

Layout: :class:`WindowTransformerLayer` takes channels-first maps, (B, C, H, W) or
(B, C, T, H, W); :class:`WindowAttention` and :class:`MixFFN` work channels-last, (B, *S, C) with
S = (H, W) or (T, H, W), as LayerNorm and Linear do. Windows and shifts are listed in the order of
S ([h, w] or [t, h, w]) and need not be square.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Added to the attention logits of blocked query/key pairs (as Swin does). Finite rather than -inf:
# a padding query may have every key blocked, and an all -inf row would give NaN (in the forward
# pass of a cropped-away token, but also in the gradients of the whole window).
MASK_VALUE = -100.0


def window_partition(x: Tensor, window: Sequence[int]) -> Tensor:
    """(B, *S, C), each S_i a multiple of window_i -> (B * nW, prod(window), C).

    Windows are in raster order over the grid of windows (batch first), tokens in raster order
    inside each window.
    """
    b, *size, c = x.shape
    n = len(window)
    grid = [s // w for s, w in zip(size, window, strict=True)]
    x = x.reshape(b, *(v for pair in zip(grid, window, strict=True) for v in pair), c)
    # (B, g0, w0, g1, w1, ..., C) -> (B, g0, g1, ..., w0, w1, ..., C)
    order = [0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1]
    return x.permute(order).reshape(-1, math.prod(window), c)


def window_reverse(windows: Tensor, window: Sequence[int], size: Sequence[int]) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, prod(window), C) -> (B, *size, C)."""
    n = len(window)
    grid = [s // w for s, w in zip(size, window, strict=True)]
    c = windows.shape[-1]
    x = windows.reshape(-1, *grid, *window, c)
    # (B, g0, g1, ..., w0, w1, ..., C) -> (B, g0, w0, g1, w1, ..., C): each grid axis followed by
    # its own window axis (the official code pairs h with w here, right for square windows only).
    order = [0, *(v for i in range(n) for v in (1 + i, 1 + n + i)), 2 * n + 1]
    return x.permute(order).reshape(-1, *size, c)


def relative_position_index(
    window: Sequence[int], table_window: Sequence[int] | None = None
) -> Tensor:
    """(N, N) rows of a relative position bias table for the N = prod(window) tokens of a window.

    The table has prod(2 * table_window - 1) rows (``table_window`` defaults to ``window``), one per
    offset (query - key); a window shrunk below ``table_window`` reads the rows of its own offsets.
    """
    table_window = window if table_window is None else table_window
    axes = [torch.arange(w) for w in window]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij")).flatten(1)  # (n, N)
    offsets = coords[:, :, None] - coords[:, None, :]  # (n, N, N), query - key
    index = torch.zeros_like(offsets[0])
    for offset, w in zip(offsets, table_window, strict=True):
        index = index * (2 * w - 1) + offset + w - 1
    return index


def effective_window(
    size: Sequence[int], window: Sequence[int], shift: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (window, shift) used on an input of extent ``size``: along a dimension not larger than
    the window, one window covers the input, so it shrinks to the extent and is not shifted."""
    shrunk = [s <= w for s, w in zip(size, window, strict=True)]
    return (
        tuple(s if k else w for s, w, k in zip(size, window, shrunk, strict=True)),
        tuple(0 if k else d for d, k in zip(shift, shrunk, strict=True)),
    )


def _blocked_pairs(
    size: Sequence[int],
    padded: Sequence[int],
    window: Sequence[int],
    shift: Sequence[int],
    device: torch.device,
) -> Tensor | None:
    """(nW, N, N) bool, True where query i must not attend to key j of the same window of the
    cyclically shifted, padded grid; None when nothing is blocked.

    Blocked keys: those from another region of a shifted window (the roll brought them from the
    opposite border, they are no neighbours) and padding tokens (so that outputs do not depend on
    how far an input is from a multiple of the window).
    """
    if not any(shift) and list(size) == list(padded):
        return None
    n = len(size)
    # Regions along each shifted dimension of the rolled grid, as Swin slices them:
    # [0, P - w), [P - w, P - s), [P - s, P); a token's region is the tuple over dimensions.
    region = torch.zeros(padded, dtype=torch.long, device=device)
    for dim, (p, w, s) in enumerate(zip(padded, window, shift, strict=True)):
        if s:
            ids = torch.zeros(p, dtype=torch.long, device=device)
            ids[p - w : p - s] = 1
            ids[p - s :] = 2
            region = region * 3 + ids.view([p if d == dim else 1 for d in range(n)])
    valid = torch.zeros(padded, dtype=torch.bool, device=device)
    valid[tuple(slice(0, s) for s in size)] = True
    valid = torch.roll(valid, [-s for s in shift], dims=tuple(range(n)))
    region = window_partition(region[None, ..., None], window)[..., 0]  # (nW, N)
    valid = window_partition(valid[None, ..., None], window)[..., 0]
    return (region[:, :, None] != region[:, None, :]) | ~valid[:, None, :]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside (shifted) windows of a channels-last (B, *S, C) map, S of
    2 or 3 dimensions, with a learned relative position bias.

    The input is zero-padded at the end of each dimension to a multiple of the window, rolled by
    -shift (cyclic shift), split into windows, attended, and put back, rolled and cropped.
    ``window``/``shift`` shrink as :func:`effective_window` says. qkv has no bias, scale is
    head_dim^-0.5, and the bias table has prod(2 * window - 1) rows per head.
    """

    def __init__(
        self, dim: int, window: Sequence[int], shift: Sequence[int] | None = None, heads: int = 1
    ) -> None:
        super().__init__()
        shift = [0] * len(window) if shift is None else shift
        if len(window) not in (2, 3) or len(shift) != len(window):
            raise ValueError(f"window {window} / shift {shift}: need 2 or 3 dimensions each")
        if not all(0 <= s < w for s, w in zip(shift, window, strict=True)):
            raise ValueError(f"shift {shift} must lie in [0, window) for window {window}")
        if dim % heads:
            raise ValueError(f"{heads} heads do not divide dim {dim}")
        self.window = tuple(window)
        self.shift = tuple(shift)
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.empty(math.prod(2 * w - 1 for w in window), heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("bias_index", relative_position_index(self.window), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, *S, C) -> (B, *S, C)."""
        size = x.shape[1:-1]
        n = len(size)
        window, shift = effective_window(size, self.window, self.shift)
        padded = [s + (-s) % w for s, w in zip(size, window, strict=True)]
        if padded != list(size):
            # F.pad lists the last dimension first: channels (none), then S backwards.
            ends = [p - s for s, p in zip(size, padded, strict=True)][::-1]
            x = F.pad(x, [0, 0, *(v for end in ends for v in (0, end))])
        dims = tuple(range(1, n + 1))
        if any(shift):
            x = torch.roll(x, [-s for s in shift], dims=dims)
        blocked = _blocked_pairs(size, padded, window, shift, x.device)
        out = window_reverse(
            self._attend(window_partition(x, window), window, blocked), window, padded
        )
        if any(shift):
            out = torch.roll(out, list(shift), dims=dims)
        return out[(slice(None), *(slice(0, s) for s in size))]

    def _attend(self, windows: Tensor, window: tuple[int, ...], blocked: Tensor | None) -> Tensor:
        """(B * nW, N, C) tokens -> attended (B * nW, N, C); ``blocked`` (nW, N, N) or None."""
        bnw, n, c = windows.shape
        q, k, v = self.qkv(windows).view(bnw, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        index = self.bias_index
        if window != self.window:
            index = relative_position_index(window, self.window).to(windows.device)
        bias = self.bias_table[index].permute(2, 0, 1)  # (heads, N, N)
        if blocked is not None:
            # Group the windows of each batch element so that the (nW, ...) mask broadcasts.
            nw = blocked.shape[0]
            q, k, v = (t.reshape(-1, nw, self.heads, n, t.shape[-1]) for t in (q, k, v))
            bias = torch.where(blocked[:, None], MASK_VALUE, bias)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.reshape(bnw, self.heads, n, -1).transpose(1, 2).reshape(bnw, n, c))


class MixFFN(nn.Module):
    """SegFormer's Mix-FFN on channels-last (B, *S, C): Linear C -> hidden, depthwise 3x3 (2D)
    or 3x3x3 (3D) conv, GELU, Linear hidden -> C."""

    def __init__(self, dim: int, hidden: int, spatial_dims: int) -> None:
        super().__init__()
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = conv(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, *S, C) -> (B, *S, C)."""
        x = self.dwconv(self.fc1(x).movedim(-1, 1)).movedim(1, -1)
        return self.fc2(F.gelu(x))


class WindowTransformerLayer(nn.Module):
    """x + WindowAttention(LN(x)), then x + MixFFN(LN(x)), on (B, C, H, W) or (B, C, T, H, W).

    ``hidden`` (default 4 * dim) is the Mix-FFN width. ``shared_norm=True`` uses one LayerNorm
    for both sub-blocks, as the official SSP layer does (its parameter count: 2 * dim fewer). The
    default gives each sub-block its own norm, as Swin and SegFormer do: the FFN's input has the
    attention output added, so its statistics differ, and one affine pair has to serve both.
    """

    def __init__(
        self,
        dim: int,
        window: Sequence[int],
        shift: Sequence[int] | None = None,
        heads: int = 1,
        hidden: int | None = None,
        shared_norm: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, shift, heads)
        self.norm2 = self.norm1 if shared_norm else nn.LayerNorm(dim)
        self.ffn = MixFFN(dim, 4 * dim if hidden is None else hidden, len(window))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, *S) -> (B, C, *S)."""
        x = x.movedim(1, -1)
        x = x + self.attn(self.norm1(x))
        x = x + self.ffn(self.norm2(x))
        return x.movedim(-1, 1)
