"""Calibration images: deterministic sampling, reference preprocessing, batches (layer 2).

Sampling ranks every image by a seeded hash of its path relative to the folder, so the
chosen set depends only on the seed and the folder's contents, never on the order the
filesystem lists them in (and adding an unrelated image changes at most one choice).
Files that cannot be read (corrupt, zero-byte, a text file named ``.jpg``) are skipped by
name and replaced by the next image in the ranking; the skips are reported.

A ROS bag (``--calib bag:PATH --topic T``: ``BagCalibSource``) gives frames spread evenly over the
recording with near-duplicates skipped (runtime.bags.BagSampler; the seed plays no part), and its
provenance (bag, topic, frame stamps) is recorded beside the frame names.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Union

import numpy as np

from ..errors import ConfigError, InputError, UsageError
from ..fileio import sha256_files
from ..images import IMAGE_EXTENSIONS, list_images, load_image, save_png
from ..runtime.bags import BAG_PREFIX, BagSampler, strip_bag_prefix
from ..runtime.ros_image import SUPPORTED_ENCODINGS
from ..spec import InputSpec, preprocess

Batch = Dict[str, np.ndarray]  # typing.Dict: evaluated at import, and Python 3.8 runs it


@dataclass(frozen=True)
class BagCalibSource:
    """Calibration frames from an image topic of a ROS bag (``--calib bag:PATH [--topic T]``)."""

    path: Path
    topic: str | None = None  # None: the bag's only image topic

    def __str__(self) -> str:
        return f"bag:{self.path}" + (f" (topic {self.topic})" if self.topic else "")


@dataclass(frozen=True)
class ImageListSource:
    """Calibration images a dataset names (``--calib cityscapes:ROOT[:split]``): ``paths`` under ``root``,
    ranked and sampled like a folder's. The commands layer resolves the spec (data/ is above quant/)."""

    label: str  # the spec as typed: what reports and errors print
    root: Path
    paths: tuple[Path, ...]

    def __str__(self) -> str:
        return self.label


# what the calibration readers take (typing.Union: evaluated at import, and Python 3.8 runs it)
CalibSource = Union[str, "os.PathLike[str]", BagCalibSource, ImageListSource]


def calib_source(value: Any, topic: str | None = None) -> Any:
    """``--calib`` and ``--topic`` as a calibration source: ``bag:PATH`` -> BagCalibSource, else the folder."""
    if isinstance(value, BagCalibSource):
        return value
    if str(value).startswith(BAG_PREFIX):
        return BagCalibSource(strip_bag_prefix(str(value)), topic)
    if topic is not None:  # a folder or a dataset's images
        raise UsageError("--topic is for a bag", found=f"--calib {value} --topic {topic}",
                         fix=f"pass --calib bag:PATH --topic {topic}, or leave --topic out")
    return value


def write_bag_frames(source: BagCalibSource, folder: Path, count: int) -> Path:
    """``count`` frames of the bag (sampled as for calibration) as ``folder``/<frame name>.png: where an image
    folder is needed (the reference frames a build exports with). PNGs of another sample are removed."""
    wanted = set()
    for frame in BagSampler(source.path, source.topic, count):
        target = folder / f"{frame.name}.png"
        wanted.add(target)
        if not target.is_file():  # the same frame gives the same file: a rerun rewrites nothing
            save_png(target, frame.rgb)
    for stale in set(folder.glob("*.png")) - wanted:
        stale.unlink()
    return folder


def rank_images(folder: str | os.PathLike[str], seed: int = 0) -> list[Path]:
    """The calibration images under ``folder`` (``folder_images``) in a seeded, filesystem-order-independent
    order."""
    return rank_paths(Path(folder), folder_images(folder), seed)


def is_mask_folder(folder: Path) -> bool:
    """``masks/`` beside an ``images/``: edgeseg's dataset layout, whose PNGs are labels, not camera frames."""
    return folder.name == "masks" and (folder.parent / "images").is_dir()


