"""ROS image messages <-> numpy (layer 1; numpy only at import, rosbags and Pillow imported when used).

Decoding works on any object with the ``sensor_msgs`` attribute names, so the same functions take
rosbags' message classes (bags, tests) and rclpy's (the ROS 2 node):

- ``image_msg_to_rgb``: ``sensor_msgs/Image`` -> uint8 HxWx3 RGB for ``SUPPORTED_ENCODINGS``. ``step``
  (row padding) is honoured; mono16 keeps its top byte (``v >> 8``: a fixed, stamp-independent scale, so
  one frame never looks brighter than the next); yuv422 is BT.601 limited range, as OpenCV's cvtColor.
- ``compressed_msg_to_rgb``: ``sensor_msgs/CompressedImage`` in jpeg or png (image_transport's
  ``"rgb8; jpeg compressed bgr8"`` format strings too), decoded with Pillow.
- ``mask_to_image_msg`` (mono8) and ``rgb_to_image_msg`` (rgb8) build output messages with the input's
  stamp and frame_id; ``segmentation_msgs`` makes both from a frame and its mask (the node's and the
  bag writer's output), from a rosbags typestore (ROS 2 Humble by default; pass a ROS 1 one for ``.bag``)
  or any ``factory(header, height, width, encoding, step, data)`` (the node passes rclpy's).
"""

from __future__ import annotations

import io
from typing import Any, Callable

import numpy as np

from ..errors import InputError, require
from ..images import to_uint8
from ..spec import resize_mask_nearest
from .kernels import numpy_overlay

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
# encoding -> bytes per pixel (yuv422: 2 bytes per pixel, one U/V pair per two pixels)
BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2,
                   "yuv422": 2, "uyvy": 2, "yuv422_yuy2": 2, "yuyv": 2}
SUPPORTED_ENCODINGS = tuple(BYTES_PER_PIXEL)
COMPRESSED_FORMATS = ("jpeg", "png")
# factory(header, height, width, encoding, step, data: bytes) -> message: the one way messages are built
MessageFactory = Callable[[Any, int, int, str, int, bytes], Any]

_typestores: dict = {}


def default_typestore(ros1: bool = False) -> Any:
    """rosbags' ROS 2 Humble (or ROS 1 Noetic) message classes, created once."""
    if ros1 not in _typestores:
        typesys = require("rosbags.typesys", extra="ros", purpose="ROS messages")
        store = typesys.Stores.ROS1_NOETIC if ros1 else typesys.Stores.ROS2_HUMBLE
        _typestores[ros1] = typesys.get_typestore(store)
    return _typestores[ros1]


def stamp_ns(header: Any) -> int:
    """A header's stamp in nanoseconds (ROS 2's ``nanosec``; rosbags names ROS 1's field the same)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _flat_bytes(data: Any) -> np.ndarray:
    """A message's ``data`` (numpy array, bytes, array.array, list) as a flat uint8 array, not copied."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else np.frombuffer(data.tobytes(), np.uint8)
    try:
        return np.frombuffer(data, np.uint8)
    except TypeError:  # a list of ints
        return np.asarray(data, dtype=np.uint8)


