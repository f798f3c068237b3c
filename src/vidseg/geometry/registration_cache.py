"""On-disk cache of registration results: one small JSON file per frame pair.

Layout: ``ROOT/<settings key>/<clip id, %-quoted>/<prev>-<cur>.json`` holding the homography
(``prev -> cur``, float64, written with round-trip precision) and the registration info, plus
``ROOT/<settings key>/settings.json`` recording the settings that made them.

One file per pair (rather than one per clip) because several DataLoader workers fill the cache at
once: each file is written whole to a temporary name and renamed into place, so a reader sees
either nothing or a complete entry, and two workers computing the same pair simply write the same
result twice. A per-clip file would need a lock or a read-modify-write that loses concurrent
updates. A cache directory belongs to one dataset: entries are keyed by clip id and frame numbers,
not by image content.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from vidseg.errors import DataError
from vidseg.utils.io import atomic_write

CACHE_FORMAT = 1


class HomographyCache:
    """Homographies and their info per (settings key, clip id, frame pair), under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"HomographyCache({str(self.root)!r})"

    def path(self, key: str, clip_id: str, prev: int, cur: int) -> Path:
        """File of the entry for frames ``prev -> cur`` of ``clip_id`` under settings ``key``."""
        return self.root / key / quote(clip_id, safe="-_.") / f"{prev}-{cur}.json"

    def load(
        self, key: str, clip_id: str, prev: int, cur: int
    ) -> tuple[np.ndarray, dict[str, Any]] | None:
        """``(H, info dict)`` of a stored pair, None if absent; a corrupt file raises DataError."""
        path = self.path(key, clip_id, prev, cur)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            entry = json.loads(text)
            if entry.get("format") != CACHE_FORMAT:
                raise ValueError(f"format {entry.get('format')!r}, expected {CACHE_FORMAT}")
            h = np.asarray(entry["h"], np.float64)
            if h.shape != (3, 3) or not np.all(np.isfinite(h)):
                raise ValueError(f"'h' is not a finite 3x3 matrix (shape {h.shape})")
            info = entry["info"]
            if not isinstance(info, dict):
                raise ValueError("'info' is not a mapping")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(
                f"{path}: corrupt homography cache entry ({exc}); delete the file to recompute it"
            ) from None
        return h, info

    def store(
        self, key: str, clip_id: str, prev: int, cur: int, h: np.ndarray, info: dict[str, Any]
    ) -> Path:
        """Write one entry atomically (and the settings record of ``key`` on first use)."""
        path = self.path(key, clip_id, prev, cur)
        entry = {
            "format": CACHE_FORMAT,
            "clip": clip_id,
            "prev": prev,
            "cur": cur,
            "h": np.asarray(h, np.float64).tolist(),
            "info": info,
        }
        with atomic_write(path, "w") as handle:
            json.dump(entry, handle)
        return path

    def write_settings(self, key: str, settings: dict[str, Any]) -> None:
        """Record the settings behind ``key`` once, so a cache folder says what made it."""
        path = self.root / key / "settings.json"
        if not path.is_file():
            with atomic_write(path, "w") as handle:
                json.dump(settings, handle, indent=2, sort_keys=True)
