"""ROS bags as frame sources and mask sinks (layer 1; rosbags imported when a bag is opened).

Reads ROS 1 ``.bag`` files and ROS 2 bags (a rosbag2 folder with metadata.yaml, or a bare ``.db3`` /
``.mcap`` storage file) with rosbags' AnyReader: no ROS install. Image topics are ``sensor_msgs/Image``
(ros_image.SUPPORTED_ENCODINGS) and ``sensor_msgs/CompressedImage`` (jpeg, png).

- ``list_image_topics`` / ``resolve_topic``: which topic to read, with errors that list the choices.
- ``iter_bag_frames``: every frame of a topic in recording order as a ``BagFrame``. Its stamp is the
  header stamp; a zero header stamp (drivers that never set it) falls back to the bag's log time.
- ``BagSampler`` / ``sample_bag_frames``: ``count`` frames spread evenly over the recording (not the first
  N), skipping near-duplicates (a robot standing still), with provenance for ranges.json.
- ``BagMaskWriter`` (bag_writer.py): masks and colour overlays into a new bag, stamps kept.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError, UsageError, require
from ..fileio import sha256_files
from .ros_image import IMAGE_TYPES, default_typestore, msg_to_rgb, stamp_ns

BAG_PREFIX = "bag:"
ROS2_FILE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}
BAG_KINDS = "a ROS 1 .bag file, a ROS 2 .mcap or .db3 file, or a rosbag2 folder (with metadata.yaml)"
# Mean absolute difference (grey levels, 0..255) of two 32x32 grey thumbnails below which a sampled frame
# repeats the last kept one: block means average sensor noise away (~0.2 levels), real motion moves far more.
DEFAULT_MIN_DIFFERENCE = 1.0
THUMBNAIL = 32


@dataclass
class BagFrame:
    """One decoded image message: ``rgb`` is uint8 HxWx3; ``index`` counts the topic's messages from 0."""

    name: str
    rgb: np.ndarray
    stamp_ns: int
    frame_id: str
    topic: str
    index: int
    log_time_ns: int = 0  # when the bag recorded it
    stamp_from_log_time: bool = False  # the header stamp was zero

    @property
    def header_stamp_ns(self) -> int:
        """The header stamp as recorded: 0 when the driver never set it (``stamp_ns`` is then the log time)."""
        return 0 if self.stamp_from_log_time else self.stamp_ns


def bag_storage(path: str | Path) -> str:
    """"ros1", "mcap" or "sqlite3" (a rosbag2 folder: the storage of the files inside it)."""
    path = Path(path)
    if path.is_dir():
        kinds = {ROS2_FILE_SUFFIXES[p.suffix] for p in path.iterdir() if p.suffix in ROS2_FILE_SUFFIXES}
        return kinds.pop() if len(kinds) == 1 else "rosbag2"
    return "ros1" if path.suffix == ".bag" else ROS2_FILE_SUFFIXES.get(path.suffix, "unknown")


def strip_bag_prefix(source: str | Path) -> Path:
    """``bag:PATH`` (or a plain PATH) -> PATH, ``~`` expanded (the shell does not expand it after ``bag:``)."""
    text = str(source)
    return Path(text[len(BAG_PREFIX):] if text.startswith(BAG_PREFIX) else text).expanduser()


def _check_bag_path(path: str | Path) -> Path:
    path = strip_bag_prefix(path)
    if not path.exists():
        raise InputError(f"bag {path} does not exist", expected=BAG_KINDS, found="no such file or folder")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise InputError(f"{path} is a folder without metadata.yaml", expected=BAG_KINDS,
                         fix="pass the rosbag2 folder itself, or its .mcap/.db3 file")
    if path.is_file() and path.suffix not in (".bag", *ROS2_FILE_SUFFIXES):
        raise InputError(f"{path} is not a bag file", expected=BAG_KINDS, found=f"a {path.suffix or 'suffixless'} file")
    return path


@contextlib.contextmanager
def open_bag(path: str | Path) -> Iterator[Any]:
    """An open rosbags AnyReader on ``path``; unreadable bags are InputErrors naming the file."""
    highlevel = require("rosbags.highlevel", extra="ros", purpose="reading ROS bags")
    path = _check_bag_path(path)
    try:
        # old ROS 2 bags store no message definitions: Humble's are the fallback
        reader = highlevel.AnyReader([path], default_typestore=default_typestore())
        reader.open()
    except Exception as exc:  # rosbags, sqlite3 and the mcap parser raise many types for a bad file
        raise _unreadable(path, exc) from None
    try:
        yield reader
    finally:
        reader.close()


MCAP_MAGIC = b"\x89MCAP0\r\n"


def mcap_profile(path: Path) -> str | None:
    """The profile of an MCAP file's header record ("ros2", "ros1", ...), or None when it has no readable header."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    # magic, then the Header record: opcode 0x01, uint64 length, profile (uint32 length + bytes), library
    if len(head) < 21 or not head.startswith(MCAP_MAGIC) or head[8] != 0x01:
        return None
    size = int.from_bytes(head[17:21], "little")
    return head[21:21 + size].decode("utf-8", "replace") if 21 + size <= len(head) else None


def mcap_is_cut(path: Path) -> bool:
    """An MCAP file without its closing magic: a recording that was cut (power loss, a killed recorder)."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        if handle.tell() < 2 * len(MCAP_MAGIC):
            return True
        handle.seek(-len(MCAP_MAGIC), 2)
        return handle.read() != MCAP_MAGIC


