"""The one class palette of edgeseg (layer 0, numpy only: the robot runtime imports it).

Masks in validation overlays, report legends, the robot's ``edgeseg run`` overlays and the
synthetic data set's classes.json all take their colours from ``class_palette``, so a
class has the same colour everywhere. ``DISAGREEMENT_COLOUR`` marks pixels where two
models disagree; it is kept away from every palette colour so it cannot pass for a class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ConfigError

MAX_CLASSES = 256  # a uint8 mask
# Cityscapes colours for the first 19 classes: the usual look of a street-scene mask.
CITYSCAPES: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
# Cyan, not magenta: Cityscapes' sidewalk (244, 35, 232) is within 35 of magenta in every channel.
DISAGREEMENT_COLOUR: tuple[int, int, int] = (0, 255, 255)
DISAGREEMENT_NAME = "cyan"
MIN_DISTANCE = 40  # generated colours stay more than this (max over channels) from DISAGREEMENT_COLOUR
_RESERVED = {(0, 0, 0), (255, 255, 255)}  # black: ignore/unknown labels; white: panel spacers


def _bit_spread(value: int) -> tuple[int, int, int]:
    """Spread the bits of ``value`` over the high bits of R, G and B (the PASCAL VOC scheme)."""
    r = g = b = 0
    for shift in range(8):
        r |= ((value >> 0) & 1) << (7 - shift)
        g |= ((value >> 1) & 1) << (7 - shift)
        b |= ((value >> 2) & 1) << (7 - shift)
        value >>= 3
    return r, g, b


def voc_colours(count: int) -> list[tuple[int, int, int]]:
    """The Pascal VOC colour map: class ``k`` is ``_bit_spread(k)`` (background black, as VOC draws it)."""
    return [_bit_spread(value) for value in range(count)]


def _far_from_disagreement(colour: tuple[int, int, int]) -> bool:
    return max(abs(a - b) for a, b in zip(colour, DISAGREEMENT_COLOUR)) > MIN_DISTANCE


def _generated(num_classes: int) -> list[tuple[int, int, int]]:
    colours = list(CITYSCAPES[:num_classes])
    taken = set(colours) | _RESERVED
    value = 1
    while len(colours) < num_classes:
        colour = _bit_spread(value)
        value += 1
        if colour not in taken and _far_from_disagreement(colour):
            colours.append(colour)
            taken.add(colour)
    return colours


def _checked(colours: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    out = []
    for index, colour in enumerate(colours):
        values = tuple(int(c) for c in colour)
        if len(values) != 3 or not all(0 <= c <= 255 for c in values):
            raise ConfigError(f"class {index} has a bad colour", expected="[r, g, b] with values 0..255",
                              found=repr(list(colour)), fix="fix the colour in classes.json")
        out.append((values[0], values[1], values[2]))
    return out


def class_palette(num_classes: int, classes_json_colours: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """``num_classes x 3`` uint8 colours, distinct for up to 256 classes.

    Colours given by a data set's classes.json win, index by index; classes beyond them get
    the generated palette (Cityscapes first, then bit-spread colours).
    """
    if not 0 <= num_classes <= MAX_CLASSES:
        raise ConfigError("unsupported number of classes", expected=f"0..{MAX_CLASSES}", found=str(num_classes))
    colours = _generated(num_classes)
    given = _checked(classes_json_colours or [])[:num_classes]
    colours[: len(given)] = given
    return np.asarray(colours, dtype=np.uint8).reshape(-1, 3)


def stored_colours(value: Any, num_classes: int) -> list[list[int]]:
    """Class colours as a checkpoint or ONNX metadata stores them ([[r, g, b], ...], one per class), or []
    when absent or malformed: colours are cosmetic, ``class_palette`` fills in."""
    ok = isinstance(value, (list, tuple)) and len(value) == num_classes and all(
        isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
        for c in value)
    return [[int(v) for v in c] for c in value] if ok else []


def hex_colour(colour: Sequence[int]) -> str:
    """(r, g, b) -> ``#rrggbb`` (legends, report tables)."""
    return "#" + "".join(f"{int(c):02x}" for c in colour)
