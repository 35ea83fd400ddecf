"""Tiny public-dataset trees in their real on-disk layouts (Cityscapes, CamVid, VOC, ADE20K), written with PIL.

Every mask is vertical bands of known raw label values (``BANDS[kind]``), 64x128 like the images, so a test
can check the mapping pixel by pixel: band k covers columns ``k * width // n`` to ``(k + 1) * width // n``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HEIGHT, WIDTH = 64, 128
# raw mask values written into every mask of a kind, one band each
BANDS = {
    "cityscapes": (7, 26, 0, 8, 33, 255),  # road, car, unlabeled, sidewalk, bicycle, license plate (-1)
    "camvid": (0, 3, 8, 11),  # Sky, Road, Car, void
    "voc": (0, 15, 255, 7),  # background, person, border, car
    "ade20k": (0, 1, 3, 150),  # other, wall, sky, flag
}

# the train ids those raw values become under each dataset's official table (255 = ignore)
MAPPED = {
    "cityscapes": (0, 13, 255, 1, 18, 255),  # road, car, ignore (unlabeled), sidewalk, bicycle, ignore (-1)
    "camvid": (0, 3, 8, 255),  # void (11) ignored
    "voc": (0, 15, 255, 7),  # border 255 stays ignored
    "ade20k": (255, 0, 2, 149),  # 0 = other ignored, the rest shifted down by one
}


def bands(values: tuple[int, ...], height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    for k, value in enumerate(values):
        mask[:, k * width // len(values):(k + 1) * width // len(values)] = value
    return mask


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _save(path: Path, array: np.ndarray, palette: list[int] | None = None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if palette is not None:
        image = image.convert("P")
        image.putpalette(palette)
        image.putdata(array.reshape(-1).tolist())  # convert("P") re-quantises: put the indices back
    image.save(path)
    return path


def write_cityscapes(root: Path, counts: dict[str, int] | None = None, city: str = "aachen") -> Path:
    for split, count in (counts or {"train": 2, "val": 2}).items():
        for i in range(count):
            base = f"{city}_000000_{i:06d}"
            _save(root / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png", _image(i))
            _save(root / "gtFine" / split / city / f"{base}_gtFine_labelIds.png", bands(BANDS["cityscapes"]))
    return root


def write_camvid(root: Path, counts: dict[str, int] | None = None) -> Path:
    for split, count in (counts or {"train": 2, "val": 2, "test": 1}).items():
        for i in range(count):
            name = f"0001TP_{i:06d}.png"
            _save(root / split / name, _image(i))
            _save(root / f"{split}annot" / name, bands(BANDS["camvid"]))
    return root


def write_voc(root: Path, counts: dict[str, int] | None = None) -> Path:
    """ROOT = VOCdevkit/VOC2012 under ``root``; masks are palette PNGs (the VOC colour map)."""
    from edgeseg.palette import voc_colours

    base = root / "VOCdevkit" / "VOC2012"
    palette = [c for colour in voc_colours(256) for c in colour]
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    start = 0
    for split, count in (counts or {"train": 2, "val": 2}).items():
        ids = [f"2007_{start + i:06d}" for i in range(count)]
        start += count
        for i, name in enumerate(ids):
            _save(base / "JPEGImages" / f"{name}.jpg", _image(i))
            _save(base / "SegmentationClass" / f"{name}.png", bands(BANDS["voc"]), palette)
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return base


def write_ade20k(root: Path, counts: dict[str, int] | None = None) -> Path:
    base = root / "ADEChallengeData2016"
    for split, count in (counts or {"training": 2, "validation": 2}).items():
        for i in range(count):
            name = f"ADE_{'train' if split == 'training' else 'val'}_{i + 1:08d}"
            _save(base / "images" / split / f"{name}.jpg", _image(i))
            _save(base / "annotations" / split / f"{name}.png", bands(BANDS["ade20k"]))
    return base


WRITERS = {"cityscapes": write_cityscapes, "camvid": write_camvid, "voc": write_voc, "ade20k": write_ade20k}
