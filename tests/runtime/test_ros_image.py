"""ROS image messages <-> numpy: every encoding, row padding, mono16 byte order, compressed images, errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from helpers.bags import ENCODINGS, encode_pixels, make_compressed_msg, make_image_msg, typestore

from edgeseg.errors import InputError
from edgeseg.runtime.ros_image import (
    SUPPORTED_ENCODINGS,
    compressed_format,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    mask_to_image_msg,
    msg_to_rgb,
    rgb_to_image_msg,
    stamp_ns,
    typestore_factory,
)

STAMP = 1_700_000_123_456_789_012


def pair_constant(height: int = 6, width: int = 8, seed: int = 1) -> np.ndarray:
    """Random RGB where each horizontal pixel pair shares its colour (yuv422 keeps it up to rounding)."""
    half = np.random.default_rng(seed).integers(0, 256, (height, width // 2, 3), dtype=np.uint8)
    return np.repeat(half, 2, axis=1)


def grey_frame(height: int = 5, width: int = 6) -> np.ndarray:
    grey = np.arange(height * width, dtype=np.uint8).reshape(height, width) * 8
    return np.repeat(grey[:, :, None], 3, axis=2)


@pytest.fixture(scope="module")
def store():
    return typestore()


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_round_trip_exactly(store, encoding: str, pad: int) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    msg = make_image_msg(store, rgb, encoding, pad=pad)
    assert msg.step == 9 * (4 if "a" in encoding[3:] else 3) + pad
    out = image_msg_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (7, 9, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["mono8", "mono16"])
def test_mono_encodings_replicate_grey(store, encoding: str, bigendian: bool, pad: int) -> None:
    rgb = grey_frame()
    msg = make_image_msg(store, rgb, encoding, pad=pad, bigendian=bigendian)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


def test_mono16_keeps_the_top_byte_and_honours_byte_order(store) -> None:
    values = np.array([[0x0000, 0x00FF, 0x0100, 0xABCD, 0xFFFF, 0x7F80]], dtype=np.uint16)
    for bigendian, dtype in ((False, "<u2"), (True, ">u2")):
        msg = store.types["sensor_msgs/msg/Image"](
            header=make_image_msg(store, grey_frame()).header, height=1, width=6, encoding="mono16",
            is_bigendian=int(bigendian), step=12, data=values.astype(dtype).view(np.uint8).reshape(-1))
        np.testing.assert_array_equal(image_msg_to_rgb(msg)[0, :, 0], [0x00, 0x00, 0x01, 0xAB, 0xFF, 0x7F])
    # the same bytes read with the wrong byte order give other values: the flag is honoured
    msg.is_bigendian = 0
    assert image_msg_to_rgb(msg)[0, 3, 0] == 0xCD


@pytest.mark.parametrize("pad", [0, 4])
@pytest.mark.parametrize("encoding", ["uyvy", "yuv422", "yuyv", "yuv422_yuy2"])
def test_yuv422_round_trips_within_rounding(store, encoding: str, pad: int) -> None:
    rgb = pair_constant()
    out = image_msg_to_rgb(make_image_msg(store, rgb, encoding, pad=pad))
    assert out.shape == rgb.shape
    # BT.601 limited range squeezes 256 levels into 220: a round trip is off by at most a few levels
    assert np.abs(out.astype(int) - rgb).max() <= 3


@pytest.mark.parametrize("encoding,code", [("uyvy", "COLOR_YUV2RGB_UYVY"), ("yuyv", "COLOR_YUV2RGB_YUYV")])
def test_yuv422_matches_opencv(store, encoding: str, code: str) -> None:
    cv2 = pytest.importorskip("cv2")
    rgb = np.random.default_rng(3).integers(0, 256, (8, 10, 3), dtype=np.uint8)  # chroma really subsampled
    data, _ = encode_pixels(rgb, encoding)
    expected = cv2.cvtColor(data.reshape(8, 10, 2), getattr(cv2, code))
    out = image_msg_to_rgb(make_image_msg(store, rgb, encoding))
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_uyvy_and_yuyv_differ_in_byte_order(store) -> None:
    rgb = pair_constant(seed=7)
    uyvy = make_image_msg(store, rgb, "uyvy")
    uyvy.encoding = "yuyv"  # the same bytes read as the other order must not give the same picture
    assert np.abs(image_msg_to_rgb(uyvy).astype(int) - rgb).max() > 30


def test_every_supported_encoding_is_tested() -> None:
    assert set(SUPPORTED_ENCODINGS) == set(ENCODINGS)


@pytest.mark.parametrize("encoding", ["bayer_rggb8", "16UC1", "32FC1", "nv21"])
def test_unsupported_encoding_lists_the_supported_ones(store, encoding: str) -> None:
    msg = make_image_msg(store, grey_frame(), "mono8")
    msg.encoding = encoding
    with pytest.raises(InputError) as info:
        image_msg_to_rgb(msg)
    text = str(info.value)
    assert repr(encoding) in text
    for name in SUPPORTED_ENCODINGS:
        assert name in info.value.expected
    assert "jpeg" in text and "png" in text


def test_truncated_data_is_an_input_error(store) -> None:
    msg = make_image_msg(store, grey_frame(), "rgb8")
    msg.data = msg.data[: msg.step * 2]
    with pytest.raises(InputError, match="inconsistent"):
        image_msg_to_rgb(msg)


def test_odd_width_yuv_is_an_input_error(store) -> None:
    msg = SimpleNamespace(height=1, width=3, encoding="uyvy", is_bigendian=0, step=6, data=bytes(6))
    with pytest.raises(InputError, match="even width"):
        image_msg_to_rgb(msg)


def test_duck_typed_message_with_bytes_data_decodes() -> None:
    # rclpy's messages hold data as array.array / bytes: any object with the fields works
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = SimpleNamespace(height=2, width=3, encoding="bgr8", is_bigendian=0, step=9,
                          data=rgb[..., ::-1].tobytes())
    np.testing.assert_array_equal(msg_to_rgb(msg), rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
@pytest.mark.parametrize("format_string", [None, "{fmt}", "bgr8; {fmt} compressed bgr8"])
def test_compressed_images_decode(store, fmt: str, format_string: str | None) -> None:
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :12] = (200, 40, 30)
    rgb[:, 12:] = (20, 90, 220)
    text = format_string.format(fmt=fmt) if format_string else None
    msg = make_compressed_msg(store, rgb, fmt, format_string=text)
    out = compressed_msg_to_rgb(msg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    if fmt == "png":
        np.testing.assert_array_equal(out, rgb)
    else:  # lossy: flat colour areas stay close
        assert np.abs(out.astype(int) - rgb).mean() < 4
    np.testing.assert_array_equal(msg_to_rgb(msg), out)


def test_compressed_format_strings() -> None:
    assert compressed_format("jpeg") == "jpeg"
    assert compressed_format("rgb8; jpeg compressed bgr8") == "jpeg"
    assert compressed_format("PNG") == "png"
    with pytest.raises(InputError, match="compressedDepth"):
        compressed_format("16UC1; compressedDepth png")
    with pytest.raises(InputError, match="unsupported CompressedImage format") as info:
        compressed_format("theora")
    assert "jpeg or png" in info.value.expected


def test_corrupt_compressed_data_is_an_input_error(store) -> None:
    msg = make_compressed_msg(store, grey_frame(), "jpeg")
    msg.data = msg.data[:20]
    with pytest.raises(InputError, match="cannot decode a jpeg"):
        compressed_msg_to_rgb(msg)


@pytest.mark.parametrize("ros1", [False, True])
def test_output_messages_keep_stamp_and_frame_id(ros1: bool) -> None:
    store = typestore(ros1)
    source = make_image_msg(store, grey_frame(), "mono8", stamp_ns=STAMP, frame_id="cam_optical", ros1=ros1)
    mask = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = mask_to_image_msg(mask, source.header, typestore=store)
    assert (out.encoding, out.height, out.width, out.step) == ("mono8", 3, 4, 4)
    assert stamp_ns(out.header) == STAMP and out.header.frame_id == "cam_optical"
    np.testing.assert_array_equal(image_msg_to_rgb(out)[..., 0], mask)
    # serializable with the store's own serializer (what a bag writer does)
    serialize = store.serialize_ros1 if ros1 else store.serialize_cdr
    assert len(serialize(out, "sensor_msgs/msg/Image")) > mask.size
    rgb = np.random.default_rng(2).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    overlay = rgb_to_image_msg(rgb, source.header, typestore=store)
    assert (overlay.encoding, overlay.step) == ("rgb8", 12)
    assert stamp_ns(overlay.header) == STAMP and overlay.header.frame_id == "cam_optical"
    np.testing.assert_array_equal(image_msg_to_rgb(overlay), rgb)


def test_output_messages_through_a_custom_factory() -> None:
    built = []

    def factory(header, height, width, encoding, step, data):
        built.append((header, height, width, encoding, step, bytes(data)))
        return built[-1]

    header = SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=2), frame_id="f")
    mask_to_image_msg(np.ones((2, 3), np.uint8), header, factory=factory)
    assert built == [(header, 2, 3, "mono8", 3, b"\x01" * 6)]


def test_output_messages_refuse_bad_arrays() -> None:
    header = SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0), frame_id="")
    factory = typestore_factory(typestore())
    with pytest.raises(InputError, match="uint8 HxW mask"):
        mask_to_image_msg(np.zeros((2, 2), np.int32), header, factory=factory)
    with pytest.raises(InputError, match="HxWx3"):
        rgb_to_image_msg(np.zeros((2, 2), np.uint8), header, factory=factory)
