"""Small ROS bags for the tests, written with rosbags' own writers (no ROS install).

``write_image_bag`` writes RGB frames to one image topic as ``sensor_msgs/Image`` (any encoding
``encode_pixels`` knows) or ``sensor_msgs/CompressedImage`` (jpeg, png), in every storage:

- ``"sqlite3"`` / ``"mcap"``: ROS 2. A path ending in ``.db3`` / ``.mcap`` becomes that bare storage file
  (rosbags and Foxglove open it directly); any other path becomes a rosbag2 folder with metadata.yaml.
- ``"ros1"``: a ROS 1 ``.bag`` file.

``encode_pixels`` is written independently of ``edgeseg.runtime.ros_image`` (its test oracle): mono
encodings store the rounded channel mean (pass grey frames to round-trip them), mono16 stores ``v * 257`` so
its top byte is ``v``, and yuv422 uses BT.601 limited range with chroma averaged over each pixel pair.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
FIRST_STAMP_NS = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000  # 10 Hz
ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "uyvy", "yuv422", "yuyv", "yuv422_yuy2")


def typestore(ros1: bool = False) -> Any:
    rosbags_typesys = pytest.importorskip("rosbags.typesys")
    store = rosbags_typesys.Stores.ROS1_NOETIC if ros1 else rosbags_typesys.Stores.ROS2_HUMBLE
    return rosbags_typesys.get_typestore(store)


def default_stamps(count: int) -> list[int]:
    return [FIRST_STAMP_NS + i * PERIOD_NS for i in range(count)]


def _rgb_to_yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return y, u, v


def _yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    if rgb.shape[1] % 2:
        raise ValueError("yuv422 needs an even width")
    y, u, v = _rgb_to_yuv(rgb)
    u2 = (u[:, 0::2] + u[:, 1::2]) / 2  # one chroma sample per pixel pair
    v2 = (v[:, 0::2] + v[:, 1::2]) / 2
    planes = {"y0": y[:, 0::2], "y1": y[:, 1::2], "u": u2, "v": v2}
    names = ("u", "y0", "v", "y1") if order == "uyvy" else ("y0", "u", "y1", "v")
    packed = np.stack([planes[n] for n in names], axis=-1)  # H x W/2 x 4
    return np.clip(np.rint(packed), 0, 255).astype(np.uint8).reshape(rgb.shape[0], -1)


def encode_pixels(rgb: np.ndarray, encoding: str, *, pad: int = 0, bigendian: bool = False) -> tuple[np.ndarray, int]:
    """(flat uint8 data, step) of ``rgb`` (HxWx3 uint8) in ``encoding``; each row padded with ``pad`` bytes."""
    height = rgb.shape[0]
    grey = np.rint(rgb.astype(np.float64).mean(axis=2)).astype(np.uint8)
    alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    if encoding == "rgb8":
        rows = rgb.reshape(height, -1)
    elif encoding == "bgr8":
        rows = rgb[..., ::-1].reshape(height, -1)
    elif encoding == "rgba8":
        rows = np.concatenate([rgb, alpha], axis=2).reshape(height, -1)
    elif encoding == "bgra8":
        rows = np.concatenate([rgb[..., ::-1], alpha], axis=2).reshape(height, -1)
    elif encoding == "mono8":
        rows = grey
    elif encoding == "mono16":
        wide = grey.astype(np.uint16) * 257
        rows = wide.astype(">u2" if bigendian else "<u2").view(np.uint8).reshape(height, -1)
    elif encoding in ("uyvy", "yuv422"):
        rows = _yuv422(rgb, "uyvy")
    elif encoding in ("yuyv", "yuv422_yuy2"):
        rows = _yuv422(rgb, "yuyv")
    else:
        raise ValueError(f"encode_pixels cannot write {encoding!r}")
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    if pad:
        rows = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    return rows.reshape(-1), rows.shape[1]


def _header(store: Any, stamp_ns: int, frame_id: str, ros1: bool) -> Any:
    time = store.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    header_cls = store.types["std_msgs/msg/Header"]
    if ros1:
        return header_cls(seq=0, stamp=time, frame_id=frame_id)
    return header_cls(stamp=time, frame_id=frame_id)


def make_image_msg(store: Any, rgb: np.ndarray, encoding: str = "rgb8", *, stamp_ns: int = FIRST_STAMP_NS,
                   frame_id: str = "camera", pad: int = 0, bigendian: bool = False, ros1: bool = False) -> Any:
    """A ``sensor_msgs/Image`` of ``store``'s class holding ``rgb`` in ``encoding``."""
    data, step = encode_pixels(rgb, encoding, pad=pad, bigendian=bigendian)
    return store.types[IMAGE](
        header=_header(store, stamp_ns, frame_id, ros1), height=rgb.shape[0], width=rgb.shape[1],
        encoding=encoding, is_bigendian=int(bigendian), step=step, data=data,
    )


