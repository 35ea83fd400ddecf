"""Bags other tools write or read (issue #24): a CompressedImage with an empty format (JPEG by definition), a cut
.mcap recording and an .mcap of ROS 1 messages (errors that say what to run), and the metadata.yaml of a rosbag2
folder BagMaskWriter writes, checked against the field types ROS 2 Humble's reader decodes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.bags import gradient_frames, make_compressed_msg, typestore, write_image_bag

from edgeseg.errors import InputError

pytest.importorskip("rosbags")


def test_an_empty_compressed_format_is_jpeg() -> None:
    from edgeseg.runtime.ros_image import compressed_format, msg_to_rgb

    assert compressed_format("") == "jpeg" and compressed_format("  ") == "jpeg"
    frame = gradient_frames(1)[0]
    msg = make_compressed_msg(typestore(), frame, "jpeg", format_string="")
    image_mod = pytest.importorskip("PIL.Image")
    want = np.asarray(image_mod.open(io.BytesIO(np.asarray(msg.data).tobytes())).convert("RGB"))
    assert np.array_equal(msg_to_rgb(msg), want) and want.shape == frame.shape


def test_an_empty_format_bag_is_read(tmp_path: Path) -> None:
    from edgeseg.runtime.bags import iter_bag_frames

    rosbag2 = pytest.importorskip("rosbags.rosbag2")
    store = typestore()
    path = tmp_path / "empty_format"
    with rosbag2.Writer(path, version=8, storage_plugin=rosbag2.StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/cam/image_raw/compressed", "sensor_msgs/msg/CompressedImage", typestore=store)
        for i, frame in enumerate(gradient_frames(2)):
            msg = make_compressed_msg(store, frame, "jpeg", stamp_ns=10**18 + i, format_string="")
            writer.write(conn, 10**18 + i, store.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
    assert [f.rgb.shape for f in iter_bag_frames(path)] == [(24, 32, 3)] * 2


def test_a_cut_mcap_names_mcap_recover(tmp_path: Path) -> None:
    from edgeseg.runtime.bags import list_image_topics

    full = write_image_bag(tmp_path / "full.mcap", "mcap", gradient_frames(10))
    data = full.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError) as error:
        list_image_topics(cut)
    text = error.value.format()
    assert "was cut off" in text and f"mcap recover {cut} -o {tmp_path / 'cut-recovered.mcap'}" in text


def test_a_ros1_profile_mcap_says_how_to_read_it(tmp_path: Path) -> None:
    from edgeseg.runtime.bags import iter_bag_frames, mcap_profile

    full = write_image_bag(tmp_path / "full.mcap", "mcap", gradient_frames(2))
    assert mcap_profile(full) == "ros2"
    data = bytearray(full.read_bytes())
    at = data.index(b"ros2")  # the Header record's profile, before any chunk (no checksum covers it)
    data[at:at + 4] = b"ros1"
    converted = tmp_path / "converted.mcap"
    converted.write_bytes(bytes(data))
    assert mcap_profile(converted) == "ros1"
    with pytest.raises(InputError) as error:
        next(iter_bag_frames(converted))
    text = error.value.format()
    assert "ROS 1 messages" in text and "bag:x.bag" in text and "rosbags-convert" in text


# -- metadata.yaml against ROS 2 Humble's reader ------------------------------------------------------------
# rosbag2_storage (branch humble), yaml.hpp's convert<...>::decode: which fields it reads, as which type, from
# which metadata version on. A field it reads as a string must be a YAML scalar; a list where it reads a string
# is "bad conversion" there.
INT, STR = "int", "str"
HUMBLE_BAG = {"version": (INT, 1), "storage_identifier": (STR, 1), "duration": ({"nanoseconds": INT}, 1),
              "starting_time": ({"nanoseconds_since_epoch": INT}, 1), "message_count": (INT, 1),
              "relative_file_paths": ([STR], 1), "compression_format": (STR, 3), "compression_mode": (STR, 3),
              "files": ([{"path": STR, "starting_time": {"nanoseconds_since_epoch": INT},
                          "duration": {"nanoseconds": INT}, "message_count": INT}], 5)}
HUMBLE_TOPIC = {"name": (STR, 1), "type": (STR, 1), "serialization_format": (STR, 1),
                "offered_qos_profiles": (STR, 4)}
HUMBLE_VERSION_MAX = 8  # Humble reads every field above from versions it does not write (5) up to 8; 9 changed


def check(value: Any, kind: Any, where: str) -> None:
    if kind == INT:
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an integer"
    elif kind == STR:  # yaml-cpp's as<std::string>() takes any scalar, never a sequence or a map
        assert value is None or isinstance(value, (str, int, float)), f"{where}: {value!r} is not a scalar"
    elif isinstance(kind, list):
        assert isinstance(value, list), f"{where}: {value!r} is not a sequence"
        for k, item in enumerate(value):
            check(item, kind[0], f"{where}[{k}]")
    else:
        assert isinstance(value, dict), f"{where}: {value!r} is not a map"
        for key, sub in kind.items():
            assert key in value, f"{where}: no {key}"
            check(value[key], sub, f"{where}.{key}")


def check_humble_metadata(info: dict) -> None:
    version = info["version"]
    assert isinstance(version, int) and version <= HUMBLE_VERSION_MAX, version
    for key, (kind, since) in HUMBLE_BAG.items():
        if version >= since:
            assert key in info, key
            check(info[key], kind, key)
    topics = info["topics_with_message_count"]
    assert isinstance(topics, list) and topics
    for k, entry in enumerate(topics):
        check(entry["message_count"], INT, f"topics[{k}].message_count")
        for key, (kind, since) in HUMBLE_TOPIC.items():
            if version >= since:
                check(entry["topic_metadata"][key], kind, f"topics[{k}].topic_metadata.{key}")


def test_a_rosbag2_folder_is_what_humble_reads(tmp_path: Path) -> None:
    yaml = pytest.importorskip("ruamel.yaml")
    from edgeseg.runtime.bag_writer import BagMaskWriter
    from edgeseg.runtime.bags import iter_bag_frames, list_image_topics

    source = write_image_bag(tmp_path / "in.mcap", "mcap", gradient_frames(3), topic="/cam/image_raw")
    with BagMaskWriter(tmp_path / "out", "/cam/image_raw") as writer:
        for frame in iter_bag_frames(source):
            writer.write(frame, frame.rgb[:, :, 0] % 4)
    info = yaml.YAML(typ="safe").load((tmp_path / "out" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    check_humble_metadata(info)
    assert all(isinstance(t["topic_metadata"]["offered_qos_profiles"], str) for t in info["topics_with_message_count"])
    assert set(list_image_topics(tmp_path / "out")) == {"/cam/image_raw/edgeseg/mask", "/cam/image_raw/edgeseg/overlay"}


def test_the_checker_refuses_what_humble_cannot_parse() -> None:
    info = {"version": 9, "storage_identifier": "mcap", "duration": {"nanoseconds": 1},
            "starting_time": {"nanoseconds_since_epoch": 1}, "message_count": 1, "relative_file_paths": ["a.mcap"],
            "compression_format": "", "compression_mode": "",
            "files": [{"path": "a.mcap", "starting_time": {"nanoseconds_since_epoch": 1},
                       "duration": {"nanoseconds": 1}, "message_count": 1}],
            "topics_with_message_count": [{"message_count": 1, "topic_metadata": {
                "name": "/m", "type": "sensor_msgs/msg/Image", "serialization_format": "cdr",
                "offered_qos_profiles": []}}]}
    with pytest.raises(AssertionError):
        check_humble_metadata(info)  # version 9
    info["version"] = 8
    with pytest.raises(AssertionError, match="offered_qos_profiles"):
        check_humble_metadata(info)  # a list where Humble reads a string
    info["topics_with_message_count"][0]["topic_metadata"]["offered_qos_profiles"] = ""
    check_humble_metadata(info)
