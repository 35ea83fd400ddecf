"""The folder dataset format (numpy + edgeseg.images; no torch).

    DIR/images/<stem>.jpg|png     RGB images
    DIR/masks/<stem>.png          single-channel class indices, 255 = ignore
    DIR/classes.json              optional: {"classes": [{"name": ..., "color": [r, g, b]}, ...]}

Splits: sub-folders (``DIR/train/images``, ``DIR/val/masks``, ...) or stem lists
(``DIR/train.txt`` / ``DIR/val.txt``, one stem per line, naming files in ``DIR/images``).
A split folder without its own classes.json uses the one in ``DIR``.

``open_folder_dataset`` checks every pair up front so that training never dies
half-way through an epoch: missing masks, undecodable files, image/mask size
mismatches and labels outside ``[0, num_classes)`` (other than 255) are reported by
name with a count. Missing and unreadable files are skipped only with ``skip_bad=True``
(and listed in ``skipped``); size and label errors always stop, since they mean the
data or ``num_classes`` is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from ..fileio import read_json
from ..images import list_images, load_image, load_mask
from ..metrics import IGNORE_INDEX

MAX_NAMED = 5  # how many file names an error message lists before "... and N more"


@dataclass(frozen=True)
class Sample:
    stem: str
    image: Path
    mask: Path


@dataclass
class FolderDataset:
    """Image/mask pairs with their classes: the folder format, or a public dataset read by
    ``edgeseg.data.adapters`` (whose masks hold raw ids that ``label_map`` turns into train ids)."""

    root: Path
    samples: list[Sample]
    classes: list[str]
    colors: list[tuple[int, int, int]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why) left out by skip_bad
    label_map: np.ndarray | None = None  # 256 uint8: raw mask value -> train id; None: masks hold train ids
    name: str = ""  # what the commands print, e.g. "cityscapes val"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 HxWx3 RGB image, uint8 HxW mask in train ids) of sample ``index``."""
        sample = self.samples[index]
        return load_image(sample.image), self.read_mask(sample.mask)

    def read_mask(self, path: Path) -> np.ndarray:
        """A mask file of this dataset in train ids (255 = ignore)."""
        mask = load_mask(path)
        return mask if self.label_map is None else self.label_map[mask]


def shown_names(paths: list, more: int | None = None) -> str:
    shown = ", ".join(str(p) for p in paths[:MAX_NAMED])
    rest = len(paths) - MAX_NAMED if more is None else more
    return shown + (f" ... and {rest} more" if rest > 0 else "")


def read_classes(path: Path) -> tuple[list[str], list[tuple[int, int, int]]]:
    data = read_json(path, what="classes.json")
    entries = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(
            f"{path} has no class list",
            expected='{"classes": [{"name": "floor", "color": [r, g, b]}, ...]}',
            found=str(data)[:120],
        )
    names, colors = [], []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InputError(
                f"{path}: class {k} has no name",
                expected='{"name": "...", "color": [r, g, b]}',
                found=repr(entry)[:120],
            )
        color = entry.get("color", [0, 0, 0])
        valid = isinstance(color, list) and len(color) == 3
        if not (valid and all(isinstance(c, int) and 0 <= c <= 255 for c in color)):
            raise InputError(
                f"{path}: class {entry['name']!r} has a bad color",
                expected="[r, g, b] integers 0-255",
                found=repr(color),
            )
        names.append(entry["name"])
        colors.append(tuple(color))
    if len(names) > 255:
        raise InputError(f"{path} lists {len(names)} classes", expected="at most 255 (255 is the ignore label)")
    return names, colors


def split_files(root: Path, split: str | None) -> tuple[Path, Path, list[str] | None, Path]:
    """(images dir, masks dir, stems or None for all, dir holding classes.json)."""
    if split is None:
        base = root
        stems = None
    elif (root / split / "images").is_dir():
        base, stems = root / split, None
    elif (root / f"{split}.txt").is_file():
        base = root
        stems = [s.strip() for s in (root / f"{split}.txt").read_text().splitlines() if s.strip()]
    else:
        raise InputError(
            f"dataset {root} has no {split!r} split",
            expected=f"{root / split / 'images'} or a stem list {root / (split + '.txt')}",
            found="neither exists",
            fix="pass the folder of that split itself, or add the split",
        )
    if not (base / "images").is_dir():
        raise InputError(
            f"{base} is not a dataset folder",
            expected=f"{base / 'images'} and {base / 'masks'}",
            found="no images/ folder",
            fix="create one with: edgeseg data synth --out DIR",
        )
    classes_dir = base if (base / "classes.json").is_file() else root
    return base / "images", base / "masks", stems, classes_dir


