"""Class tables: names, palette colours and the ignore label."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassInfo:
    """One semantic class: its name and the RGB colour used to draw it."""

    name: str
    color: tuple[int, int, int]


# The 8 classes of the SSP UAVid task (UAVid + VDD labels), in SSP's train-id order, with the
# colours of SSP's visualisation palette; UAVid's background clutter is the ignore label.
UAVID_SSP_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo("road", (128, 0, 128)),
    ClassInfo("low vegetation", (112, 148, 32)),
    ClassInfo("tree", (64, 64, 0)),
    ClassInfo("human", (255, 16, 255)),
    ClassInfo("vehicle", (0, 128, 128)),
    ClassInfo("water", (0, 0, 255)),
    ClassInfo("building", (255, 0, 0)),
    ClassInfo("roof", (64, 160, 120)),
)

# Colour drawn for the ignore label (UAVid's clutter is black).
IGNORE_COLOR = (0, 0, 0)


def class_palette(classes: tuple[ClassInfo, ...] | list[ClassInfo]) -> np.ndarray:
    """(C, 3) ``uint8`` RGB colours of the classes, row = class id."""
    return np.array([c.color for c in classes], np.uint8).reshape(len(classes), 3)


def palette_lut(classes: tuple[ClassInfo, ...] | list[ClassInfo]) -> np.ndarray:
    """A (256, 3) ``uint8`` lookup table: class id -> RGB; unknown ids and ignore are black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[IGNORE_INDEX] = IGNORE_COLOR
    lut[: len(classes)] = class_palette(classes)
    return lut


def colorize(labels: np.ndarray, classes: tuple[ClassInfo, ...] | list[ClassInfo]) -> np.ndarray:
    """Map an HxW ``uint8`` class-id image to an HxWx3 RGB picture."""
    return palette_lut(classes)[labels]
