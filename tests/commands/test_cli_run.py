"""`edgeseg run` over every kind of source: bags in and out (.mcap, .db3, .bag), folders, a (fake) camera;
capture-to-mask latency in the summary and the run JSON; option errors before any work."""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.bags import default_stamps, gradient_frames, write_image_bag
from helpers.fake_capture import FakeCapture
from helpers.tiny_onnx import write_images
from helpers.validated_build import validated_build

from edgeseg.cli import main

TOPIC = "/cam/image"


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return validated_build(tmp_path_factory.mktemp("build") / "tiny")


def read_bag(path: Path) -> dict[str, list]:
    """topic -> [(stamp ns, frame_id, encoding, pixels)] of every Image message."""
    highlevel = pytest.importorskip("rosbags.highlevel")
    from edgeseg.runtime.ros_image import default_typestore

    out: dict[str, list] = {}
    with highlevel.AnyReader([path], default_typestore=default_typestore()) as reader:
        for connection, _, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            channels = 1 if msg.encoding == "mono8" else 3
            pixels = np.asarray(msg.data, np.uint8).reshape(msg.height, msg.width, channels)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            out.setdefault(connection.topic, []).append((stamp, msg.header.frame_id, msg.encoding, pixels))
    return out


def expected_masks(build: Path, bag: Path) -> list[np.ndarray]:
    from edgeseg.runtime import Segmenter
    from edgeseg.runtime.bags import iter_bag_frames

    seg = Segmenter.from_artifacts(build, backend="onnxruntime", output_size="frame", threads=1)
    try:
        return [seg(f.rgb).copy() for f in iter_bag_frames(bag, TOPIC)]
    finally:
        seg.close()


