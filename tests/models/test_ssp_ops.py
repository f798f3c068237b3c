import itertools
import math

import numpy as np
import pytest
import torch

from vidseg.data.synth import iter_clip, make_config
from vidseg.errors import ConfigError
from vidseg.models import ModelConfig, build_segmenter, count_parameters
from vidseg.models.layers import (
    WindowAttention,
    WindowTransformerLayer,
    effective_window,
    window_partition,
    window_reverse,
)
from vidseg.models.ssp import SSP, SSPConfig
from vidseg.models.ssp_ops import MIXING_OPS, build_mixing_op, build_sim_op

NEW_SIM_OPS = ["3dwmsaconv", "3dwmsaconv2", "3dwmsacos"]
NEW_MIXING_OPS = ["3dwmsa", "2dwmsa", "2d_conv", "3d_conv"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: a second OpenMP thread only adds barriers, and on two cores shared with other
    # jobs each barrier can stall (the file takes ~4 s on one thread, up to 30 s on two).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def naive_window_attention(attn: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Token by token, without partition, reverse or masks: a token attends to the (real) tokens
    that share its window of the padded grid rolled by -shift and whose offset to it is the same
    before and after the roll (i.e. did not wrap around); the bias is that of the offset."""
    b, *size, c = x.shape
    window, shift = effective_window(size, attn.window, attn.shift)
    padded = torch.tensor([s + (-s) % w for s, w in zip(size, window, strict=True)])
    heads, d = attn.heads, c // attn.heads
    orig = torch.tensor(list(itertools.product(*(range(s) for s in size))))  # (T, n)
    rolled = (orig - torch.tensor(shift)) % padded
    win = rolled // torch.tensor(window)
    # Bias table row of an offset: mixed radix over the table's (2 * window - 1) extents.
    radix = [2 * w - 1 for w in attn.window]
    strides = torch.tensor([math.prod(radix[i + 1 :]) for i in range(len(radix))])
    q, k, v = attn.qkv(x.reshape(b, -1, c)).view(b, -1, 3, heads, d).unbind(2)  # (B, T, h, d)
    out = torch.empty(b, len(orig), heads, d)
    for i in range(len(orig)):
        offset = orig[i] - orig
        keys = (win == win[i]).all(1) & (offset == rolled[i] - rolled).all(1)
        rows = ((offset[keys] + torch.tensor(attn.window) - 1) * strides).sum(1)
        bias = attn.bias_table[rows].T  # (h, K)
        logits = torch.einsum("bhd,bkhd->bhk", q[:, i], k[:, keys]) * d**-0.5 + bias
        out[:, i] = torch.einsum("bhk,bkhd->bhd", logits.softmax(-1), v[:, keys])
    return attn.proj(out.reshape(b, -1, c)).view(x.shape)


@pytest.mark.parametrize(
    ("size", "window"), [((7, 10), (3, 4)), ((3, 5, 9), (2, 3, 4)), ((2, 6, 8), (2, 3, 4))]
)
def test_window_partition_takes_the_blocks_in_order_and_reverse_undoes_it(size, window):
    x = torch.randn(2, *size, 3)
    cropped = [s - s % w for s, w in zip(size, window, strict=True)]
    x = x[(slice(None), *(slice(0, p) for p in cropped))]
    windows = window_partition(x, window)
    grid = itertools.product(
        range(2), *(range(p // w) for p, w in zip(cropped, window, strict=True))
    )
    for i, (batch, *cell) in enumerate(grid):
        block = x[(batch, *(slice(g * w, (g + 1) * w) for g, w in zip(cell, window, strict=True)))]
        assert torch.equal(windows[i], block.reshape(-1, 3))
    assert torch.equal(window_reverse(windows, window, cropped), x)


@torch.no_grad()
@pytest.mark.parametrize(
    ("size", "window", "shift"),
    [
        ((7, 10), (3, 4), (0, 0)),
        ((7, 10), (3, 4), (1, 2)),
        ((9, 6), (4, 3), (2, 1)),
        ((3, 5, 9), (2, 3, 4), (1, 1, 2)),
        ((2, 8, 5), (2, 3, 2), (0, 2, 1)),
        ((3, 10), (5, 4), (2, 1)),  # h shrinks to 3, unshifted
        ((2, 5, 20), (2, 7, 7), (0, 3, 3)),  # t and h shrink
    ],
)
def test_window_attention_equals_a_naive_per_token_reference(size, window, shift):
    torch.manual_seed(0)
    attn = WindowAttention(6, window, shift, heads=2)
    attn.bias_table.normal_()  # visible biases, so that a wrong offset would show
    x = torch.randn(2, *size, 6)
    torch.testing.assert_close(attn(x), naive_window_attention(attn, x), atol=1e-5, rtol=1e-5)


def test_window_shrinks_to_the_input_and_is_then_not_shifted():
    assert effective_window((2, 5, 20), (2, 7, 7), (0, 3, 3)) == ((2, 5, 7), (0, 0, 3))
    assert effective_window((7, 8), (7, 7), (3, 3)) == ((7, 7), (0, 3))
    # A fully covered input is one window: every token sees every other one.
    attn = WindowAttention(4, (5, 5), (2, 2))
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    attn(x)[0, 0, 0].sum().backward()
    assert (x.grad.abs().sum(-1) > 0).all()


@torch.no_grad()
def test_unshifted_windows_do_not_see_each_other():
    torch.manual_seed(0)
    attn = WindowAttention(4, (3, 4), heads=2)
    x = torch.randn(1, 7, 10, 4)  # windows rows 0-2, 3-5, 6 (+ padding); cols 0-3, 4-7, 8-9
    y = attn(x)
    x2 = x.clone()
    x2[0, 4, 5] += 10  # a token of the window rows 3-5, cols 4-7
    y2 = attn(x2)
    inside = torch.zeros(7, 10, dtype=torch.bool)
    inside[3:6, 4:8] = True
    assert torch.equal(y2[0][~inside], y[0][~inside])
    assert not torch.allclose(y2[0][inside], y[0][inside])


@torch.no_grad()
def test_shifted_windows_mask_tokens_that_wrapped_around():
    torch.manual_seed(0)
    attn = WindowAttention(4, (4, 4), (2, 2))
    x = torch.randn(1, 8, 8, 4)
    y = attn(x)
    # Rolled by -2, the last window (rows 6-7, 0-1) holds rows 6-7 and the wrapped rows 0-1; the
    # mask keeps them apart, so the first two rows do not reach row 7.
    x2 = x.clone()
    x2[0, 0:2] += 10
    assert torch.allclose(attn(x2)[0, 6:8], y[0, 6:8], atol=1e-6)


def test_layer_norms_are_separate_by_default_or_shared():
    separate = WindowTransformerLayer(96, (2, 7, 7), heads=8, hidden=384)
    shared = WindowTransformerLayer(96, (2, 7, 7), heads=8, hidden=384, shared_norm=True)
    assert separate.norm1 is not separate.norm2
    assert shared.norm1 is shared.norm2
    # The official layer (one shared norm) has 126,168 parameters at E = 96.
    assert count_parameters(shared) == 126_168
    assert count_parameters(separate) == 126_168 + 192


@pytest.mark.parametrize("name", ["id", *NEW_MIXING_OPS])
def test_mixing_ops_keep_the_shapes_and_train(name):
    torch.manual_seed(0)
    op = build_mixing_op(name, 3, layers=2)
    prev = torch.randn(2, 3, 11, 13, requires_grad=True)
    cur = torch.randn(2, 3, 11, 13, requires_grad=True)
    new_prev, new_cur = op(prev, cur)
    assert new_prev.shape == new_cur.shape == prev.shape
    if name == "id":
        assert new_prev is prev
        assert new_cur is cur
        return
    (new_prev.square().sum() + new_cur.sum()).backward()
    # Both outputs depend on both inputs: the op mixes the two frames.
    assert prev.grad.abs().sum() > 0
    assert cur.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in op.parameters())


def test_mixing_window_overrides_the_default_and_keeps_the_shift_inside():
    op = build_mixing_op("3dwmsa", 3, layers=1, window=[2, 5, 4])
    attn = op.layers[0].attn
    assert (attn.window, attn.shift) == ((2, 5, 4), (0, 2, 2))
    op = build_mixing_op("2dwmsa", 3)
    assert (op.layers[0].attn.window, op.layers[0].attn.shift) == ((9, 9), (3, 3))
    with pytest.raises(ConfigError, match=r"ssp\.window_size"):
        build_mixing_op("2dwmsa", 3, window=[2, 7, 7])
    assert set(MIXING_OPS) == {"id", *NEW_MIXING_OPS}


@pytest.mark.parametrize(
    ("name", "params"), [("3dwmsaconv", 168_025), ("3dwmsaconv2", 292_633), ("3dwmsacos", 126_360)]
)
def test_window_attention_sim_op_parameter_counts(name, params):
    # The official 167,833 / 292,441 / 126,168 (unused) plus the second LayerNorm (2 * 96).
    assert count_parameters(build_sim_op(name, 96)) == params


@pytest.mark.parametrize("name", NEW_SIM_OPS)
def test_window_attention_sim_ops_stay_in_their_range_and_apply_the_attention(name):
    torch.manual_seed(0)
    op = build_sim_op(name, 16).train()
    prev = torch.randn(2, 16, 9, 10)
    cur = prev + 0.5 * torch.randn(2, 16, 9, 10)
    sim = op(prev, cur)
    assert sim.shape == (2, 1, 9, 10)
    if name == "3dwmsacos":
        assert sim.min() >= 0
        assert sim.max() <= 0.99
        assert sim.max() > 0
    else:
        assert sim.min() > 0
        assert sim.max() < 1
    sim.sum().backward()
    assert op.attention.attn.qkv.weight.grad.abs().sum() > 0


def test_attention_heads_fall_back_to_a_divisor_of_the_width():
    heads = {e: build_sim_op("3dwmsaconv", e).attention.attn.heads for e in (96, 64, 12, 7, 11)}
    assert heads == {96: 8, 64: 8, 12: 6, 7: 7, 11: 1}


@pytest.fixture(scope="module")
def clip():
    """Four consecutive synthetic frames (T, 1, 3, 48, 48) uint8."""
    cfg = make_config(size=48, frames=4, clips=3, val_clips=0, test_clips=0)
    frames = [
        torch.from_numpy(f.image).permute(2, 0, 1)[None]
        for f in iter_clip(cfg, "train", 0, with_flow=False)
    ]
    return torch.stack(frames)


@torch.no_grad()
@pytest.mark.parametrize(
    ("sim_op", "mixing_op"),
    [*(("conv", m) for m in NEW_MIXING_OPS), *((s, "id") for s in NEW_SIM_OPS)],
)
def test_ssp_streaming_equals_the_offline_forward_with_the_new_ops(clip, sim_op, mixing_op):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tiny_cnn", head="upernet", head_channels=16, dropout=0.0)
    segmenter = build_segmenter(cfg, 5)
    torch.nn.init.normal_(segmenter.head.classifier.weight, std=3.0)
    config = SSPConfig(sim_op=sim_op, mixing_op=mixing_op, registration={"method": "orb"})
    model = SSP(segmenter, config).eval()
    raw = [f.permute(0, 2, 3, 1).numpy() for f in clip]
    homs = np.stack([model.registrar.batch(a, b)[0] for a, b in itertools.pairwise(raw)])
    offline = model.forward_offline(clip, homs)
    state = model.init_state()
    for t, frame in enumerate(clip):
        logits, state = model.step(frame, state)
        torch.testing.assert_close(logits, offline[t], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(offline[-1], segmenter(clip[-1]), atol=1e-3)