def open_folder_dataset(
    root: str | os.PathLike[str],
    split: str | None = None,
    *,
    num_classes: int | None = None,
    skip_bad: bool = False,
    verify: bool = True,
    on_item: Callable[[int, int], None] | None = None,
    classes_hint: str = "",
) -> FolderDataset:
    """Index (and by default verify) a folder dataset; see the module docstring.

    ``classes_hint`` ends the fix of a class-count error with what the caller's user can pass instead
    (e.g. other --weights), since the count given as ``num_classes`` comes from an option of theirs.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist", expected="DIR/images + DIR/masks", found=str(root))
    images_dir, masks_dir, stems, classes_dir = split_files(root, split)
    samples, skipped = _pairs(images_dir, masks_dir, stems, split, skip_bad)
    classes, colors = _classes(classes_dir, num_classes, classes_hint)
    if verify:
        samples, bad, max_label = verify_samples(samples, len(classes) or None, skip_bad=skip_bad, on_item=on_item,
                                                 classes_hint=classes_hint)
        skipped += bad
        if not classes:
            classes = [f"class_{k}" for k in range(max_label + 1)]
    elif not classes:
        raise InputError(
            f"{root} has no classes.json and the number of classes was not given",
            fix="add classes.json or pass num_classes",
        )
    if not samples:
        raise InputError(f"no usable samples in {root}", found=f"{len(skipped)} skipped")
    return FolderDataset(root, samples, classes, colors, skipped)


def pair_masks(images: Iterable[tuple[str, Path]], mask_of: Callable[[str, Path], Path]
               ) -> tuple[list[Sample], list[Path]]:
    """Each ``(name, image)`` with its mask ``mask_of(name, image)``; the masks that do not exist, listed apart."""
    samples, missing = [], []
    for name, image in images:
        mask = mask_of(name, image)
        if mask.is_file():
            samples.append(Sample(name, image, mask))
        else:
            missing.append(mask)
    return samples, missing


def _pairs(images_dir: Path, masks_dir: Path, stems: list[str] | None, split: str | None, skip_bad: bool
           ) -> tuple[list[Sample], list[tuple[Path, str]]]:
    """(image, mask) pairs by stem, in the split list's order when there is one; missing masks skipped or refused."""
    by_stem = {p.stem: p for p in list_images(images_dir, recursive=False)}
    if stems is not None:
        absent = [s for s in stems if s not in by_stem]
        if absent:
            raise InputError(
                f"{len(absent)} stems in the {split} list have no image in {images_dir}",
                found=shown_names(absent),
                fix="fix the stem list or add the images",
            )
        by_stem = {s: by_stem[s] for s in stems}
    if not by_stem:
        raise InputError(f"no images in {images_dir}", expected="*.jpg / *.png files", found="an empty folder")
    samples, missing = pair_masks(by_stem.items(), lambda stem, _: masks_dir / f"{stem}.png")
    if missing and not skip_bad:
        raise InputError(
            f"{len(missing)} of {len(by_stem)} images have no mask",
            expected=f"{masks_dir}/<stem>.png",
            found="missing: " + shown_names(missing),
            fix="add the masks, or pass --skip-bad to leave them out",
        )
    return samples, [(m, "missing mask") for m in missing]


def _classes(classes_dir: Path, num_classes: int | None, classes_hint: str
             ) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Names and colours from classes.json (its count must match ``num_classes``), else generic names."""
    if (classes_dir / "classes.json").is_file():
        classes, colors = read_classes(classes_dir / "classes.json")
        if num_classes is not None and num_classes != len(classes):
            raise ConfigError(
                "the number of classes disagrees with classes.json",
                expected=f"{len(classes)} (from {classes_dir / 'classes.json'})",
                found=str(num_classes),
                fix=_classes_fix("fix classes.json", classes_hint),
            )
        return classes, colors
    return ([f"class_{k}" for k in range(num_classes)] if num_classes is not None else []), []


def _classes_fix(first: str, hint: str) -> str:
    return f"{first}, or {hint}" if hint else first


def verify_samples(
    samples: list[Sample],
    num_classes: int | None,
    *,
    skip_bad: bool,
    on_item: Callable[[int, int], None] | None = None,
    classes_hint: str = "",
    read_mask: Callable[[Path], np.ndarray] = load_mask,
) -> tuple[list[Sample], list[tuple[Path, str]], int]:
    """(readable samples, unreadable (file, why), largest label): every pair decoded and its labels checked.

    Unreadable files stop it unless ``skip_bad``; ``read_mask`` gives the mask in train ids (adapters map raw ids).
    """
    samples, bad, max_label = _verify(samples, num_classes, on_item, classes_hint, read_mask)
    if bad and not skip_bad:
        raise InputError(
            f"{len(bad)} files cannot be read",
            found=shown_names([f"{p} ({why})" for p, why in bad]),
            fix="replace or delete them, or pass --skip-bad to leave them out",
        )
    return samples, bad, max_label


def _verify(
    samples: list[Sample], num_classes: int | None, on_item: Callable[[int, int], None] | None, classes_hint: str = "",
    read_mask: Callable[[Path], np.ndarray] = load_mask,
) -> tuple[list[Sample], list[tuple[Path, str]], int]:
    good, bad = [], []
    mismatched, out_of_range = [], []
    max_label = 0
    for k, sample in enumerate(samples):
        if on_item:
            on_item(k, len(samples))
        try:
            image = load_image(sample.image)
        except InputError as exc:
            bad.append((sample.image, exc.problem))
            continue
        try:
            mask = read_mask(sample.mask)
        except InputError as exc:
            bad.append((sample.mask, exc.problem))
            continue
        if image.shape[:2] != mask.shape:
            (ih, iw), (mh, mw) = image.shape[:2], mask.shape
            mismatched.append(f"{sample.stem} (image {ih}x{iw}, mask {mh}x{mw})")
            continue
        labels = np.unique(mask)
        labels = labels[labels != IGNORE_INDEX]
        if labels.size:
            max_label = max(max_label, int(labels.max()))
            if num_classes is not None and labels.max() >= num_classes:
                out_of_range.append(f"{sample.mask.name} (labels {labels[labels >= num_classes].tolist()})")
                continue
        good.append(sample)
    if mismatched:
        raise InputError(
            f"{len(mismatched)} image/mask pairs differ in size",
            expected="each mask the size of its image",
            found=shown_names(mismatched),
            fix="regenerate the masks at the image size",
        )
    if out_of_range:
        raise InputError(
            f"{len(out_of_range)} masks have labels outside 0..{(num_classes or 0) - 1} (255 = ignore)",
            found=shown_names(out_of_range),
            fix=_classes_fix("fix the masks, or the class list in classes.json", classes_hint),
        )
    return good, bad, max_label
