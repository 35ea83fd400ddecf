"""The frames ``edgeseg validate`` scores (layer 4, numpy only): a dataset's images with their masks in
train ids (``edgeseg.data.datasets``: the folder format or a public dataset), a plain folder of frames without
ground truth, or synthetic frames when no data is given."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import SpecLike, as_dataset_spec, dataset_image_paths, default_split, open_dataset, summary
from ..data.folder import FolderDataset, read_classes, split_files
from ..errors import InputError
from ..images import list_images, load_image
from ..reference import synthetic_frames
from ..spec import InputSpec

SYNTHETIC_SAMPLES = 8  # frames for a PyTorch reference when no --data is given


@dataclass
class Samples:
    items: Iterator[tuple[str, np.ndarray, np.ndarray | None]] | list[Any]
    count: int
    with_truth: bool
    classes: list[str] = field(default_factory=list)  # from the data's classes.json (or generic names)
    colours: list[tuple[int, int, int]] = field(default_factory=list)  # the data's own colours, if any
    summary: str = ""  # e.g. "cityscapes val: 500 pairs", a note of the validation
    files: list[Path] = field(default_factory=list)  # the images and masks ``items`` reads (a cache key's input)


def data_samples(data_dir: SpecLike, max_images: int | None, num_classes: int) -> Samples:
    """The images of a dataset (``edgeseg.data.datasets``: a folder, or e.g. cityscapes:ROOT), its val split
    when it has one (a folder: DIR/val/ or DIR/val.txt), paired with their masks in train ids; a folder without
    masks, or a plain folder of images, is validated without ground truth."""
    spec = as_dataset_spec(data_dir)
    split = default_split(spec, "val")
    hint = f"validate a model trained on these classes (this one has {num_classes})"
    if not spec.is_folder:  # a public dataset: its adapter names missing masks itself
        return _labelled(open_dataset(spec, split, num_classes=num_classes, verify=False, classes_hint=hint),
                         max_images)
    root = spec.root
    if split is None and not (root / "images").is_dir():
        return _unlabelled(list_images(root), root, root, max_images)  # frames only: nothing to pair
    images_dir, masks_dir, _stems, classes_dir = split_files(root, split)
    if not masks_dir.is_dir() or not any(masks_dir.glob("*.png")):
        return _unlabelled(dataset_image_paths(spec, split), images_dir, classes_dir, max_images)
    dataset = open_dataset(spec, split, num_classes=num_classes, verify=False, skip_bad=True, classes_hint=hint)
    missing = [path for path, _why in dataset.skipped]  # verify=False: only masks that do not exist
    if missing:
        total = len(missing) + len(dataset.samples)
        raise InputError(f"{len(missing)} of {total} images in {images_dir} have no mask",
                         expected=f"a mask {masks_dir}/<stem>.png for every image",
                         found=", ".join(p.name for p in missing[:5]) + (" ..." if len(missing) > 5 else ""),
                         fix="add the masks, or remove those images")
    return _labelled(dataset, max_images)


def _labelled(dataset: FolderDataset, max_images: int | None) -> Samples:
    """Image/mask pairs, masks in train ids (the dataset maps raw ids), checked against their image's size."""
    picked = dataset.samples[: max_images or len(dataset.samples)]

    def load() -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
        for sample in picked:
            frame, truth = load_image(sample.image), dataset.read_mask(sample.mask)
            if truth.shape != frame.shape[:2]:
                raise InputError(f"mask {sample.mask} does not match its image", expected=str(frame.shape[:2]),
                                 found=str(truth.shape))
            yield sample.stem, frame, truth

    return Samples(load(), len(picked), True, list(dataset.classes), list(dataset.colors), summary(dataset),
                   [p for sample in picked for p in (sample.image, sample.mask)])


def _unlabelled(images: list[Path], folder: Path, classes_dir: Path, max_images: int | None) -> Samples:
    """Frames without ground truth (class names from a classes.json beside them, if any)."""
    if not images:
        raise InputError(f"no images in {folder}", expected="DIR/images/*.png|jpg (+ DIR/masks/<stem>.png)")
    picked = images[: max_images or len(images)]
    names = read_classes(classes_dir / "classes.json")[0] if (classes_dir / "classes.json").is_file() else []
    return Samples(((p.stem, load_image(p), None) for p in picked), len(picked), False, names, files=picked)


def synthetic_samples(spec: InputSpec, notes: list[str]) -> Samples:
    frames = synthetic_frames(SYNTHETIC_SAMPLES, spec.height, spec.width, seed=0)
    notes.append(f"no --data: {SYNTHETIC_SAMPLES} synthetic frames (seed 0) were used")
    return Samples([(f"synthetic_{i:03d}", f, None) for i, f in enumerate(frames)], len(frames), False)
