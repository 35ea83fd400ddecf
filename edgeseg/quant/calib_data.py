"""Calibration images: deterministic sampling, reference preprocessing, batches (layer 2).

Sampling ranks every image by a seeded hash of its path relative to the folder, so the
chosen set depends only on the seed and the folder's contents, never on the order the
filesystem lists them in (and adding an unrelated image changes at most one choice).
Files that cannot be read (corrupt, zero-byte, a text file named ``.jpg``) are skipped by
name and replaced by the next image in the ranking; the skips are reported.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict

import numpy as np

from ..errors import ConfigError, InputError
from ..fileio import sha256_files
from ..images import IMAGE_EXTENSIONS, list_images, load_image
from ..spec import InputSpec, preprocess

Batch = Dict[str, np.ndarray]  # typing.Dict: evaluated at import, and Python 3.8 runs it


def rank_images(folder: str | os.PathLike[str], seed: int = 0) -> list[Path]:
    """All images under ``folder`` in a seeded, filesystem-order-independent order."""
    root = Path(folder)
    files = list_images(root)

    def key(path: Path) -> str:
        relative = path.relative_to(root).as_posix()
        return hashlib.sha256(f"{seed}:{relative}".encode()).hexdigest() + relative

    return sorted(files, key=key)


def non_image_files(folder: str | os.PathLike[str]) -> list[str]:
    """Files under ``folder`` that are not images by extension (reported, never read)."""
    root = Path(folder)
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() not in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


@dataclass
class CalibrationImages:
    """What a calibration run read: the images it used, in order, and what it skipped."""

    root: Path
    requested: int
    used: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    ignored: list[str] = field(default_factory=list)  # non-image files in the folder

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    @property
    def names(self) -> list[str]:
        return [self.relative(p) for p in self.used]

    def sha256(self) -> str:
        """Hash of the used files' names and contents (the calibration set's identity)."""
        return sha256_files(self.used)


class CalibrationFeed:
    """Iterates preprocessed batches ``{input_name: Nx3xHxW float32}`` over ranked images.

    Images are loaded lazily (100 images at 512x1024 would be 600 MB as float32). After
    the iteration ``images`` says what was used and skipped. A feed can be iterated once.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        spec: InputSpec,
        *,
        count: int = 100,
        batch_size: int = 1,
        seed: int = 0,
        frame_order: str = "RGB",
    ) -> None:
        if count < 1:
            raise ConfigError("the number of calibration images must be at least 1", found=str(count))
        if batch_size < 1:
            raise ConfigError("the calibration batch size must be at least 1", found=str(batch_size))
        if batch_size > count:
            raise ConfigError(
                "the calibration batch size is larger than the number of calibration images",
                expected=f"batch size <= {count}",
                found=f"batch size {batch_size}",
                fix="lower --batch-size or raise --calib-images",
            )
        self.spec = spec
        self.batch_size = batch_size
        self.frame_order = frame_order
        self.candidates = rank_images(folder, seed)
        self.images = CalibrationImages(Path(folder), count, ignored=non_image_files(folder))
        if len(self.candidates) < batch_size:
            raise InputError(
                f"too few images in {folder} for one calibration batch",
                expected=f"at least {batch_size} .jpg/.png/.bmp image(s) (ideally {count})",
                found=f"{len(self.candidates)} image(s)"
                + (f" and {len(self.images.ignored)} other file(s)" if self.images.ignored else ""),
                fix="point --calib at a folder of representative camera frames",
            )
        # full batches only: a static-batch model cannot take a smaller last one
        self.target = min(count, len(self.candidates)) // batch_size * batch_size
        self._consumed = False

    @property
    def num_batches(self) -> int:
        """Batches the feed will yield if no image has to be skipped."""
        return self.target // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        if self._consumed:
            raise RuntimeError("a CalibrationFeed can be iterated only once")
        self._consumed = True
        pending: list[np.ndarray] = []
        for path in self.candidates:
            if len(self.images.used) >= self.target:
                break
            try:
                frame = load_image(path)
            except InputError as exc:
                self.images.skipped.append((self.images.relative(path), exc.problem))
                continue
            pending.append(preprocess(frame, self.spec, self.frame_order))
            self.images.used.append(path)
            if len(pending) == self.batch_size:
                yield {self.spec.input_name: np.concatenate(pending, axis=0)}
                pending = []
        # leftover images (only after skips) cannot fill a batch: they are not used
        if pending:
            del self.images.used[-len(pending):]
        if not self.images.used:
            skipped = "; ".join(f"{name}: {why}" for name, why in self.images.skipped[:5])
            raise InputError(
                f"no usable calibration image in {self.images.root}",
                expected=f"at least {self.batch_size} readable image(s)",
                found=f"{len(self.images.skipped)} unreadable file(s): {skipped}",
                fix="replace the corrupt files with valid jpg/png/bmp images",
            )
