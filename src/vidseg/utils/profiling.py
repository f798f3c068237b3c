"""Wall time of work done outside the torch graph (OpenCV registration, OpenCV flow), by name.

A video model wraps such calls in :func:`external`; a benchmark opens :func:`recording` around
the frames it times and reads the seconds spent per name, which FLOP counters cannot see::

    with external("registration"):          # inside VideoModel.step
        h = registrar(prev, cur)

    with recording() as rec:                # in the benchmark
        ...stream frames...
    rec.seconds                             # {"registration": 0.84}

Outside :func:`recording`, :func:`external` reads one global and does nothing else. The recorder
is process-wide and thread-safe: work in other threads (a DataLoader thread, a thread pool) is
counted too, so per-name totals can exceed the wall time when threads overlap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

_lock = threading.Lock()
_active: list[Recording] = []


class Recording:
    """Seconds and number of calls per name of the :func:`external` blocks seen while open."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1


class external:
    """Context manager timing one block of work outside the torch graph under ``name``."""

    __slots__ = ("_start", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._start = 0.0

    def __enter__(self) -> external:
        if _active:
            self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not _active or not self._start:
            return
        elapsed = time.perf_counter() - self._start
        self._start = 0.0
        with _lock:
            for rec in _active:
                rec._add(self.name, elapsed)


@contextmanager
def recording() -> Iterator[Recording]:
    """Collect the time of every :func:`external` block, in any thread, until the block ends.

    Recordings may nest; each one sees the blocks that ran while it was open.
    """
    rec = Recording()
    with _lock:
        _active.append(rec)
    try:
        yield rec
    finally:
        with _lock:
            _active.remove(rec)
