"""Logging and progress bars on one shared rich console (stderr), so they never garble stdout."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

console = Console(stderr=True)


def setup_logging(level: int | str = logging.INFO) -> None:
    """Route the ``vidseg`` loggers to the shared console (idempotent)."""
    root = logging.getLogger("vidseg")
    root.setLevel(level)
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        handler = RichHandler(console=console, show_path=False, show_time=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.propagate = False


def progress_bar(*extra_columns: TextColumn, transient: bool = False) -> Progress:
    """A rich progress bar with count, elapsed time and ETA; extra columns go before the bar."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        *extra_columns,
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not console.is_terminal,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar (shown only on an interactive terminal)."""
    with progress_bar() as progress:
        yield from progress.track(items, total=total, description=description)
