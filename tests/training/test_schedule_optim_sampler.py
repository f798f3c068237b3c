from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vidseg.training.optim import build_adamw, param_groups
from vidseg.training.sampler import GlobalBatchSampler
from vidseg.training.schedule import lr_factor


def official(step, total, warmup, start=1e-4, final=1e-4):
    # Independent restatement of ssp-method.md §2.5.
    if step < warmup:
        return start + (1 - start) * step / warmup
    progress = (step - warmup) / (total - warmup)
    return final + (1 - final) * (1 + math.cos(math.pi * progress)) / 2


@pytest.mark.parametrize(("run", "scheduled", "expected"), [(200, 250, 0.097), (75, 100, 0.152)])
def test_factor_where_the_official_runs_stop(run, scheduled, expected):
    per_epoch = 37
    step = run * per_epoch
    got = lr_factor(step, total_steps=scheduled * per_epoch, warmup_steps=2 * per_epoch)
    assert got == pytest.approx(expected, abs=5e-4)
    assert got == pytest.approx(official(step, scheduled * per_epoch, 2 * per_epoch), rel=1e-12)


def test_warmup_is_linear_and_cosine_ends_at_final():
    kw = {"total_steps": 100, "warmup_steps": 10, "start": 0.1, "final": 0.01}
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(5, **kw) == pytest.approx(0.55)
    assert lr_factor(10, **kw) == pytest.approx(1.0)
    assert lr_factor(55, **kw) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(100, **kw) == pytest.approx(0.01)
    assert lr_factor(500, **kw) == pytest.approx(0.01)
    assert lr_factor(55, **kw, schedule="poly", power=1.0) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(80, **kw, schedule="constant") == 1.0


def test_no_weight_decay_on_norms_biases_and_position_embeddings():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.norm = nn.LayerNorm(4)
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 2, 2))
            self.frozen = nn.Linear(2, 2)
            self.frozen.requires_grad_(False)

    net = Net()
    decay, no_decay = param_groups(net.named_parameters(), 0.05)
    assert decay["weight_decay"] == 0.05
    assert no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(net.conv.weight)}
    assert {id(p) for p in no_decay["params"]} == {
        id(net.conv.bias),
        id(net.norm.weight),
        id(net.norm.bias),
        id(net.pos_embed),
    }
    (everything,) = param_groups(net.named_parameters(), 0.05, decay_all=True)
    assert len(everything["params"]) == 5
    opt = build_adamw(net, 1e-3, 0.05)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


def test_ranks_split_each_global_batch_of_the_single_process_order():
    single = GlobalBatchSampler(23, 6, seed=3)
    ranks = [GlobalBatchSampler(23, 6, rank=r, world_size=3, seed=3) for r in range(3)]
    for epoch in (0, 1):
        single.set_epoch(epoch)
        for s in ranks:
            s.set_epoch(epoch)
        full = list(single)
        assert len(full) == 3  # 23 // 6: the incomplete batch is dropped
        for b, batch in enumerate(full):
            parts = [list(s)[b] for s in ranks]
            assert [i for part in parts for i in part] == batch
    single.set_epoch(0)
    first = list(single)
    single.set_epoch(1)
    assert list(single) != first
    seen = [i for batch in first for i in batch]
    assert len(seen) == len(set(seen)) == 18  # 3 full batches, no sample twice


def test_resuming_mid_epoch_skips_the_done_batches():
    s = GlobalBatchSampler(20, 4, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=3)
    assert list(s) == full[3:]
    assert len(s) == 2
    with pytest.raises(ValueError, match="start batch 6"):
        s.set_epoch(2, start=6)
