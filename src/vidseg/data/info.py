"""``dataset.yaml``: the description of a dataset in the clip-folder layout."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidseg.data.classes import IGNORE_INDEX, ClassInfo
from vidseg.errors import DataError
from vidseg.utils.io import read_yaml, write_yaml

DATASET_FILE = "dataset.yaml"


@dataclass(frozen=True)
class DatasetInfo:
    """Name, classes (id = position), ignore label and frame rate of a dataset.

    ``extra`` keeps every other top-level key of ``dataset.yaml`` (for instance the generator
    settings of a synthetic dataset) so that a read-then-write round trip loses nothing.
    """

    name: str
    classes: tuple[ClassInfo, ...]
    ignore_index: int = IGNORE_INDEX
    fps: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "classes": [{"name": c.name, "color": list(c.color)} for c in self.classes],
            "ignore_index": self.ignore_index,
            "fps": self.fps,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = DATASET_FILE) -> DatasetInfo:
        """Validate the parsed YAML of ``dataset.yaml``; errors name ``source`` and the key."""
        if not isinstance(data, dict):
            raise DataError(f"{source}: expected a mapping with keys name, classes, ignore_index")
        for key in ("name", "classes"):
            if key not in data:
                raise DataError(f"{source}: missing key '{key}'")
        raw_classes = data["classes"]
        if not isinstance(raw_classes, list) or not raw_classes:
            raise DataError(f"{source}: 'classes' must be a non-empty list of {{name, color}}")
        classes = tuple(_parse_class(item, i, source) for i, item in enumerate(raw_classes))
        ignore = data.get("ignore_index", IGNORE_INDEX)
        if not isinstance(ignore, int) or isinstance(ignore, bool) or not 0 <= ignore <= 255:
            raise DataError(f"{source}: ignore_index must be an integer in 0..255, got {ignore!r}")
        if ignore < len(classes):
            raise DataError(
                f"{source}: ignore_index {ignore} collides with class id {ignore} "
                f"('{classes[ignore].name}')"
            )
        fps = data.get("fps")
        if fps is not None and (
            isinstance(fps, bool)
            or not isinstance(fps, int | float)
            or not math.isfinite(fps)
            or fps <= 0
        ):
            raise DataError(f"{source}: fps must be a positive number or null, got {fps!r}")
        extra = {
            k: v for k, v in data.items() if k not in {"name", "classes", "ignore_index", "fps"}
        }
        return cls(str(data["name"]), classes, ignore, fps, extra)


def _parse_class(item: Any, index: int, source: str) -> ClassInfo:
    where = f"{source}: classes[{index}]"
    if not isinstance(item, dict) or "name" not in item:
        raise DataError(f"{where}: expected a mapping with 'name' and 'color'")
    color = item.get("color")
    if (
        not isinstance(color, list | tuple)
        or len(color) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color)
    ):
        raise DataError(f"{where}: 'color' must be three integers in 0..255, got {color!r}")
    return ClassInfo(str(item["name"]), (int(color[0]), int(color[1]), int(color[2])))


def read_dataset_info(root: str | os.PathLike[str]) -> DatasetInfo:
    """Read and validate ``ROOT/dataset.yaml``."""
    if not Path(root).is_dir():
        raise DataError(f"dataset root not found: {root}")
    path = Path(root) / DATASET_FILE
    return DatasetInfo.from_dict(read_yaml(path), str(path))


def write_dataset_info(root: str | os.PathLike[str], info: DatasetInfo) -> None:
    """Write ``ROOT/dataset.yaml`` atomically."""
    write_yaml(Path(root) / DATASET_FILE, info.to_dict())