def folder_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Every image under ``folder`` (recursive) except a dataset's masks: in edgeseg's dataset layout
    (``images/`` + ``masks/``, at the top or in split folders such as ``train/``) only ``images/`` counts."""
    root = Path(folder)

    def in_masks(path: Path) -> bool:
        return any(is_mask_folder(root / part) for part in path.relative_to(root).parents if part != Path("."))

    return [p for p in list_images(root) if not in_masks(p)]


def rank_paths(root: Path, files: Iterable[Path], seed: int = 0) -> list[Path]:
    """``files`` (under ``root``) ranked by a seeded hash of their relative paths."""

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
    # a bag: ``used`` are root/<frame name> (not files), ``bag`` its provenance, ``digests`` the frames' pixels
    bag: dict[str, Any] | None = None
    digests: list[str] = field(default_factory=list)

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    @property
    def names(self) -> list[str]:
        return [self.relative(p) for p in self.used]

    def sha256(self) -> str:
        """Hash of the used files' names and contents (the calibration set's identity)."""
        if self.bag is not None:  # the frames' names (index + stamp) and decoded pixels
            digest = hashlib.sha256()
            for name, pixels in zip(self.names, self.digests):
                digest.update(f"{name}:{pixels}".encode())
            return digest.hexdigest()
        return sha256_files(self.used)


class CalibrationFeed:
    """Iterates preprocessed batches ``{input_name: Nx3xHxW float32}`` over ranked images.

    Images are loaded lazily (100 images at 512x1024 would be 600 MB as float32). After
    the iteration ``images`` says what was used and skipped. A feed can be iterated once.
    """

    def __init__(
        self,
        folder: CalibSource,
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
        self._bag: Any = None
        if isinstance(folder, BagCalibSource):
            self._bag = self._open_bag(folder, count)
            self.target = min(count, self._bag.messages) // batch_size * batch_size
            self._consumed = False
            return
        if isinstance(folder, ImageListSource):
            self.candidates = rank_paths(folder.root, folder.paths, seed)
            self.images = CalibrationImages(folder.root, count)
        else:
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

    def _open_bag(self, source: BagCalibSource, count: int) -> Any:  # -> runtime.bags.BagSampler
        sampler = BagSampler(source.path, source.topic, count)
        self.candidates = []
        self.images = CalibrationImages(source.path, count, bag={})
        if sampler.messages < self.batch_size:
            raise InputError(
                f"too few frames on {sampler.topic} in bag {source.path} for one calibration batch",
                expected=f"at least {self.batch_size} frame(s) (ideally {count})",
                found=f"{sampler.messages} message(s)",
                fix="record longer, or pass another --topic",
            )
        return sampler

    def _loaders(self) -> Iterable[tuple[Path, Callable[[], np.ndarray], Any]]:
        """(name path, load(), bag frame or None) per candidate, in the order they are tried."""
        if self._bag is None:
            for path in self.candidates:
                yield path, functools.partial(load_image, path), None
            return
        for frame in self._bag:  # already decoded: its loader hands the array over
            yield self.images.root / frame.name, functools.partial(np.asarray, frame.rgb), frame

    @property
    def num_batches(self) -> int:
        """Batches the feed will yield if no image has to be skipped."""
        return self.target // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        if self._consumed:
            raise RuntimeError("a CalibrationFeed can be iterated only once")
        self._consumed = True
        pending: list[np.ndarray] = []
        stamps: list[tuple[int, int]] = []  # (index, stamp) of the bag frames used
        for path, load, bag_frame in self._loaders():
            if len(self.images.used) >= self.target:
                break
            try:
                frame = load()
            except InputError as exc:
                self.images.skipped.append((self.images.relative(path), exc.problem))
                continue
            pending.append(preprocess(frame, self.spec, self.frame_order))
            self.images.used.append(path)
            if bag_frame is not None:
                stamps.append((bag_frame.index, bag_frame.stamp_ns))
                self.images.digests.append(hashlib.sha256(frame.tobytes()).hexdigest())
            if len(pending) == self.batch_size:
                yield {self.spec.input_name: np.concatenate(pending, axis=0)}
                pending = []
        # leftover images (only after skips) cannot fill a batch: they are not used
        if pending:
            del self.images.used[-len(pending):]
            del stamps[len(self.images.used):], self.images.digests[len(self.images.used):]
        if self._bag is not None:
            self.images.skipped += self._bag.skipped
            self.images.bag = self._bag.provenance(stamps)
        if not self.images.used:
            skipped = "; ".join(f"{name}: {why}" for name, why in self.images.skipped[:5])
            if self._bag is not None:
                raise InputError(
                    f"no usable calibration frame on {self._bag.topic} in bag {self.images.root}",
                    expected=f"at least {self.batch_size} decodable camera image(s): sensor_msgs/Image in "
                             + ", ".join(SUPPORTED_ENCODINGS) + ", or a jpeg/png CompressedImage",
                    found=f"{len(self.images.skipped)} undecodable message(s): {skipped}",
                    fix="pass --topic with the camera's colour or grey image topic (a depth image such as 16UC1 "
                        "or 32FC1 is not a camera frame), or republish the camera as rgb8/bgr8 and record again",
                )
            raise InputError(
                f"no usable calibration image in {self.images.root}",
                expected=f"at least {self.batch_size} readable image(s)",
                found=f"{len(self.images.skipped)} unreadable file(s): {skipped}",
                fix="replace the corrupt files with valid jpg/png/bmp images",
            )