@pytest.mark.parametrize(("storage", "name", "encoding", "compressed", "out_name"), [
    ("mcap", "demo.mcap", "rgb8", None, "out.mcap"),
    ("mcap", "demo.mcap", "rgb8", "jpeg", "out.db3"),
    ("sqlite3", "demo.db3", "bgr8", None, "out.db3"),
    ("ros1", "demo.bag", "rgb8", "png", "out.bag"),
])
def test_run_bag_in_bag_out(build: Path, tmp_path: Path, storage: str, name: str, encoding: str,
                            compressed: str | None, out_name: str) -> None:
    bag = write_image_bag(tmp_path / name, storage, gradient_frames(5), topic=TOPIC, encoding=encoding,
                          compressed=compressed, frame_id="cam_optical")
    out = tmp_path / out_name
    result = CliRunner().invoke(main, ["run", "--artifacts", str(build), "--source", f"bag:{bag}", "--topic", TOPIC,
                                       "--save", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "capture-to-mask" in result.output and "p99" in result.output and "jitter" in result.output
    written = read_bag(out)
    assert set(written) == {TOPIC + "/edgeseg/mask", TOPIC + "/edgeseg/overlay"}
    masks, overlays = written[TOPIC + "/edgeseg/mask"], written[TOPIC + "/edgeseg/overlay"]
    assert [m[0] for m in masks] == [o[0] for o in overlays] == default_stamps(5)
    assert {m[1] for m in masks} == {"cam_optical"} and {m[2] for m in masks} == {"mono8"}
    assert all(m[3].shape == (24, 32, 1) for m in masks) and all(o[3].shape == (24, 32, 3) for o in overlays)
    for (_, _, _, got), want in zip(masks, expected_masks(build, bag), strict=True):
        assert np.array_equal(got[:, :, 0], want)
    data = json.loads(out.with_suffix(".run.json").read_text())
    latency = data["latency"]
    assert latency["clock"] == "read" and latency["frames"] == 4 and latency["warmup_frames"] == 1
    assert 0 < latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert latency["jitter_ms"] == pytest.approx(latency["p99_ms"] - latency["p50_ms"])
    assert latency["dropped"] == 0 and latency["dropped_if_live"] is not None
    assert latency["source_fps"] == pytest.approx(10.0) and len(latency["samples_ms"]) == 4
    assert data["frames"] == 5 and data["source"]["topic"] == TOPIC and data["outputs"]["bag_messages_per_topic"] == 5


def test_run_bag_custom_topics_and_json_path(build: Path, tmp_path: Path) -> None:
    bag = write_image_bag(tmp_path / "demo.mcap", "mcap", gradient_frames(3), topic=TOPIC)
    result = CliRunner().invoke(main, ["run", "--artifacts", str(build), "--source", str(bag), "--save",
                                       str(tmp_path / "o.mcap"), "--mask-topic", "/seg/mask", "--overlay-topic",
                                       "/seg/overlay", "--json", str(tmp_path / "figures" / "r.json"), "--max-frames",
                                       "2"])
    assert result.exit_code == 0, result.output
    written = read_bag(tmp_path / "o.mcap")
    assert {t: len(v) for t, v in written.items()} == {"/seg/mask": 2, "/seg/overlay": 2}
    data = json.loads((tmp_path / "figures" / "r.json").read_text())
    assert data["ended_because"] == "--max-frames 2" and data["latency"]["frames"] == 1
    assert not (tmp_path / "o.run.json").exists()


def test_run_folder_writes_pngs_and_run_json(build: Path, tmp_path: Path) -> None:
    write_images(tmp_path / "frames", 3)
    result = CliRunner().invoke(main, ["run", "--artifacts", str(build), "--source", str(tmp_path / "frames"),
                                       "--save", str(tmp_path / "ov")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "ov").glob("*.png"))) == 3
    data = json.loads((tmp_path / "ov" / "run.json").read_text())
    assert data["latency"]["clock"] == "read" and data["latency"]["dropped_if_live"] is None  # no stamps
    assert data["source"]["kind"] == "folder" and "machine" in data


class FakeCamera(FakeCapture):
    """A camera delivering a frame every 2 ms (stamps grow), 400 frames, then nothing."""

    period, count, shape = 0.002, 400, (24, 32, 3)


def test_run_live_camera_to_bag_counts_drops(build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(VideoCapture=FakeCamera, __version__="fake"))
    before = time.time_ns()
    result = CliRunner().invoke(main, ["run", "--artifacts", str(build), "--source", "0", "--save",
                                       str(tmp_path / "live.mcap"), "--max-frames", "20", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "dropped" in result.output and "frames delivered" in result.output
    masks = read_bag(tmp_path / "live.mcap")["/camera/image_raw/edgeseg/mask"]
    stamps = [m[0] for m in masks]
    assert len(masks) == 20 and stamps == sorted(stamps) and stamps[0] >= before and {m[1] for m in masks} == {"camera"}
    latency = json.loads((tmp_path / "live.run.json").read_text())["latency"]
    assert latency["clock"] == "grab" and latency["frames"] == 19
    assert latency["delivered"] == latency["frames"] + latency["dropped"]
    assert latency["source_fps"] is not None and latency["source_fps"] > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--source", "FRAMES", "--save", "OUT/x.mcap"], "writes a bag"),
    (["--source", "FRAMES", "--mask-topic", "/m"], "--mask-topic and --overlay-topic name the topics"),
    (["--source", "FRAMES", "--topic", "/cam/image"], "--topic only applies to bag sources"),
    (["--source", "http://example.com/cam"], "unknown source scheme"),
    (["--source", "csi://0?fps=30"], "unknown camera option"),
    (["--source", "BAG2", "--save", "OUT/x.mcap"], "has several image topics"),
    (["--source", "BAG2", "--topic", "/nope"], "/nope is not an image topic"),
    (["--source", "BAG", "--save", "EXISTING"], "exists already"),
    (["--source", "BAG", "--save", "OUT/x.mcap", "--mask-topic", "/a", "--overlay-topic", "/a"], "must differ"),
    (["--source", "BAG", "--json", "OUT/figures.txt"], "should end in .json"),
])
def test_run_option_errors_exit_2_before_work(build: Path, tmp_path: Path, args: list[str], message: str) -> None:
    write_images(tmp_path / "frames", 1)
    bag = write_image_bag(tmp_path / "one.mcap", "mcap", gradient_frames(2), topic=TOPIC)
    two = write_image_bag(tmp_path / "two.mcap", "mcap", gradient_frames(2), topic=TOPIC,
                          extra_image_topics=["/cam/other"])
    (tmp_path / "existing.mcap").write_bytes(b"x")
    names = {"FRAMES": str(tmp_path / "frames"), "BAG2": f"bag:{two}", "BAG": f"bag:{bag}",
             "EXISTING": str(tmp_path / "existing.mcap")}
    args = [names.get(a, a.replace("OUT", str(tmp_path / "out"))) for a in args]
    result = CliRunner().invoke(main, ["run", "--artifacts", str(build), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and "running" not in result.output  # refused before the model loaded
    assert not (tmp_path / "out").exists()


def test_run_csi_without_gstreamer_says_which_opencv(build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pip_wheel = types.SimpleNamespace(__version__="4.10.0", __file__="site-packages/cv2/__init__.py",
                                      getBuildInformation=lambda: "  Video I/O:\n    GStreamer:   NO\n")
    monkeypatch.setitem(sys.modules, "cv2", pip_wheel)
    result = CliRunner().invoke(main, ["run", "--artifacts", str(build), "--source", "csi://0"])
    assert result.exit_code == 1 and "needs OpenCV with GStreamer" in result.output, result.output
    assert "JetPack" in result.output and "running" not in result.output

