"""Sample builders: which frames of which clip form one training or evaluation sample.

They only look at the clips' indexes (no image I/O). A sample whose frames do not all exist in
the same clip is skipped and counted; another frame is never substituted and nothing wraps around.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

from vidseg.data.folder import Clip

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleRef:
    """Frames ``frames`` (oldest -> newest, the last one is the target) of clip ``clip``.

    ``clip`` is the position of the clip in its dataset, not its id.
    """

    clip: int
    frames: tuple[int, ...]

    @property
    def target(self) -> int:
        return self.frames[-1]


@dataclass
class SampleIndex(Sequence[SampleRef]):
    """The samples kept, plus the number and (clip id, target frame) of those skipped."""

    samples: list[SampleRef]
    skipped: int = 0
    skipped_refs: list[tuple[str, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    @overload
    def __getitem__(self, i: int) -> SampleRef: ...
    @overload
    def __getitem__(self, i: slice) -> list[SampleRef]: ...
    def __getitem__(self, i: int | slice) -> SampleRef | list[SampleRef]:
        return self.samples[i]

    def __iter__(self) -> Iterator[SampleRef]:
        return iter(self.samples)


def _window(clip: Clip, n: int, num_prev: int) -> tuple[int, ...] | None:
    frames = tuple(range(n - num_prev, n + 1))
    return frames if all(clip.has_frame(f) for f in frames) else None


def labelled_samples(dataset: Sequence[Clip], num_prev: int = 1) -> SampleIndex:
    """One sample per labelled frame n: frames (n - num_prev, ..., n - 1, n) of the same clip.

    A labelled frame whose ``num_prev`` predecessors are not all present is skipped and counted.
    ``num_prev = 0`` gives single-frame samples.
    """
    if num_prev < 0:
        raise ValueError(f"num_prev must be >= 0, got {num_prev}")
    samples: list[SampleRef] = []
    skipped: list[tuple[str, int]] = []
    for ci, clip in enumerate(dataset):
        for n in clip.labelled_frames:
            frames = _window(clip, n, num_prev)
            if frames is None:
                skipped.append((clip.id, n))
            else:
                samples.append(SampleRef(ci, frames))
    index = SampleIndex(samples, len(skipped), skipped)
    logger.info(
        "labelled samples (num_prev=%d): %d from %d clips, %d skipped (previous frames missing)",
        num_prev,
        len(samples),
        len(dataset),
        len(skipped),
    )
    return index


def pair_samples(
    dataset: Sequence[Clip], every: int = 1, labelled_only: bool = False
) -> SampleIndex:
    """Consecutive pairs (n - 1, n) of the same clip, both frames present.

    Candidate targets are all frames (or only labelled ones with ``labelled_only``); a candidate
    without frame n - 1 is skipped and counted. ``every = k`` then keeps every k-th remaining
    pair of each clip, starting with the first.
    """
    return window_samples(dataset, 1, every=every, labelled_only=labelled_only)


def window_samples(
    dataset: Sequence[Clip], num_prev: int, every: int = 1, labelled_only: bool = False
) -> SampleIndex:
    """Windows (n - num_prev, ..., n) of consecutive frames of the same clip, all present.

    Candidate targets n are all frames (or only labelled ones with ``labelled_only``); one whose
    window is incomplete is skipped and counted. ``every = k`` then keeps every k-th remaining
    window of each clip, starting with the first (k = 2, num_prev = 1: the official KD samples,
    targets at clip positions 1, 3, 5, ...).
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if num_prev < 0:
        raise ValueError(f"num_prev must be >= 0, got {num_prev}")
    samples: list[SampleRef] = []
    skipped: list[tuple[str, int]] = []
    for ci, clip in enumerate(dataset):
        eligible: list[SampleRef] = []
        for n in clip.labelled_frames if labelled_only else clip.frames:
            frames = _window(clip, n, num_prev)
            if frames is None:
                skipped.append((clip.id, n))
            else:
                eligible.append(SampleRef(ci, frames))
        samples.extend(eligible[::every])
    index = SampleIndex(samples, len(skipped), skipped)
    logger.info(
        "frame windows (num_prev=%d, every=%d%s): %d from %d clips, %d skipped (previous "
        "frames missing)",
        num_prev,
        every,
        ", labelled only" if labelled_only else "",
        len(samples),
        len(dataset),
        len(skipped),
    )
    return index
