"""The ROS 2 node's core without rclpy: the callback on rosbags' message classes, the keep-latest drop policy
(with threads), the worker loop and the parameters. The rclpy wiring (node.py) is not run here."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers.bags import make_compressed_msg, make_image_msg, typestore

from edgeseg.errors import ConfigError, DependencyError
from edgeseg.ros2.node_core import NodeParameters, SegmentationCore, Worker, stats_line
from edgeseg.runtime.frame_slot import LatestFrameSlot
from edgeseg.runtime.kernels import default_palette, numpy_overlay
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
    palette = default_palette(4)
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
    # a camera thread publishing 60 frames quickly, a worker taking 20 ms per frame
    slot = LatestFrameSlot()
    processed: list[int] = []
    done = threading.Event()

    def worker() -> None:
        while True:
            item = slot.take(timeout=1)
            if item is None:
                return
            time.sleep(0.02)
            processed.append(item)
            if item == 59:
                done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    for i in range(60):
        slot.put(i)
        time.sleep(0.001)
    assert done.wait(5)
    slot.close()
    thread.join(timeout=5)
    assert processed[-1] == 59  # the newest frame is always processed
    assert processed == sorted(processed)  # never an older frame after a newer one
    assert slot.stats.received == 60
    assert slot.stats.dropped == 60 - len(processed) > 0  # every frame is processed or counted as dropped
    assert len(processed) < 30


def test_worker_processes_publishes_and_survives_bad_frames(store) -> None:
    slot = LatestFrameSlot()
    published, errors = [], []
    core = SegmentationCore(red_channel_segmenter, typestore=store)
    worker = Worker(core, slot, lambda m, o: published.append((m, o)), errors.append)
    thread = worker.start_thread()
    bad = make_image_msg(store, frame(), "rgb8")
    bad.encoding = "bayer_rggb8"
    slot.put(bad)
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    slot.put(make_image_msg(store, frame(), "rgb8", stamp_ns=STAMP))
    while not published and time.monotonic() < deadline:
        time.sleep(0.01)
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


def test_node_without_rclpy_is_a_dependency_error() -> None:
    pytest.importorskip("edgeseg.ros2.node")
    try:
        import rclpy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("rclpy is installed here: the missing-ROS message cannot be shown")
    from edgeseg.ros2.node import import_ros

    with pytest.raises(DependencyError) as info:
        import_ros()
    assert "rclpy" in info.value.problem and "source /opt/ros" in info.value.fix


def test_python_m_edgeseg_ros2_without_ros_says_how_to_get_it() -> None:
    import subprocess
    import sys

    try:
        import rclpy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("rclpy is installed here")
    result = subprocess.run([sys.executable, "-m", "edgeseg.ros2"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "rclpy is needed" in result.stderr and "source /opt/ros" in result.stderr
    assert "Traceback" not in result.stderr


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