def _unreadable(path: Path, exc: Exception) -> InputError:
    """Why rosbags cannot open ``path``, with the fix for the cases we can tell apart: a cut MCAP recording and
    an MCAP holding ROS 1 messages (``mcap convert x.bag``)."""
    found = f"{type(exc).__name__}: {exc}"
    files = [path] if path.suffix == ".mcap" else sorted(path.glob("*.mcap")) if path.is_dir() else []
    for mcap in files:
        if mcap_profile(mcap) == "ros1":
            return InputError(f"{mcap} holds ROS 1 messages (an MCAP with the ros1 profile, as `mcap convert "
                              "x.bag` writes): the ROS 2 reader cannot decode them", expected=BAG_KINDS, found=found,
                              fix="read the ROS 1 bag it was converted from (--source bag:x.bag, --calib bag:x.bag): "
                                  "edgeseg reads .bag files directly; without it, convert that bag to ROS 2 with "
                                  "rosbags-convert --src x.bag --dst x_ros2 (pip install rosbags)")
        if mcap_is_cut(mcap):
            recovered = mcap.with_name(mcap.stem + "-recovered.mcap")
            return InputError(f"{mcap} was cut off: the recording did not finish (no MCAP footer), so its index "
                              "is missing", expected=BAG_KINDS, found=found,
                              fix=f"recover the messages it holds with the mcap CLI: mcap recover {mcap} -o "
                                  f"{recovered} (github.com/foxglove/mcap releases), then read {recovered}")
    return InputError(f"cannot read bag {path}", expected=BAG_KINDS, found=found)


def _image_topics(reader: Any) -> dict[str, str]:
    return {name: info.msgtype for name, info in sorted(reader.topics.items()) if info.msgtype in IMAGE_TYPES}


def list_image_topics(path: str | Path) -> dict[str, str]:
    """Topic -> message type of every Image / CompressedImage topic in the bag, sorted by topic."""
    with open_bag(path) as reader:
        return _image_topics(reader)


def _listing(topics: dict[str, str]) -> str:
    return ", ".join(f"{name} ({msgtype.rsplit('/', 1)[-1]})" for name, msgtype in topics.items())


def _resolve(path: Path, topics: dict[str, str], topic: str | None) -> str:
    if not topics:
        raise InputError(f"bag {path} has no image topic", expected="a sensor_msgs/Image or CompressedImage topic",
                         found="no image topic", fix="record the camera topic (ros2 bag record /camera/image_raw)")
    if topic is None:
        if len(topics) == 1:
            return next(iter(topics))
        raise UsageError(f"bag {path} has several image topics", expected="--topic TOPIC, one of them",
                         found=_listing(topics), fix=f"pass --topic {next(iter(topics))} (or another listed)")
    if topic not in topics:
        raise UsageError(f"topic {topic} is not an image topic of bag {path}", expected=_listing(topics),
                         found=topic, fix=f"pass --topic {next(iter(topics))} (or another listed)")
    return topic


def resolve_topic(path: str | Path, topic: str | None = None) -> str:
    """``topic`` checked against the bag's image topics; None picks the only one (an error lists several)."""
    with open_bag(path) as reader:
        return _resolve(strip_bag_prefix(path), _image_topics(reader), topic)


def frame_name(index: int, stamp: int) -> str:
    """``000012_1700000000.100000000``: the index in the topic and the stamp, safe as a file name."""
    return f"{index:06d}_{stamp // 1_000_000_000}.{stamp % 1_000_000_000:09d}"


def _decode(reader: Any, connection: Any, log_time: int, raw: bytes, index: int) -> BagFrame:
    msg = reader.deserialize(raw, connection.msgtype)
    header_stamp = stamp_ns(msg.header)
    stamp = header_stamp or int(log_time)
    try:
        rgb = msg_to_rgb(msg)
    except InputError as exc:
        raise InputError(f"{connection.topic} message {index} ({frame_name(index, stamp)}): {exc.problem}",
                         expected=exc.expected, found=exc.found, fix=exc.fix) from None
    return BagFrame(frame_name(index, stamp), rgb, stamp, str(msg.header.frame_id), connection.topic, index,
                    int(log_time), not header_stamp)


def _messages(reader: Any, topic: str) -> Iterator[tuple[int, Any, int, bytes]]:
    """(index in the topic, connection, log time, raw) in recording order."""
    connections = [c for c in reader.connections if c.topic == topic]
    for index, (connection, log_time, raw) in enumerate(reader.messages(connections=connections)):
        yield index, connection, log_time, raw


