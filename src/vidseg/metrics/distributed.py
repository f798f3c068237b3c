"""Summing confusion matrices over the processes of a ``torch.distributed`` job."""

from __future__ import annotations

import logging
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

Conf = TypeVar("Conf", np.ndarray, torch.Tensor)


def _is_integer_dtype(conf: np.ndarray | torch.Tensor) -> bool:
    if isinstance(conf, np.ndarray):
        return np.issubdtype(conf.dtype, np.integer)
    return not (conf.dtype.is_floating_point or conf.dtype.is_complex or conf.dtype == torch.bool)


def _collective_device(group: dist.ProcessGroup | None) -> torch.device:
    # NCCL only moves CUDA tensors; gloo and MPI want CPU tensors, and a mixed "cpu:gloo,cuda:nccl"
    # group routes CPU tensors through gloo.
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_confusion(conf: Conf, group: dist.ProcessGroup | None = None) -> Conf:
    """Sum an integer (C, C) confusion matrix over all ranks of ``group`` (default: the world).

    Returns an int64 matrix of the same kind as ``conf`` (NumPy array, or tensor on ``conf``'s
    device); the input is never modified. Without an initialised process group this is the identity
    (up to the int64 cast). Every rank must call it with a matrix of the same shape.
    """
    if not isinstance(conf, np.ndarray | torch.Tensor):
        raise TypeError(
            f"a confusion matrix must be a NumPy array or a torch tensor, got {type(conf).__name__}"
        )
    if not _is_integer_dtype(conf):
        raise TypeError(
            f"a confusion matrix must hold integer counts, got dtype {conf.dtype}; summing float "
            "counts across ranks would lose pixels on long videos"
        )
    if not (dist.is_available() and dist.is_initialized()):
        return conf.astype(np.int64, copy=False) if isinstance(conf, np.ndarray) else conf.long()

    if isinstance(conf, np.ndarray):
        local = torch.from_numpy(np.ascontiguousarray(conf, dtype=np.int64))
    else:
        local = conf.detach()
    # Always copy: all_reduce works in place and the caller's matrix must stay its local count.
    buf = local.to(device=_collective_device(group), dtype=torch.int64, copy=True).contiguous()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
    log.debug(
        "summed a %s confusion matrix over %d ranks", tuple(buf.shape), dist.get_world_size(group)
    )
    if isinstance(conf, np.ndarray):
        return buf.cpu().numpy()
    return buf.to(conf.device)
