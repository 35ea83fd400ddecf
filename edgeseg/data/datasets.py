"""``--data`` / ``--val-data`` / ``--val``: the one parser of a dataset spec, and the one way to open it
(numpy only; Python 3.8).

    DIR                          the folder format of ``edgeseg.data.folder`` (the default)
    folder:DIR[:split]           the same, explicitly (a split: DIR/<split>/ or DIR/<split>.txt)
    cityscapes:ROOT[:split]      Cityscapes (gtFine labelIds -> the 19 train ids)
    camvid:ROOT[:split]          CamVid, SegNet layout (11 classes, void ignored)
    voc:ROOT[:split]             Pascal VOC 2012 (21 classes, border 255 ignored)
    ade20k:ROOT[:split]          ADE20K SceneParsing (150 classes, 0 = other ignored)

Without a split each command takes its own (train: train; eval, validate, build --val: val).
The project's split names train/val are accepted for every dataset (ADE20K: training/validation),
as are the dataset's own. Adapters live in ``edgeseg.data.adapters``; the folder format in
``edgeseg.data.folder``.
"""

from __future__ import annotations

import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..images import list_images
from .adapters import ADAPTERS, adapter_images, nearest, open_adapter, pairs_text
from .folder import FolderDataset, open_folder_dataset, read_classes, split_files

