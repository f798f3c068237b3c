"""Shared pieces of the command line: a stricter parser, tables and JSON output."""

from __future__ import annotations

import argparse
import difflib
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vidseg.utils.io import atomic_write

stdout = Console(soft_wrap=True)


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: ...)" to an option's help where the default says something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default in (None, False, argparse.SUPPRESS) or "%(default)" in text:
            return text
        if isinstance(default, tuple | list):
            default = ",".join(str(v) for v in default)
        return f"{text} (default: {default})"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser without prefix abbreviations (``--lab`` never means ``--label-every``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def suggest_unknown(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """One message for unrecognised arguments, with the closest valid option for each."""
    options = sorted(s for s in parser._option_string_actions if s.startswith("--"))
    parts = []
    for arg in unknown:
        name = arg.split("=", 1)[0]
        close = difflib.get_close_matches(name, options, n=1) if name.startswith("-") else []
        parts.append(f"{arg} (did you mean {close[0]}?)" if close else arg)
    return "unrecognized arguments: " + ", ".join(parts)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically (NaN becomes null, as JSON has no NaN)."""
    with atomic_write(path, "w") as handle:
        json.dump(_finite(data), handle, indent=2)
        handle.write("\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage string; '-' for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.{digits}f}"


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    out = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        out.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        out.add_row(*[str(v) for v in row])
    return out


def frame_range(text: str) -> slice:
    """Parse ``START:STOP[:STEP]`` (Python slice syntax over frame positions)."""
    parts = text.split(":")
    if not 1 <= len(parts) <= 3:
        raise argparse.ArgumentTypeError(f"expected START:STOP[:STEP], got {text!r}")
    try:
        nums = [int(p) if p else None for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected START:STOP[:STEP] of integers, got {text!r}"
        ) from None
    if len(nums) == 1:
        return slice(nums[0], nums[0] + 1 if nums[0] is not None else None)
    if len(nums) == 3 and nums[2] is not None and nums[2] < 1:
        raise argparse.ArgumentTypeError(f"STEP must be positive, got {nums[2]}")
    return slice(*nums)
