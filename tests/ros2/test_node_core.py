"""The ROS 2 node's core without rclpy: the callback on rosbags' message classes, the keep-latest drop policy
(with threads), the worker loop and the parameters. The rclpy wiring (node.py) is tested in test_node.py, through
a fake rclpy."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest
from helpers.bags import make_compressed_msg, make_image_msg, typestore

from edgeseg.errors import ConfigError
from edgeseg.palette import class_palette
from edgeseg.ros2.node_core import NodeParameters, SegmentationCore, Worker, stats_line
from edgeseg.runtime.frame_slot import LatestFrameSlot
from edgeseg.runtime.kernels import numpy_overlay
from edgeseg.runtime.ros_image import image_msg_to_rgb, stamp_ns

STAMP = 1_700_000_000_250_000_000


def red_channel_segmenter(rgb: np.ndarray) -> np.ndarray:
    """A stand-in Segmenter: classes from the red channel, at half resolution (as a model's output)."""
    return (rgb[::2, ::2, 0] // 64).astype(np.uint8)


@pytest.fixture(scope="module")
def store():
    return typestore()


def frame(height: int = 8, width: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "uyvy"])
def test_core_turns_an_image_message_into_mask_and_overlay(store, encoding: str) -> None:
    rgb = frame()
    msg = make_image_msg(store, rgb, encoding, stamp_ns=STAMP, frame_id="cam_optical", pad=2)
    palette = class_palette(4)
    core = SegmentationCore(red_channel_segmenter, typestore=store, palette=palette, alpha=0.4)
    mask_msg, overlay_msg = core.process(msg)
    decoded = image_msg_to_rgb(msg)  # what the core saw (yuv422 is lossy)
    full = np.repeat(np.repeat(red_channel_segmenter(decoded), 2, axis=0), 2, axis=1)
    for out in (mask_msg, overlay_msg):
        assert stamp_ns(out.header) == STAMP and out.header.frame_id == "cam_optical"
        assert (out.height, out.width) == (8, 12)
    assert mask_msg.encoding == "mono8" and overlay_msg.encoding == "rgb8"
    np.testing.assert_array_equal(np.asarray(mask_msg.data).reshape(8, 12), full)
    np.testing.assert_array_equal(np.asarray(overlay_msg.data).reshape(8, 12, 3),
                                  numpy_overlay(decoded, full, palette, 0.4))
    assert len(store.serialize_cdr(mask_msg, "sensor_msgs/msg/Image")) > 96  # publishable as is


def test_core_takes_compressed_images(store) -> None:
    rgb = np.full((8, 8, 3), (250, 10, 10), np.uint8)
    core = SegmentationCore(red_channel_segmenter, typestore=store)
    mask_msg, _ = core.process(make_compressed_msg(store, rgb, "png", stamp_ns=STAMP))
    assert set(np.asarray(mask_msg.data).tolist()) == {3} and stamp_ns(mask_msg.header) == STAMP


def test_frame_order_override_fixes_mislabelled_drivers(store) -> None:
    rgb = frame()
    seen = []

    def record(image: np.ndarray) -> np.ndarray:
        seen.append(image.copy())
        return np.zeros(image.shape[:2], np.uint8)

    mislabelled = make_image_msg(store, rgb[..., ::-1].copy(), "rgb8")  # BGR bytes labelled rgb8
    SegmentationCore(record, typestore=store, frame_order="BGR").process(mislabelled)
    SegmentationCore(record, typestore=store, frame_order="auto").process(mislabelled)
    SegmentationCore(record, typestore=store, frame_order="BGR").process(make_image_msg(store, rgb, "bgr8"))
    np.testing.assert_array_equal(seen[0], rgb)
    np.testing.assert_array_equal(seen[1], rgb[..., ::-1])  # auto trusts the (wrong) label
    np.testing.assert_array_equal(seen[2], rgb)  # a correct bgr8 label is unaffected
    with pytest.raises(ConfigError, match="frame_order"):
        SegmentationCore(record, frame_order="RGBA")


def test_slot_keeps_the_latest_and_counts_drops() -> None:
    slot = LatestFrameSlot()
    assert slot.put("a") is False
    assert slot.put("b") is True and slot.put("c") is True
    assert slot.take(timeout=0) == "c"
    assert slot.take(timeout=0.01) is None  # nothing pending: no stale frame comes back
    assert (slot.stats.received, slot.stats.dropped, slot.stats.taken) == (3, 2, 1)


def test_slot_wakes_a_waiting_worker_and_close_releases_it() -> None:
    slot = LatestFrameSlot()
    got = []
    waiter = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    waiter.start()
    time.sleep(0.05)
    slot.put("frame")
    waiter.join(timeout=5)
    assert got == ["frame"]
    waiter = threading.Thread(target=lambda: got.append(slot.take()))
    waiter.start()
    slot.close()
    waiter.join(timeout=5)
    assert not waiter.is_alive() and got == ["frame", None]


def test_a_slow_worker_drops_stale_frames_instead_of_queueing() -> None:
    """The camera keeps putting frames while the worker is busy: only the newest waits, the others are counted
    as dropped. Handshakes, not sleeps, fix the interleaving, so the counts are exact on any machine."""
    slot = LatestFrameSlot()
    took: queue.Queue[int] = queue.Queue()
    finish = threading.Semaphore(0)  # the worker is busy with a frame until the test releases it
    processed: list[int] = []

    def worker() -> None:
        while (item := slot.take(timeout=30)) is not None:
            took.put(item)
            finish.acquire()
            processed.append(item)

    thread = threading.Thread(target=worker)
    thread.start()
    slot.put(0)
    assert took.get(timeout=30) == 0
    for burst in range(3):
        for i in range(1, 11):  # ten frames while the worker is busy: nine replaced before it takes one
            slot.put(burst * 10 + i)
        finish.release()
        assert took.get(timeout=30) == burst * 10 + 10  # the newest, never an older one
    finish.release()
    slot.close()
    thread.join(timeout=30)
    assert not thread.is_alive() and processed == [0, 10, 20, 30]
    stats = slot.stats
    assert (stats.received, stats.taken, stats.dropped) == (31, 4, 27)
    assert stats.taken + stats.dropped == stats.received  # every frame is processed or counted as dropped


def test_worker_processes_publishes_and_survives_bad_frames(store) -> None:
    slot = LatestFrameSlot()
    published, errors = [], []
    core = SegmentationCore(red_channel_segmenter, typestore=store)
    failed, done = threading.Event(), threading.Event()

    def publish(mask_msg: object, overlay_msg: object) -> None:
        published.append((mask_msg, overlay_msg))
        done.set()

    def on_error(exc: Exception) -> None:
        errors.append(exc)
        failed.set()

    worker = Worker(core, slot, publish, on_error)
    thread = worker.start_thread()
    bad = make_image_msg(store, frame(), "rgb8")
    bad.encoding = "bayer_rggb8"
    slot.put(bad)
    assert failed.wait(30)  # processed (and failed) before the good frame could replace it
    slot.put(make_image_msg(store, frame(), "rgb8", stamp_ns=STAMP))
    assert done.wait(30)
    worker.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(published) == 1 and stamp_ns(published[0][0].header) == STAMP
    assert len(errors) == 1 and "bayer_rggb8" in str(errors[0])
    assert (worker.processed, worker.failed) == (1, 1)
    line = stats_line(slot, worker)
    assert "2 received, 1 segmented, 0 dropped" in line and "1 failed" in line


def test_parameters_derive_topics_and_check_values() -> None:
    params = NodeParameters(artifacts="engines/demo", input_topic="/front/image_raw/compressed").resolved()
    assert params.compressed
    assert (params.mask_topic, params.overlay_topic) == ("/front/image_raw/edgeseg/mask",
                                                         "/front/image_raw/edgeseg/overlay")
    kept = NodeParameters(artifacts="a", mask_topic="/m").resolved()
    assert kept.mask_topic == "/m" and not kept.compressed
    with pytest.raises(ConfigError, match="artifacts"):
        NodeParameters().resolved()
    with pytest.raises(ConfigError, match="overlay_alpha"):
        NodeParameters(artifacts="a", overlay_alpha=1.5).resolved()


def test_the_launch_file_ships_with_the_package() -> None:
    import ast
    from pathlib import Path

    import tomllib

    import edgeseg.ros2

    launch = Path(edgeseg.ros2.__file__).parent / "launch" / "edgeseg.launch.py"
    tree = ast.parse(launch.read_text())
    assert "generate_launch_description" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    pyproject = tomllib.loads((Path(edgeseg.ros2.__file__).parents[2] / "pyproject.toml").read_text())
    assert "ros2/launch/*.py" in pyproject["tool"]["setuptools"]["package-data"]["edgeseg"]


def test_the_node_and_bag_modules_import_without_torch_onnx_rosbags_or_pillow() -> None:
    from helpers.blocked_imports import run_without

    modules = ("edgeseg.ros2.node", "edgeseg.ros2.__main__", "edgeseg.runtime.bags", "edgeseg.runtime.bag_writer",
               "edgeseg.runtime.ros_image")
    result = run_without(f"import importlib; [importlib.import_module(m) for m in {modules!r}]; print('ok')",
                         {"torch", "onnx", "onnxsim", "rosbags", "PIL", "rclpy"})
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr
