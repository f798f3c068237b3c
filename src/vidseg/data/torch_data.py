"""PyTorch datasets over sample indexes, deterministic under any number of DataLoader workers.

An item's randomness depends only on (seed, epoch, index): ``np.random.default_rng([seed, epoch,
index])`` feeds the transform, so batches are identical for 0 or N workers and any start method.
The epoch lives in a shared-memory tensor, so ``set_epoch`` also reaches persistent workers.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from vidseg.data.classes import IGNORE_INDEX
from vidseg.data.folder import Clip
from vidseg.data.samples import SampleRef
from vidseg.data.transforms import Transform, VideoSample

if TYPE_CHECKING:
    from vidseg.geometry.registration import Registrar


class ClipSampleDataset(Dataset[dict[str, Any]]):
    """Load, transform and tensorise the samples ``samples`` of ``dataset``.

    An item is a dict (T = frames per sample, oldest first, the last is the target):

    - ``frames``: uint8 (T, 3, H, W) RGB, not normalised (models normalise);
    - ``labels``: int64 (T, H, W), ignore_index where a frame is unlabelled; ``label_mask``:
      bool (T,), True where a label was loaded (only with ``load_labels``);
    - ``homographies``: float64 (T-1, 3, 3), entry i maps frame i to frame i+1, identity where
      missing; ``homography_mask``: bool (T-1,) (only with ``load_homographies``);
    - ``flows``: float32 (T-1, 2, H, W), entry i is the flow frame i+1 -> frame i (dx, dy), zero
      where missing; ``flow_mask``: bool (T-1,) (only with ``load_flows``);
    - ``affine``: float64 (3, 3), the map from the clip's native pixel coordinates to the
      item's (the product of the transform's geometric ops);
    - ``clip_id``: str; ``frame_numbers``: int64 (T,); ``index``: int (position in ``samples``).

    ``registrar`` (a :class:`~vidseg.geometry.Registrar`, with ``load_homographies``) registers
    each adjacent pair of raw frames (in the worker, through its cache if it has one) instead
    of reading the clip's stored homographies; the transform then moves them analytically.
    """

    def __init__(
        self,
        dataset: Sequence[Clip],
        samples: Sequence[SampleRef],
        transform: Transform | None = None,
        *,
        seed: int = 0,
        load_labels: bool = True,
        load_homographies: bool = False,
        load_flows: bool = False,
        registrar: Registrar | None = None,
    ) -> None:
        self.dataset = dataset
        self.samples = samples
        self.transform = transform
        self.seed = seed
        self.load_labels = load_labels
        self.load_homographies = load_homographies
        self.load_flows = load_flows
        self.registrar = registrar
        self.ignore_index = int(getattr(dataset, "ignore_index", IGNORE_INDEX))
        # Shared memory: DataLoader workers (persistent ones included) see set_epoch updates.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations the next items get; call before iterating."""
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> VideoSample:
        """Read sample ``index`` from disk, untransformed."""
        ref = self.samples[index]
        clip = self.dataset[ref.clip]
        frames = ref.frames
        pairs = list(itertools.pairwise(range(len(frames))))
        images = [clip.image(n) for n in frames]
        return VideoSample(
            frames=images,
            labels=[clip.label(n) if self.load_labels else None for n in frames],
            # The clip stores n-1 -> n data, which is the pair's only when the frames are adjacent.
            homographies=[
                self._homography(clip, frames[j], (images[i], images[j]))
                if self.load_homographies and frames[j] == frames[i] + 1
                else None
                for i, j in pairs
            ],
            flows=[
                clip.flow(frames[j]) if self.load_flows and frames[j] == frames[i] + 1 else None
                for i, j in pairs
            ],
            clip_id=clip.id,
            frame_numbers=tuple(frames),
        )

    def _homography(
        self, clip: Clip, n: int, images: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray | None:
        if self.registrar is None:
            return clip.homography(n)
        # The frames are already read: registration does not decode them again.
        return self.registrar.pair(clip, n, images)[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.samples):
            raise IndexError(f"sample index {index} out of range 0..{len(self.samples) - 1}")
        sample = self.load(index)
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            sample = self.transform(sample, rng)
        return self.to_tensors(sample, index)

    def to_tensors(self, sample: VideoSample, index: int) -> dict[str, Any]:
        """Stack a sample into the item layout described in the class docstring."""
        h, w = sample.size
        pairs = len(sample.frames) - 1
        item: dict[str, Any] = {
            "frames": torch.from_numpy(np.stack(sample.frames)).permute(0, 3, 1, 2).contiguous(),
        }
        if self.load_labels:
            labels = np.full((len(sample.labels), h, w), self.ignore_index, np.int64)
            for i, label in enumerate(sample.labels):
                if label is not None:
                    labels[i] = label
            item["labels"] = torch.from_numpy(labels)
            item["label_mask"] = torch.tensor([lab is not None for lab in sample.labels])
        if self.load_homographies:
            homs = np.tile(np.eye(3), (pairs, 1, 1))
            for i, hom in enumerate(sample.homographies):
                if hom is not None:
                    homs[i] = hom
            item["homographies"] = torch.from_numpy(homs)
            item["homography_mask"] = torch.tensor(
                [hom is not None for hom in sample.homographies], dtype=torch.bool
            )
        if self.load_flows:
            flows = np.zeros((pairs, 2, h, w), np.float32)
            for i, flow in enumerate(sample.flows):
                if flow is not None:
                    flows[i] = flow.transpose(2, 0, 1)
            item["flows"] = torch.from_numpy(flows)
            item["flow_mask"] = torch.tensor(
                [flow is not None for flow in sample.flows], dtype=torch.bool
            )
        item["affine"] = torch.from_numpy(np.asarray(sample.affine, dtype=np.float64))
        item["clip_id"] = sample.clip_id
        item["frame_numbers"] = torch.tensor(sample.frame_numbers, dtype=torch.int64)
        item["index"] = index
        return item


def collate_samples(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of ``batch`` items along a new dim 0; strings become lists, ints int64."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, Any] = {}
    for key, first in batch[0].items():
        values = [item[key] for item in batch]
        if isinstance(first, torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                clips = ", ".join(f"{item['clip_id']}: {tuple(item[key].shape)}" for item in batch)
                raise ValueError(
                    f"cannot batch '{key}' of different shapes ({clips}); "
                    "add a Resize or crop transform"
                )
            out[key] = torch.stack(values)
        elif isinstance(first, int):
            out[key] = torch.tensor(values, dtype=torch.int64)
        else:
            out[key] = values
    return out


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker setup: OpenCV runs sequentially and torch on one thread per worker.

    ``cv2.setNumThreads(0)`` (sequential), not 1: in a forked worker whose parent had already
    used OpenCV's thread pool, ``setNumThreads(1)`` waits for pool threads that do not exist in
    the child and hangs (seen with OpenCV 5.0's pthreads backend in most forks).
    """
    cv2.setNumThreads(0)
    torch.set_num_threads(1)
