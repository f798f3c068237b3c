"""Synthetic aerial video world with exact ground truth (labels, homographies, flow)."""

from vidseg.data.synth.config import SynthConfig, make_config
from vidseg.data.synth.generate import (
    FOOTPRINT_M,
    SynthFrame,
    SynthSummary,
    is_labelled,
    iter_clip,
    synthesize,
    synthesize_with_summary,
)

__all__ = [
    "FOOTPRINT_M",
    "SynthConfig",
    "SynthFrame",
    "SynthSummary",
    "is_labelled",
    "iter_clip",
    "make_config",
    "synthesize",
    "synthesize_with_summary",
]
