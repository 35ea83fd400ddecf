"""Masks and colour overlays into a new ROS bag (layer 1; rosbags imported when a writer opens).

For every input frame ``BagMaskWriter`` writes a mono8 ``sensor_msgs/Image`` class mask (at the frame's
resolution) and an rgb8 colour overlay, both with the frame's stamp and frame_id and its log time, so
Foxglove and RViz show them against the original recording. The target's suffix picks the format:

  out.mcap / out.db3   a ROS 2 storage file (rosbags and Foxglove open it directly)
  out.bag              a ROS 1 bag
  out (no suffix)      a rosbag2 folder (mcap + metadata.yaml, version 8: offered_qos_profiles a YAML string, as
                       Humble's reader needs), what ``ros2 bag play`` takes on every distro

The bag is written into a temporary folder beside the target and renamed into place when closed, so a
crash never leaves a half-written bag under the final name (rosbags' writers also refuse existing paths).
Default topics: the input topic (without a trailing ``/compressed``) + ``/edgeseg/mask`` and
``/edgeseg/overlay``: ``/cam/image_raw`` -> ``/cam/image_raw/edgeseg/mask``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..errors import InputError, UsageError, require
from ..palette import class_palette
from .bags import BagFrame
from .ros_image import IMAGE_TYPE, default_typestore, segmentation_msgs, typestore_factory

OUTPUT_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3", ".bag": "ros1", "": "mcap"}
# rosbag2 metadata version: 8 is the newest whose offered_qos_profiles is a YAML string, which Humble reads (from
# version 4 up its reader takes that field as a string; version 9 writes a list, which Humble cannot parse), and
# which Iron and Jazzy read too. Humble ignores the fields it does not know (type_description_hash, custom_data).
METADATA_VERSION = 8
MASK_SUFFIX = "/edgeseg/mask"
OVERLAY_SUFFIX = "/edgeseg/overlay"
PALETTE_CLASSES = 256  # every uint8 label has a colour; class i's colour does not depend on the count


def default_output_topics(input_topic: str) -> tuple[str, str]:
    """(mask topic, overlay topic) derived from the input topic."""
    base = input_topic.rstrip("/")
    if base.endswith("/compressed"):  # image_transport's compressed topic: name the image, not the transport
        base = base[: -len("/compressed")]
    return base + MASK_SUFFIX, base + OVERLAY_SUFFIX


def _header(stamp_ns: int, frame_id: str) -> Any:
    """A header-like object: what ros_image's message factories read."""
    return SimpleNamespace(stamp=SimpleNamespace(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
                           frame_id=frame_id)


class BagMaskWriter:
    """Context manager: ``with BagMaskWriter("out.mcap", "/cam/image_raw", palette=...) as w: w.write(frame, mask)``."""

    def __init__(self, path: str | os.PathLike[str], input_topic: str, *, palette: np.ndarray | None = None,
                 alpha: float = 0.5, mask_topic: str | None = None, overlay_topic: str | None = None,
                 overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.suffix not in OUTPUT_SUFFIXES:
            raise UsageError(f"cannot tell which bag format {self.path} should be",
                             expected="out.mcap, out.db3 (ROS 2), out.bag (ROS 1) or a folder name (rosbag2)",
                             found=self.path.suffix)
        if self.path.exists() and not overwrite:
            raise UsageError(f"{self.path} exists already", found="an existing file or folder",
                             fix="delete it, or write to another path")
        self.storage = OUTPUT_SUFFIXES[self.path.suffix]
        self.ros1 = self.storage == "ros1"
        default_mask, default_overlay = default_output_topics(input_topic)
        self.mask_topic = mask_topic or default_mask
        self.overlay_topic = overlay_topic or default_overlay
        if self.mask_topic == self.overlay_topic:
            raise UsageError("the mask and overlay topics must differ", found=self.mask_topic)
        self.palette = palette if palette is not None else class_palette(PALETTE_CLASSES)
        self.alpha = alpha
        self.count = 0
        self.store: Any = None
        self._tmp: Path | None = None
        self._writer: Any = None
        self._factory: Any = None
        self._connections: tuple[Any, Any] = (None, None)

    def _inner(self) -> Path:
        """Where rosbags writes inside the temporary folder (rosbag2 names its file after its folder)."""
        assert self._tmp is not None
        return self._tmp / (self.path.name if self.ros1 else (self.path.stem or "bag"))

    def open(self) -> BagMaskWriter:
        self.store = default_typestore(ros1=self.ros1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent))
        try:
            if self.ros1:
                self._writer = require("rosbags.rosbag1", extra="ros", purpose="writing ROS bags").Writer(self._inner())
            else:
                rosbag2 = require("rosbags.rosbag2", extra="ros", purpose="writing ROS bags")
                plugin = rosbag2.StoragePlugin.SQLITE3 if self.storage == "sqlite3" else rosbag2.StoragePlugin.MCAP
                self._writer = rosbag2.Writer(self._inner(), version=METADATA_VERSION, storage_plugin=plugin)
            self._writer.open()
            self._connections = tuple(self._writer.add_connection(topic, IMAGE_TYPE, typestore=self.store)
                                      for topic in (self.mask_topic, self.overlay_topic))
            self._factory = typestore_factory(self.store)  # once: every frame's two messages use it
        except BaseException:
            self._discard()
            raise
        return self

    def write_frame(self, rgb: np.ndarray, mask: np.ndarray, *, stamp_ns: int, frame_id: str,
                    overlay: np.ndarray | None = None, log_time_ns: int | None = None) -> None:
        """One frame's mask (resized to the frame, nearest) and overlay (computed unless given)."""
        if self._writer is None:
            raise RuntimeError("BagMaskWriter is not open: use it as a context manager")
        messages = segmentation_msgs(rgb, mask, _header(int(stamp_ns), frame_id), self._factory,
                                     palette=self.palette, alpha=self.alpha, overlay=overlay)
        serialize = self.store.serialize_ros1 if self.ros1 else self.store.serialize_cdr
        when = int(log_time_ns) if log_time_ns else int(stamp_ns)
        for connection, msg in zip(self._connections, messages):
            self._writer.write(connection, when, serialize(msg, IMAGE_TYPE))
        self.count += 1

    def write(self, frame: BagFrame, mask: np.ndarray, overlay: np.ndarray | None = None) -> None:
        """``frame``'s mask and overlay, with its header stamp (a zero one stays zero), frame_id and log time."""
        self.write_frame(frame.rgb, mask, stamp_ns=frame.header_stamp_ns,
                         frame_id=frame.frame_id, overlay=overlay, log_time_ns=frame.log_time_ns or frame.stamp_ns)

    def close(self) -> Path:
        """Finish the bag and rename it onto the target (replacing it only when ``overwrite`` was given)."""
        assert self._tmp is not None and self._writer is not None
        try:
            self._writer.close()
            self._writer = None
            inner = self._inner()
            built = inner / f"{inner.name}{self.path.suffix}" if self.path.suffix in (".mcap", ".db3") else inner
            if self.path.exists():  # overwrite: move the old one aside first (a folder cannot be replaced)
                os.replace(self.path, self._tmp / "replaced")
            os.replace(built, self.path)
        except OSError as exc:
            raise InputError(f"writing bag {self.path} failed; nothing was left behind",
                             found=f"{type(exc).__name__}: {exc.strerror or exc}",
                             fix="free disk space or write to another folder") from None
        finally:
            self._discard()
        return self.path

    def _discard(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):  # already failing: the original error is the one to see
                self._writer.abort()
            self._writer = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> BagMaskWriter:
        return self.open()

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self._discard()