def compress(rgb: np.ndarray, fmt: str) -> np.ndarray:
    image_mod = pytest.importorskip("PIL.Image")
    buffer = io.BytesIO()
    image_mod.fromarray(rgb).save(buffer, format="JPEG" if fmt == "jpeg" else "PNG", quality=95)
    return np.frombuffer(buffer.getvalue(), np.uint8)


def make_compressed_msg(store: Any, rgb: np.ndarray, fmt: str = "jpeg", *, stamp_ns: int = FIRST_STAMP_NS,
                        frame_id: str = "camera", format_string: str | None = None, ros1: bool = False) -> Any:
    """A ``sensor_msgs/CompressedImage`` (``fmt``: jpeg or png); ``format_string`` as image_transport writes it."""
    text = format_string if format_string is not None else f"rgb8; {fmt} compressed bgr8"
    return store.types[COMPRESSED](header=_header(store, stamp_ns, frame_id, ros1), format=text,
                                   data=compress(rgb, fmt))


def _ros2_writer(path: Path, storage: str):
    rosbag2 = pytest.importorskip("rosbags.rosbag2")
    plugin = rosbag2.StoragePlugin.MCAP if storage == "mcap" else rosbag2.StoragePlugin.SQLITE3
    return rosbag2.Writer(path, version=9, storage_plugin=plugin)


def write_image_bag(path: str | Path, storage: str, frames: Sequence[np.ndarray], topic: str = "/cam/image_raw",
                    encoding: str = "rgb8", compressed: str | None = None, stamps: Sequence[int] | None = None, *,
                    frame_id: str = "camera", log_times: Sequence[int] | None = None, pad: int = 0,
                    bigendian: bool = False, extra_image_topics: Sequence[str] = (),
                    string_topic: str | None = None) -> Path:
    """Write ``frames`` (HxWx3 uint8 RGB) to ``topic`` of a new bag at ``path``; returns ``path``.

    ``storage``: "sqlite3", "mcap" or "ros1". ``compressed`` ("jpeg"/"png") writes CompressedImage instead of
    Image. ``stamps`` are the header stamps in ns (default 10 Hz from ``FIRST_STAMP_NS``), ``log_times`` the
    bag's receive times (default: the stamps). ``extra_image_topics`` get the same frames as rgb8 Images,
    ``string_topic`` one std_msgs/String (a non-image topic).
    """
    path = Path(path)
    ros1 = storage == "ros1"
    if storage not in ("sqlite3", "mcap", "ros1"):
        raise ValueError(f"unknown storage {storage!r}")
    stamps = list(stamps) if stamps is not None else default_stamps(len(frames))
    log_times = list(log_times) if log_times is not None else [s if s else FIRST_STAMP_NS for s in stamps]
    store = typestore(ros1)
    serialize = store.serialize_ros1 if ros1 else store.serialize_cdr
    bare_file = not ros1 and path.suffix in (".db3", ".mcap")
    tmp = Path(tempfile.mkdtemp(prefix=".bag.", dir=path.parent))
    target = tmp / (path.name if ros1 else path.stem)
    if ros1:
        writer = pytest.importorskip("rosbags.rosbag1").Writer(target)
    else:
        writer = _ros2_writer(target, storage)
    with writer:
        msgtype = COMPRESSED if compressed else IMAGE
        main = writer.add_connection(topic, msgtype, typestore=store) if len(frames) else None  # none: no topic
        extras = [writer.add_connection(t, IMAGE, typestore=store) for t in extra_image_topics]
        for frame, stamp, log_time in zip(frames, stamps, log_times, strict=True):
            if compressed:
                msg = make_compressed_msg(store, frame, compressed, stamp_ns=stamp, frame_id=frame_id, ros1=ros1)
            else:
                msg = make_image_msg(store, frame, encoding, stamp_ns=stamp, frame_id=frame_id, pad=pad,
                                     bigendian=bigendian, ros1=ros1)
            writer.write(main, log_time, serialize(msg, msgtype))
            for conn in extras:
                extra = make_image_msg(store, frame, "rgb8", stamp_ns=stamp, frame_id=frame_id, ros1=ros1)
                writer.write(conn, log_time, serialize(extra, IMAGE))
        if string_topic:
            conn = writer.add_connection(string_topic, "std_msgs/msg/String", typestore=store)
            text = store.types["std_msgs/msg/String"](data="hello")
            writer.write(conn, log_times[0] if log_times else FIRST_STAMP_NS, serialize(text, "std_msgs/msg/String"))
    if bare_file:
        (target / f"{target.name}{path.suffix}").replace(path)
    else:
        target.replace(path)
    shutil.rmtree(tmp)
    return path


def gradient_frames(count: int, height: int = 24, width: int = 32, *, seed: int = 0) -> list[np.ndarray]:
    """``count`` distinct RGB frames (a moving gradient plus seeded noise), different enough not to be duplicates."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        base = (xs * 7 + ys * 3 + i * 37) % 256
        rgb = np.stack([base, (base + 85) % 256, (255 - base)], axis=2).astype(np.int64)
        rgb = rgb + rng.integers(-10, 11, rgb.shape)
        frames.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return frames