def _yuv422_to_rgb(rows: np.ndarray, width: int, yuyv: bool) -> np.ndarray:
    """Packed 4:2:2 rows (H x 2W bytes) -> RGB, BT.601 limited range (OpenCV's COLOR_YUV2RGB_UYVY/_YUYV)."""
    quads = rows.reshape(rows.shape[0], width // 2, 4).astype(np.float32)
    if yuyv:
        y0, u, y1, v = quads[..., 0], quads[..., 1], quads[..., 2], quads[..., 3]
    else:
        u, y0, v, y1 = quads[..., 0], quads[..., 1], quads[..., 2], quads[..., 3]
    y = np.stack([y0, y1], axis=-1).reshape(rows.shape[0], width) - 16.0
    u = np.repeat(u, 2, axis=1) - 128.0
    v = np.repeat(v, 2, axis=1) - 128.0
    rgb = np.stack([1.164 * y + 1.596 * v, 1.164 * y - 0.391 * u - 0.813 * v, 1.164 * y + 2.018 * u], axis=-1)
    return to_uint8(rgb)


def _unsupported(encoding: str) -> InputError:
    return InputError(
        f"unsupported image encoding {encoding!r}",
        expected="sensor_msgs/Image in " + ", ".join(SUPPORTED_ENCODINGS) + ", or a CompressedImage (jpeg, png)",
        found=repr(encoding),
        fix="republish the camera in rgb8/bgr8 (e.g. image_proc or a compressed image_transport topic)",
    )


def _pixel_rows(msg: Any, encoding: str) -> np.ndarray:
    """The H x (W * bytes per pixel) pixel bytes of ``msg``, without the row padding ``step`` adds."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * BYTES_PER_PIXEL[encoding]
    data = _flat_bytes(msg.data)
    if height < 1 or width < 1 or step < row_bytes or data.size < step * (height - 1) + row_bytes:
        raise InputError(
            "image message is inconsistent",
            expected=f"height, width >= 1, step >= {row_bytes} (width x {BYTES_PER_PIXEL[encoding]} bytes) "
                     "and step x height bytes of data",
            found=f"{encoding} {height}x{width}, step {step}, {data.size} bytes",
        )
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") and width % 2:
        raise InputError("a yuv422 image must have an even width", found=f"width {width}")
    if data.size < step * height:  # a last row without its padding
        data = np.concatenate([data, np.zeros(step * height - data.size, np.uint8)])
    return data[: step * height].reshape(height, step)[:, :row_bytes]


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """A ``sensor_msgs/Image`` (any object with its fields) as a new uint8 HxWx3 RGB array."""
    encoding = str(msg.encoding).lower()
    if encoding not in BYTES_PER_PIXEL:
        raise _unsupported(str(msg.encoding))
    rows = _pixel_rows(msg, encoding)
    height, width = rows.shape[0], int(msg.width)
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        pixels = rows.reshape(height, width, BYTES_PER_PIXEL[encoding])[..., :3]
        return np.ascontiguousarray(pixels[..., ::-1] if encoding.startswith("bgr") else pixels)
    if encoding in ("mono8", "mono16"):
        if encoding == "mono16":
            wide = rows.copy().view(">u2" if msg.is_bigendian else "<u2")
            grey = (wide >> 8).astype(np.uint8)  # the top byte: 16-bit -> 8-bit without a per-frame gain
        else:
            grey = rows
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    return _yuv422_to_rgb(rows, width, yuyv=encoding in ("yuv422_yuy2", "yuyv"))


def compressed_format(text: str) -> str:
    """``"jpeg"`` or ``"png"`` from a CompressedImage ``format`` ("jpeg", "rgb8; jpeg compressed bgr8", ...). An
    empty format is JPEG: the message definition makes jpeg the default."""
    words = str(text).lower().replace(";", " ").split()
    if not words:
        return "jpeg"
    if "compresseddepth" in words:
        raise InputError("compressedDepth images are not supported", found=repr(text),
                         expected="a jpeg or png CompressedImage of a camera image")
    for word in words:
        if word in ("jpeg", "jpg"):
            return "jpeg"
        if word == "png":
            return "png"
    raise InputError("unsupported CompressedImage format", expected="jpeg or png (e.g. 'rgb8; jpeg compressed bgr8')",
                     found=repr(text), fix="record the camera's compressed topic with the jpeg or png transport")


def compressed_msg_to_rgb(msg: Any) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` (jpeg or png) as a new uint8 HxWx3 RGB array."""
    kind = compressed_format(msg.format)
    image_mod = require("PIL.Image", purpose="decoding compressed images")
    try:
        image = image_mod.open(io.BytesIO(_flat_bytes(msg.data).tobytes()))
        image.load()
    except Exception as exc:  # Pillow raises many types for bad data
        raise InputError(f"cannot decode a {kind} CompressedImage", found=f"{type(exc).__name__}: {exc}") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit png: the top byte, as mono16
        grey = (np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def msg_to_rgb(msg: Any) -> np.ndarray:
    """An Image or a CompressedImage (told apart by their fields) as uint8 HxWx3 RGB."""
    return compressed_msg_to_rgb(msg) if hasattr(msg, "format") else image_msg_to_rgb(msg)


def typestore_factory(typestore: Any = None) -> MessageFactory:
    """A factory building rosbags ``sensor_msgs/Image`` messages of ``typestore`` (default: ROS 2 Humble)."""
    store = typestore if typestore is not None else default_typestore()
    header_cls = store.types["std_msgs/msg/Header"]
    with_seq = "seq" in header_cls.__dataclass_fields__  # ROS 1's Header

    def build(header: Any, height: int, width: int, encoding: str, step: int, data: bytes) -> Any:
        stamp = store.types["builtin_interfaces/msg/Time"](sec=int(header.stamp.sec),
                                                            nanosec=int(header.stamp.nanosec))
        extra = {"seq": int(getattr(header, "seq", 0))} if with_seq else {}
        out_header = header_cls(stamp=stamp, frame_id=str(header.frame_id), **extra)
        return store.types[IMAGE_TYPE](header=out_header, height=height, width=width, encoding=encoding,
                                       is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))

    return build


def _image(array: np.ndarray, header: Any, encoding: str, typestore: Any,
           factory: MessageFactory | None) -> Any:
    build = factory if factory is not None else typestore_factory(typestore)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    height, width = array.shape[:2]
    return build(header, height, width, encoding, array[0].nbytes if height else 0, array.tobytes())


def mask_to_image_msg(mask: np.ndarray, header: Any, *, typestore: Any = None,
                      factory: MessageFactory | None = None) -> Any:
    """A mono8 ``sensor_msgs/Image`` of the HxW class mask with ``header``'s stamp and frame_id."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise InputError("a mask message needs a uint8 HxW mask", found=f"{mask.dtype} {mask.shape}")
    return _image(mask, header, "mono8", typestore, factory)


def rgb_to_image_msg(rgb: np.ndarray, header: Any, *, typestore: Any = None,
                     factory: MessageFactory | None = None) -> Any:
    """An rgb8 ``sensor_msgs/Image`` (the colour overlay) with ``header``'s stamp and frame_id."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError("an rgb8 message needs a uint8 HxWx3 image", found=f"{rgb.dtype} {rgb.shape}")
    return _image(rgb, header, "rgb8", typestore, factory)


def segmentation_msgs(rgb: np.ndarray, mask: np.ndarray, header: Any, factory: MessageFactory, *,
                      palette: np.ndarray, alpha: float, overlay: np.ndarray | None = None,
                      with_overlay: bool = True) -> tuple[Any, Any | None]:
    """(mono8 mask message, rgb8 overlay message) of one frame, both with ``header``. The mask is resized to
    the frame (nearest); the overlay is blended unless given, and None when ``with_overlay`` is False."""
    height, width = rgb.shape[:2]
    if mask.shape != (height, width):
        mask = resize_mask_nearest(mask, height, width)
    mask_msg = mask_to_image_msg(np.ascontiguousarray(mask, dtype=np.uint8), header, factory=factory)
    if not with_overlay:
        return mask_msg, None
    if overlay is None:
        overlay = numpy_overlay(rgb, mask, palette, alpha)
    return mask_msg, rgb_to_image_msg(overlay, header, factory=factory)
