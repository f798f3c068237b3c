"""AdamW with weight decay where it regularises: not on norms, biases or position embeddings."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

# Parameters whose name ends with one of these are embeddings added to the input, not weights
# of a linear map; decaying them pulls them towards zero for no benefit.
NO_DECAY_SUFFIXES = ("pos_embed", "pos_embed_window", "position_embeddings", "position_embedding")


def decays(name: str, param: nn.Parameter) -> bool:
    """Whether ``param`` gets weight decay: matrices and kernels, not 1-D tensors or embeddings."""
    return param.ndim > 1 and not name.endswith(NO_DECAY_SUFFIXES)


def param_groups(
    named: Iterable[tuple[str, nn.Parameter]], weight_decay: float, decay_all: bool = False
) -> list[dict]:
    """Two AdamW groups (with and without decay) over the trainable parameters."""
    decay, no_decay = [], []
    for name, param in named:
        if not param.requires_grad:
            continue
        (decay if decay_all or decays(name, param) else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    decay_all: bool = False,
) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters (see :func:`param_groups`)."""
    groups = param_groups(model.named_parameters(), weight_decay, decay_all)
    return torch.optim.AdamW(groups, lr=lr, betas=betas)
