"""Datasets in the clip-folder layout, the synthetic aerial world, samples and augmentations.

Public API (see docs/data-pipeline.md and docs/synthetic-data.md):

- :func:`synthesize` writes a synthetic aerial video dataset with exact ground truth;
- :func:`open_dataset` opens one split of a clip-folder dataset as a sequence of :class:`Clip`;
- :func:`labelled_samples`, :func:`pair_samples` and :func:`window_samples` index training
  samples without wrap-around;
- joint augmentations (:mod:`vidseg.data.transforms`) and :class:`ClipSampleDataset` for PyTorch.
"""

from vidseg.data.classes import IGNORE_INDEX, UAVID_SSP_CLASSES, ClassInfo, colorize
from vidseg.data.folder import Clip, FolderDataset, list_splits, open_dataset
from vidseg.data.info import DatasetInfo, read_dataset_info, write_dataset_info
from vidseg.data.samples import (
    SampleIndex,
    SampleRef,
    labelled_samples,
    pair_samples,
    window_samples,
)
from vidseg.data.synth import SynthConfig, iter_clip, synthesize
from vidseg.data.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    VideoSample,
)

_TORCH_NAMES = ("ClipSampleDataset", "collate_samples", "worker_init_fn")


def __getattr__(name: str):
    # The PyTorch datasets import torch (about a second); load them only when asked for.
    if name in _TORCH_NAMES:
        from vidseg.data import torch_data

        return getattr(torch_data, name)
    raise AttributeError(f"module 'vidseg.data' has no attribute {name!r}")


__all__ = [
    "IGNORE_INDEX",
    "UAVID_SSP_CLASSES",
    "CenterCrop",
    "ClassInfo",
    "Clip",
    "ClipSampleDataset",
    "ColorJitter",
    "Compose",
    "DatasetInfo",
    "FolderDataset",
    "RandomHorizontalFlip",
    "RandomScaleCrop",
    "Resize",
    "SampleIndex",
    "SampleRef",
    "SynthConfig",
    "VideoSample",
    "collate_samples",
    "colorize",
    "iter_clip",
    "labelled_samples",
    "list_splits",
    "open_dataset",
    "pair_samples",
    "read_dataset_info",
    "synthesize",
    "window_samples",
    "worker_init_fn",
    "write_dataset_info",
]
