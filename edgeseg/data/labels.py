"""Label tables of the public datasets the adapters read (numpy only; Python 3.8).

Each table says how a raw mask value becomes a train id (255 = ignore) and gives the class
names and, where the dataset defines them, its colours. Colours are handed to
``edgeseg.palette.class_palette`` like classes.json colours; a dataset without official
colours (ADE20K) gets the generated palette there.

Sources: Cityscapes from cityscapesScripts' ``helpers/labels.py`` (labelId -> trainId and the
colours of the 19 evaluated classes, which ``palette.CITYSCAPES`` holds); CamVid from the
SegNet tutorial's 11-class CamVid; Pascal VOC 2012 class names in their index order with the
VOC bit-spread colour map; ADE20K SceneParsing from ``objectInfo150`` (the first name of each
entry, in index order 1..150).
"""

from __future__ import annotations

import typing
from collections.abc import Sequence

import numpy as np

from ..metrics import IGNORE_INDEX
from ..palette import CITYSCAPES, voc_colours

Colour = typing.Tuple[int, int, int]

# Cityscapes labelId -> trainId for the 19 evaluated classes; every other labelId (0-6, 9, 10,
# 14-16, 18, 29, 30, and -1, which a uint8 PNG stores as 255) is ignored.
CITYSCAPES_TRAIN_IDS: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)
CAMVID_VOID = 11
CAMVID_COLOURS: tuple[Colour, ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier",
    "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)


def _lut(pairs: dict[int, int], default: int = IGNORE_INDEX) -> np.ndarray:
    table = np.full(256, default, dtype=np.uint8)
    for raw, train_id in pairs.items():
        table[raw] = train_id
    return table


def cityscapes_lut() -> np.ndarray:
    return _lut(CITYSCAPES_TRAIN_IDS)


def camvid_lut() -> np.ndarray:
    """0..10 are the classes, 11 (void) is ignored; anything else stays as it is, so verification names it."""
    table = np.arange(256, dtype=np.uint8)
    table[CAMVID_VOID] = IGNORE_INDEX
    return table


def voc_lut() -> np.ndarray:
    """The palette index is the class; 255 (object borders) is ignored; other values stay, so verification
    names them."""
    return np.arange(256, dtype=np.uint8)


def ade20k_lut() -> np.ndarray:
    """0 ("other") is ignored and 1..150 become 0..149; a value above 150 stays out of range (150..254), so
    verification names it rather than ignoring it."""
    table = (np.arange(256, dtype=np.int64) - 1).astype(np.uint8)
    table[0] = IGNORE_INDEX
    return table


def cityscapes_colours() -> Sequence[Colour]:
    return CITYSCAPES


def voc_class_colours() -> Sequence[Colour]:
    return voc_colours(len(VOC_CLASSES))
