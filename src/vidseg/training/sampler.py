"""Batches of a global batch split over ranks, reproducible per epoch and resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this rank's share of each global batch of an epoch's permutation of ``range(n)``.

    The permutation depends only on ``(seed, epoch)``, so N processes with ``global_batch / N``
    samples each see exactly the samples one process would see with ``global_batch``. Incomplete
    last batches are dropped (every step has the same global batch). ``set_start(k)`` skips the
    first ``k`` batches of the epoch (resuming mid-epoch).
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} ranks")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        self.n = n
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip its first ``start`` batches."""
        if not 0 <= start <= self.batches_per_epoch:
            raise ValueError(f"start batch {start} outside [0, {self.batches_per_epoch}]")
        self.epoch = epoch
        self.start = start

    def order(self) -> np.ndarray:
        """The epoch's sample order (all ranks)."""
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order()
        for b in range(self.start, self.batches_per_epoch):
            first = b * self.global_batch + self.rank * self.local_batch
            yield order[first : first + self.local_batch].tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start