FOLDER = "folder"
KINDS = (FOLDER, *ADAPTERS)
SYNTAX = "DIR, or KIND:ROOT[:split] with KIND one of " + ", ".join(KINDS)
_SPLIT = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# what a function argument may be: a parsed spec, or the text/path a user typed (Python 3.8: typing's Union)
SpecLike = typing.Union["DatasetSpec", str, "os.PathLike[str]"]


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``--data`` value: which layout, where, and the split asked for (None: the command's)."""

    kind: str
    root: Path
    split: str | None = None

    @property
    def is_folder(self) -> bool:
        return self.kind == FOLDER

    def __str__(self) -> str:
        if self.is_folder and self.split is None:
            return str(self.root)
        return f"{self.kind}:{self.root}" + (f":{self.split}" if self.split else "")


def parse_dataset_spec(text: str | os.PathLike[str]) -> DatasetSpec:
    """``DIR`` or ``KIND:ROOT[:split]``; a UsageError (exit 2) for an unknown KIND or an empty ROOT."""
    if isinstance(text, os.PathLike):
        return DatasetSpec(FOLDER, Path(text))
    value = str(text).strip()
    if not value:
        raise UsageError("empty dataset", expected=SYNTAX)
    kind, sep, rest = value.partition(":")
    # No known prefix: a folder, colons and all; one letter before ":" is a Windows drive.
    if not sep or len(kind) == 1 or _exists(value):
        return DatasetSpec(FOLDER, Path(value))
    if kind.lower() not in KINDS:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", kind):
            return DatasetSpec(FOLDER, Path(value))
        near = nearest(kind, list(KINDS))
        raise UsageError(f"unknown dataset kind {kind!r} in {value!r}", expected=SYNTAX,
                         fix=f"did you mean {near}:{rest}?" if near else f"pass a folder, or one of {', '.join(KINDS)}")
    if not rest.strip() or rest.startswith(":"):
        raise UsageError(f"{value!r} names no dataset folder", expected=f"{kind.lower()}:ROOT[:split]")
    root, split = _root_and_split(rest)
    return DatasetSpec(kind.lower(), root, split)


def _exists(text: str) -> bool:
    try:
        return Path(text).exists()
    except OSError:  # e.g. a name too long for the file system: not a folder
        return False


def _root_and_split(rest: str) -> tuple[Path, str | None]:
    """``ROOT[:split]``: the text after the last colon is a split when it looks like one and ROOT is not a
    folder whose name holds that colon. ``~`` is expanded here: the shell does not expand it after ``KIND:``."""
    head, sep, tail = rest.rpartition(":")
    if sep and head and _SPLIT.match(tail) and not (_exists(rest) and Path(rest).expanduser().is_dir()):
        return Path(head).expanduser(), tail
    return Path(rest).expanduser(), None


def as_dataset_spec(value: SpecLike) -> DatasetSpec:
    """A spec from what a caller holds: a DatasetSpec, a path (the folder format) or the text a user typed."""
    if isinstance(value, DatasetSpec):
        return value
    return parse_dataset_spec(value)


def has_split(spec: DatasetSpec, split: str) -> bool:
    """Whether a folder dataset has ``split`` (DIR/<split>/images or DIR/<split>.txt)."""
    root = spec.root
    return (root / split / "images").is_dir() or (root / f"{split}.txt").is_file()


def default_split(spec: SpecLike, wanted: str) -> str | None:
    """The split a command opens: the spec's own, else ``wanted`` (train or val). A folder dataset without
    that split is used whole (None), as before the adapters."""
    spec = as_dataset_spec(spec)
    if spec.split is not None:
        return spec.split
    if spec.is_folder:
        return wanted if has_split(spec, wanted) else None
    return wanted


def open_dataset(
    spec: SpecLike,
    split: str | None = None,
    *,
    num_classes: int | None = None,
    skip_bad: bool = False,
    verify: bool = True,
    on_item: typing.Callable[[int, int], None] | None = None,
    classes_hint: str = "",
) -> FolderDataset:
    """Open the dataset ``spec`` names: ``spec.split`` wins over ``split`` (see ``default_split``); a folder
    dataset with neither is used whole, a public dataset defaults to val. The result's ``name`` says what was
    opened (e.g. "cityscapes val") and its masks load in train ids (255 = ignore)."""
    spec = as_dataset_spec(spec)
    chosen = spec.split or split
    if spec.is_folder:
        dataset = open_folder_dataset(spec.root, chosen, num_classes=num_classes, skip_bad=skip_bad, verify=verify,
                                      on_item=on_item, classes_hint=classes_hint)
        dataset.name = str(spec.root) + (f" {chosen}" if chosen else "")
        return dataset
    return open_adapter(spec.kind, spec.root, chosen or "val", num_classes=num_classes, skip_bad=skip_bad,
                        verify=verify, on_item=on_item, classes_hint=classes_hint)


def dataset_image_paths(spec: SpecLike, split: str | None = None) -> list[Path]:
    """The images of a dataset, masks not needed (calibration): ``spec.split`` wins over ``split``; a public
    dataset defaults to train. A folder spec with images/ uses that folder (its split when one is named);
    any other folder is a plain folder of images (searched recursively)."""
    spec = as_dataset_spec(spec)
    chosen = spec.split or split
    if not spec.is_folder:
        return adapter_images(spec.kind, spec.root, chosen or "train")
    if chosen is None and not (spec.root / "images").is_dir():
        return list_images(spec.root)
    images_dir, _masks, stems, _classes = split_files(spec.root, chosen)
    images = list_images(images_dir)
    if stems is None:
        return images
    wanted = set(stems)
    return [p for p in images if p.stem in wanted]


def dataset_classes(spec: SpecLike) -> tuple[list[str], list[tuple[int, int, int]]]:
    """(class names, colours) a dataset declares without reading its files: a public dataset's tables, a
    folder's DIR/classes.json ([] and [] when it has none)."""
    spec = as_dataset_spec(spec)
    if not spec.is_folder:
        adapter = ADAPTERS[spec.kind]
        return list(adapter.classes), list(adapter.colours)
    path = spec.root / "classes.json"
    return read_classes(path) if path.is_file() else ([], [])


def summary(dataset: FolderDataset) -> str:
    """The line the commands print: "cityscapes train: 2975 pairs (3 skipped)"."""
    skipped = f" ({len(dataset.skipped)} skipped)" if dataset.skipped else ""
    return f"{dataset.name or dataset.root}: {pairs_text(len(dataset))}{skipped}"
