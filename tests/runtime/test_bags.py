"""ROS bags in and out: every storage (ROS 2 sqlite3 and mcap, ROS 1), Image and CompressedImage topics,
topic resolution, even sampling with duplicate skipping, and the mask writer read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.bags import FIRST_STAMP_NS, PERIOD_NS, default_stamps, gradient_frames, write_image_bag

from edgeseg.errors import InputError, UsageError
from edgeseg.palette import class_palette
from edgeseg.runtime.bag_writer import BagMaskWriter, default_output_topics
from edgeseg.runtime.bags import (
    bag_sha256,
    bag_storage,
    iter_bag_frames,
    list_image_topics,
    resolve_topic,
    sample_bag_frames,
    strip_bag_prefix,
)
from edgeseg.runtime.kernels import numpy_overlay

pytest.importorskip("rosbags")

STORAGES = [("sqlite3", "rec.db3"), ("mcap", "rec.mcap"), ("ros1", "rec.bag"), ("mcap", "rec_folder")]


@pytest.mark.parametrize("storage,name", STORAGES)
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono16", "uyvy"])
def test_read_back_every_storage_and_encoding(tmp_path: Path, storage: str, name: str, encoding: str) -> None:
    frames = gradient_frames(4, 12, 16)
    if encoding == "mono16":
        frames = [np.repeat(f[..., :1], 3, axis=2) for f in frames]  # grey: what mono round-trips
    if encoding == "uyvy":  # yuv422 shares one chroma sample per pixel pair: pair-constant frames lose none of it
        frames = [np.repeat(f[:, 0::2], 2, axis=1) for f in frames]
    bag = write_image_bag(tmp_path / name, storage, frames, encoding=encoding, frame_id="cam")
    assert list_image_topics(bag) == {"/cam/image_raw": "sensor_msgs/msg/Image"}
    got = list(iter_bag_frames(bag))
    assert [f.index for f in got] == [0, 1, 2, 3]
    assert [f.stamp_ns for f in got] == default_stamps(4)
    assert {f.frame_id for f in got} == {"cam"} and {f.topic for f in got} == {"/cam/image_raw"}
    tolerance = 0 if encoding != "uyvy" else 3  # the YUV round trip's rounding only
    for frame, original in zip(got, frames, strict=True):
        assert frame.rgb.shape == (12, 16, 3) and frame.rgb.dtype == np.uint8
        assert np.abs(frame.rgb.astype(int) - original).max() <= tolerance
    assert got[1].name == f"000001_{(FIRST_STAMP_NS + PERIOD_NS) // 10**9}.{PERIOD_NS:09d}"
    assert bag_storage(bag) == storage


@pytest.mark.parametrize("storage,name", STORAGES[:3])
@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_topics(tmp_path: Path, storage: str, name: str, fmt: str) -> None:
    frames = gradient_frames(3, 16, 16)
    bag = write_image_bag(tmp_path / name, storage, frames, topic="/cam/image_raw/compressed", compressed=fmt)
    assert list_image_topics(bag) == {"/cam/image_raw/compressed": "sensor_msgs/msg/CompressedImage"}
    got = list(iter_bag_frames(f"bag:{bag}"))  # the bag: prefix is accepted
    assert len(got) == 3
    for frame, original in zip(got, frames, strict=True):
        error = np.abs(frame.rgb.astype(int) - original)
        assert error.max() == 0 if fmt == "png" else error.mean() < 20


def test_zero_header_stamps_fall_back_to_the_log_time(tmp_path: Path) -> None:
    logs = [FIRST_STAMP_NS + 7 + i for i in range(3)]
    bag = write_image_bag(tmp_path / "b.mcap", "mcap", gradient_frames(3), stamps=[0, 0, 5], log_times=logs)
    got = list(iter_bag_frames(bag))
    assert [f.stamp_ns for f in got] == [logs[0], logs[1], 5]
    assert [f.stamp_from_log_time for f in got] == [True, True, False]
    assert [f.log_time_ns for f in got] == logs


def test_topic_resolution(tmp_path: Path) -> None:
    frames = gradient_frames(2)
    bag = write_image_bag(tmp_path / "multi.mcap", "mcap", frames, extra_image_topics=["/cam2/image"],
                          string_topic="/chatter")
    assert list_image_topics(bag) == {"/cam/image_raw": "sensor_msgs/msg/Image",
                                      "/cam2/image": "sensor_msgs/msg/Image"}  # /chatter is not an image
    assert resolve_topic(bag, "/cam2/image") == "/cam2/image"
    with pytest.raises(UsageError) as several:
        resolve_topic(bag)
    assert "/cam/image_raw" in str(several.value) and "/cam2/image" in str(several.value)
    assert "--topic" in str(several.value)
    with pytest.raises(UsageError) as unknown:
        resolve_topic(bag, "/chatter")
    assert "/chatter" in unknown.value.found and "/cam2/image" in unknown.value.expected
    single = write_image_bag(tmp_path / "one.db3", "sqlite3", frames, topic="/front")
    assert resolve_topic(single) == "/front"


def test_bag_without_image_topics(tmp_path: Path) -> None:
    bag = write_image_bag(tmp_path / "none.bag", "ros1", [], string_topic="/chatter")
    assert list_image_topics(bag) == {}
    with pytest.raises(InputError, match="no image topic"):
        resolve_topic(bag)


@pytest.mark.parametrize("make", ["missing", "folder", "text", "garbage"])
def test_unreadable_bags_are_input_errors(tmp_path: Path, make: str) -> None:
    path = {"missing": tmp_path / "nope.mcap", "folder": tmp_path, "text": tmp_path / "notes.txt",
            "garbage": tmp_path / "bad.mcap"}[make]
    if make in ("text", "garbage"):
        path.write_bytes(b"not a bag at all")
    with pytest.raises(InputError) as info:
        list_image_topics(path)
    assert str(path) in str(info.value)
    assert ".bag" in (info.value.expected or "")


def test_sampling_is_even_over_the_recording(tmp_path: Path) -> None:
    bag = write_image_bag(tmp_path / "long.mcap", "mcap", gradient_frames(40, 8, 8))
    frames, provenance = sample_bag_frames(bag, None, 5)
    assert [f.index for f in frames] == [0, 8, 16, 24, 32]  # spread, not the first five
    assert provenance["indices"] == [0, 8, 16, 24, 32]
    assert provenance["stamps_ns"] == [default_stamps(40)[i] for i in (0, 8, 16, 24, 32)]
    assert provenance["topic"] == "/cam/image_raw" and provenance["storage"] == "mcap"
    assert provenance["messages"] == 40 and provenance["kept"] == 5 and provenance["skipped_duplicates"] == 0
    assert provenance["bag"] == str(bag)
    everything, _ = sample_bag_frames(bag, "/cam/image_raw", 100)  # more than the bag has: all of them
    assert [f.index for f in everything] == list(range(40))


def test_sampling_skips_near_duplicates(tmp_path: Path) -> None:
    distinct = gradient_frames(4, 64, 64)  # 2x2 blocks in the thumbnail
    noise = np.random.default_rng(5)

    def jitter(frame: np.ndarray) -> np.ndarray:  # sensor noise on a still scene: still a duplicate
        return np.clip(frame.astype(int) + noise.integers(-2, 3, frame.shape), 0, 255).astype(np.uint8)

    # 0..5: one still scene; 6..11: another; 12: a third; 13..15: a fourth
    sequence = [jitter(distinct[0]) for _ in range(6)] + [jitter(distinct[1]) for _ in range(6)] + \
               [distinct[2]] + [jitter(distinct[3]) for _ in range(3)]
    bag = write_image_bag(tmp_path / "still.db3", "sqlite3", sequence)
    frames, provenance = sample_bag_frames(bag, None, 8)  # stretches of two messages
    assert [f.index for f in frames] == [0, 6, 12, 14]
    # a stretch of duplicates is tried to its end (2-5, 8-11); 1, 7, 13, 15 follow a kept frame: never decoded
    assert provenance["skipped_duplicates"] == 8
    assert provenance["kept"] == 4 and provenance["requested"] == 8
    kept_all, provenance = sample_bag_frames(bag, None, 8, min_difference=0)
    assert len(kept_all) == 8 and provenance["skipped_duplicates"] == 0


def test_bag_identity_changes_with_content_and_topic(tmp_path: Path) -> None:
    one = write_image_bag(tmp_path / "one.mcap", "mcap", gradient_frames(2))
    two = write_image_bag(tmp_path / "two.mcap", "mcap", gradient_frames(2, seed=9))
    assert bag_sha256(one, "/cam/image_raw") == bag_sha256(f"bag:{one}", "/cam/image_raw")
    assert bag_sha256(one, "/cam/image_raw") != bag_sha256(two, "/cam/image_raw")
    assert bag_sha256(one, "/cam/image_raw") != bag_sha256(one, "/other")
    assert strip_bag_prefix("bag:x/y.mcap") == Path("x/y.mcap")


def test_default_output_topics() -> None:
    assert default_output_topics("/cam/image_raw") == ("/cam/image_raw/edgeseg/mask", "/cam/image_raw/edgeseg/overlay")
    assert default_output_topics("/cam/image_raw/compressed/") == ("/cam/image_raw/edgeseg/mask",
                                                                    "/cam/image_raw/edgeseg/overlay")


def _mask_of(rgb: np.ndarray) -> np.ndarray:
    return (rgb[::2, ::2, 0] // 64).astype(np.uint8)  # half resolution, as a model's output


@pytest.mark.parametrize("storage,name,out_name", [("mcap", "in.mcap", "out.mcap"), ("sqlite3", "in.db3", "out.db3"),
                                                   ("ros1", "in.bag", "out.bag"), ("mcap", "in.mcap", "out_folder")])
def test_writer_output_reads_back(tmp_path: Path, storage: str, name: str, out_name: str) -> None:
    stamps = [FIRST_STAMP_NS + 3 * PERIOD_NS * i + 11 for i in range(5)]
    bag = write_image_bag(tmp_path / name, storage, gradient_frames(5, 12, 16), stamps=stamps, frame_id="cam_link",
                          compressed="png" if storage == "sqlite3" else None)
    palette = class_palette(4)
    out = tmp_path / out_name
    with BagMaskWriter(out, "/cam/image_raw", palette=palette, alpha=0.5) as writer:
        inputs = list(iter_bag_frames(bag))
        for frame in inputs:
            writer.write(frame, _mask_of(frame.rgb))
    assert writer.count == 5 and out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temporary folder is gone
    assert list_image_topics(out) == {"/cam/image_raw/edgeseg/mask": "sensor_msgs/msg/Image",
                                      "/cam/image_raw/edgeseg/overlay": "sensor_msgs/msg/Image"}
    masks = list(iter_bag_frames(out, "/cam/image_raw/edgeseg/mask"))
    overlays = list(iter_bag_frames(out, "/cam/image_raw/edgeseg/overlay"))
    assert len(masks) == len(overlays) == 5
    assert [m.stamp_ns for m in masks] == [o.stamp_ns for o in overlays] == stamps
    assert {m.frame_id for m in masks} == {o.frame_id for o in overlays} == {"cam_link"}
    for mask, overlay, frame in zip(masks, overlays, inputs, strict=True):
        full = np.repeat(np.repeat(_mask_of(frame.rgb), 2, axis=0), 2, axis=1)  # nearest, to the frame's size
        assert mask.rgb.shape == (12, 16, 3)
        np.testing.assert_array_equal(mask.rgb[..., 0], full)
        np.testing.assert_array_equal(overlay.rgb, numpy_overlay(frame.rgb, full, palette, 0.5))


def test_writer_refuses_an_existing_output_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out.mcap"
    out.write_bytes(b"old")
    with pytest.raises(UsageError, match="exists already"):
        BagMaskWriter(out, "/cam")
    frame = next(iter_bag_frames(write_image_bag(tmp_path / "in.mcap", "mcap", gradient_frames(1))))
    with BagMaskWriter(out, "/cam", overwrite=True, mask_topic="/m", overlay_topic="/o") as writer:
        writer.write(frame, _mask_of(frame.rgb))
    assert list_image_topics(out) == {"/m": "sensor_msgs/msg/Image", "/o": "sensor_msgs/msg/Image"}


def test_writer_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "out.db3"
    with pytest.raises(RuntimeError, match="boom"), BagMaskWriter(out, "/cam") as writer:
        writer.write_frame(gradient_frames(1)[0], np.zeros((24, 32), np.uint8), stamp_ns=1, frame_id="f")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_unknown_suffixes(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="which bag format") as info:
        BagMaskWriter(tmp_path / "out.avi", "/cam")
    assert "out.mcap" in info.value.expected


def test_undecodable_messages_raise_or_are_reported_and_skipped(tmp_path: Path) -> None:
    from helpers.bags import make_image_msg, typestore
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = typestore()
    frames = gradient_frames(3, 8, 8)
    with Writer(tmp_path / "bad", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/cam", "sensor_msgs/msg/Image", typestore=store)
        for i, frame in enumerate(frames):
            msg = make_image_msg(store, frame, "rgb8", stamp_ns=FIRST_STAMP_NS + i)
            if i == 1:
                msg.encoding = "bayer_rggb8"
            writer.write(connection, FIRST_STAMP_NS + i, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    with pytest.raises(InputError, match="/cam message 1 .*unsupported image encoding 'bayer_rggb8'"):
        list(iter_bag_frames(tmp_path / "bad"))
    bad: list[tuple[str, str]] = []
    got = list(iter_bag_frames(tmp_path / "bad", on_bad=lambda name, exc: bad.append((name, exc.problem))))
    assert [f.index for f in got] == [0, 2] and bad[0][0] == "000001" and "bayer_rggb8" in bad[0][1]
    frames_kept, _ = sample_bag_frames(tmp_path / "bad", None, 3)
    assert [f.index for f in frames_kept] == [0, 2]  # the sampler skips it too
