"""Optical flow behind one interface: ``vidseg.flow.build(name, **kw)``.

Estimators: ``dis`` (OpenCV DIS, the CPU default), ``farneback``, ``raft`` and ``raft_small``
(our RAFT, loading the official princeton-vl checkpoints) and ``gt`` (ground-truth flow stored in
a dataset). Conventions and the choice between them: ``docs/motion.md``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidseg.errors import ConfigError
from vidseg.flow.base import FlowEstimator
from vidseg.flow.cache import FlowCache
from vidseg.flow.groundtruth import GroundTruthFlow
from vidseg.flow.metrics import endpoint_error
from vidseg.flow.opencv import DisFlow, FarnebackFlow
from vidseg.flow.raft import RAFT, RaftFlow, build_raft, load_raft, save_raft
from vidseg.models.backbones.base import unknown_name_error


def _raft(**kw: Any) -> FlowEstimator:
    return build_raft(small=False, **kw)


def _raft_small(**kw: Any) -> FlowEstimator:
    return build_raft(small=True, **kw)


ESTIMATORS: dict[str, Callable[..., FlowEstimator]] = {
    "dis": DisFlow,
    "farneback": FarnebackFlow,
    "raft": _raft,
    "raft_small": _raft_small,
    "gt": GroundTruthFlow,
}


def _options(name: str) -> list[str]:
    factory = ESTIMATORS[name]
    target = build_raft if name.startswith("raft") else factory
    params = inspect.signature(target).parameters
    return [p for p in params if p not in ("self", "small")]


def build(name: str, *, cache: str | Path | None = None, **kw: Any) -> FlowEstimator:
    """Build the flow estimator ``name`` with its options ``kw``.

    ``cache``: a folder for :class:`FlowCache` (one per dataset); ``est.pair(clip, a, b)`` then
    computes each flow once. An unknown name or option is a :class:`ConfigError`.
    """
    if name not in ESTIMATORS:
        raise unknown_name_error("flow estimator", name, list(ESTIMATORS), key="flow")
    valid = _options(name)
    for option in kw:
        if option not in valid:
            listed = ", ".join(valid) or "none"
            raise ConfigError(f"flow '{name}' has no option '{option}'; valid: {listed}")
    estimator = ESTIMATORS[name](**kw)
    return FlowCache(estimator, cache) if cache is not None else estimator


__all__ = [
    "ESTIMATORS",
    "RAFT",
    "DisFlow",
    "FarnebackFlow",
    "FlowCache",
    "FlowEstimator",
    "GroundTruthFlow",
    "RaftFlow",
    "build",
    "build_raft",
    "endpoint_error",
    "load_raft",
    "save_raft",
]