def iter_bag_frames(path: str | Path, topic: str | None = None, *,
                    on_bad: Callable[[str, InputError], None] | None = None) -> Iterator[BagFrame]:
    """Every frame of ``topic`` (None: the bag's only image topic) in recording order.

    A message that cannot be decoded raises an InputError, or, with ``on_bad``, is passed to
    ``on_bad(name, error)`` and skipped.
    """
    with open_bag(path) as reader:
        topic = _resolve(strip_bag_prefix(path), _image_topics(reader), topic)
        for index, connection, log_time, raw in _messages(reader, topic):
            try:
                frame = _decode(reader, connection, log_time, raw, index)
            except InputError as exc:
                if on_bad is None:
                    raise
                on_bad(f"{index:06d}", exc)
                continue
            yield frame


def thumbnail(rgb: np.ndarray, size: int = THUMBNAIL) -> np.ndarray:
    """A size x size grey thumbnail (block means: noise averages out, motion does not)."""
    grey = rgb.astype(np.float32).mean(axis=2)
    rows = np.unique((np.arange(size) * grey.shape[0]) // size)
    cols = np.unique((np.arange(size) * grey.shape[1]) // size)
    sums = np.add.reduceat(np.add.reduceat(grey, rows, axis=0), cols, axis=1)
    counts = np.outer(np.diff(np.append(rows, grey.shape[0])), np.diff(np.append(cols, grey.shape[1])))
    return sums / counts


def _bin_starts(total: int, count: int) -> list[int]:
    """First message index of each of ``count`` equal stretches of ``total`` messages."""
    return list(range(total)) if count >= total else [i * total // count for i in range(count)]


class BagSampler:
    """``count`` frames spread evenly over a topic's recording, skipping near-duplicates, decoded lazily.

    The topic's messages are cut into ``count`` equal stretches; from each the first frame that differs
    from the last kept one (mean absolute difference of grey thumbnails >= ``min_difference``; 0 keeps
    every frame) is kept, so a stretch of only near-duplicates gives none. Only candidates are decoded and
    one frame is held at a time (a calibration feed preprocesses each as it comes). The topic is resolved
    and its messages counted when the sampler is made; an undecodable message is skipped and listed.
    """

    def __init__(self, path: str | Path, topic: str | None, count: int, *,
                 min_difference: float = DEFAULT_MIN_DIFFERENCE) -> None:
        if count < 1:
            raise UsageError("the number of frames to sample must be at least 1", found=str(count))
        self.path, self.count, self.min_difference = strip_bag_prefix(path), count, min_difference
        with open_bag(self.path) as reader:
            self.topic = _resolve(self.path, _image_topics(reader), topic)
            self.messages = reader.topics[self.topic].msgcount or sum(1 for _ in _messages(reader, self.topic))
        self.skipped_duplicates = 0
        self.skipped: list[tuple[str, str]] = []  # (message, why) for undecodable messages

    def __iter__(self) -> Iterator[BagFrame]:
        starts = _bin_starts(self.messages, self.count)
        stretch, filled, last = -1, -1, None
        with open_bag(self.path) as reader:
            for index, connection, log_time, raw in _messages(reader, self.topic):
                while stretch + 1 < len(starts) and starts[stretch + 1] <= index:
                    stretch += 1
                if stretch == filled:
                    continue  # this stretch already gave its frame: not even decoded
                try:
                    frame = _decode(reader, connection, log_time, raw, index)
                except InputError as exc:
                    self.skipped.append((f"{index:06d}", exc.problem))
                    continue
                small = thumbnail(frame.rgb)
                if last is not None and small.shape == last.shape and \
                        float(np.abs(small - last).mean()) < self.min_difference:
                    self.skipped_duplicates += 1
                    continue
                filled, last = stretch, small
                yield frame

    def provenance(self, used: list[tuple[int, int]]) -> dict:
        """What ranges.json records: the bag, topic, storage and the (index, stamp) of the frames ``used``."""
        return {"bag": str(self.path), "topic": self.topic, "storage": bag_storage(self.path),
                "messages": self.messages, "requested": self.count, "kept": len(used),
                "indices": [index for index, _ in used], "stamps_ns": [stamp for _, stamp in used],
                "skipped_duplicates": self.skipped_duplicates, "min_difference": self.min_difference}


def sample_bag_frames(path: str | Path, topic: str | None, count: int, *,
                      min_difference: float = DEFAULT_MIN_DIFFERENCE) -> tuple[list[BagFrame], dict]:
    """Up to ``count`` frames spread evenly over the recording (``BagSampler``), and their provenance."""
    sampler = BagSampler(path, topic, count, min_difference=min_difference)
    frames = list(sampler)
    return frames, sampler.provenance([(f.index, f.stamp_ns) for f in frames])


def bag_files(path: str | Path) -> list[Path]:
    """The files a bag consists of (the bag file, or the files of a rosbag2 folder), sorted."""
    bag = _check_bag_path(path)
    return sorted(p for p in bag.iterdir() if p.is_file()) if bag.is_dir() else [bag]


def bag_sha256(path: str | Path, topic: str | None = None) -> str:
    """One hash over a bag's file names and contents, and the topic read from it (a step cache key)."""
    digest = hashlib.sha256(sha256_files(bag_files(path)).encode())
    digest.update(f"\0{topic or ''}".encode())
    return digest.hexdigest()
