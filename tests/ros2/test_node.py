"""The rclpy wiring (ros2/node.py) through a fake rclpy (tests/helpers/fake_rclpy.py): parameters from
``--ros-args -p``, the publishers' and the subscription's topics, message types and QoS, a frame in -> mask and
overlay out, the stats timer, shutdown. The Segmenter is a stand-in: its own tests cover it."""

from __future__ import annotations

import array
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.fake_rclpy import Header, ReliabilityPolicy, install_fake_rclpy

from edgeseg.errors import ConfigError, DependencyError
from edgeseg.ros2 import node as ros_node
from edgeseg.runtime.segmenter import Segmenter


class StandInSegmenter:
    """What the node uses of a Segmenter: classes from the red channel, at the frame's size."""

    name = "stand-in"
    num_classes = 4
    class_colors = ()

    def __init__(self) -> None:
        self.closed = False

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return (rgb[..., 0] // 64).astype(np.uint8)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def ros(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = install_fake_rclpy(monkeypatch)
    fake.opened = []  # (artifacts, options) of every Segmenter the node made
    fake.segmenters = []

    def from_artifacts(folder: str, **options: Any) -> StandInSegmenter:
        fake.opened.append((folder, options))
        fake.segmenters.append(StandInSegmenter())
        return fake.segmenters[-1]

    monkeypatch.setattr(Segmenter, "from_artifacts", from_artifacts)
    return fake


def rgb_frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (8, 12, 3), dtype=np.uint8)


def image_msg(ros: Any, rgb: np.ndarray) -> Any:
    return ros.sensor_msgs.Image(header=Header(sec=17, nanosec=250, frame_id="cam"), height=8, width=12,
                                 encoding="rgb8", is_bigendian=0, step=36, data=array.array("B", rgb.tobytes()))


def ros_args(**params: str) -> list[str]:
    words = ["edgeseg", "--ros-args"]
    for name, value in params.items():
        words += ["-p", f"{name}:={value}"]
    return words


def wait_for_messages(ros: Any, count: int) -> list[tuple[str, Any]]:
    assert ros.wait_for(lambda: len(ros.published) >= count), f"fewer than {count} messages published"
    return list(ros.published)


def test_node_reads_its_parameters_and_wires_topics_types_and_qos(ros: Any) -> None:
    ros.init(args=ros_args(artifacts="engines/demo", input_topic="/front/image_raw", overlay_alpha="0.3",
                           stats_period_s="2.0", backend="onnxruntime"))
    made = ros_node.EdgesegNode(ros_node.import_ros())
    try:
        assert ros.opened == [("engines/demo", {"backend": "onnxruntime", "output_size": "frame"})]
        node = made.node
        assert node.name == "edgeseg" and node.parameters["overlay_alpha"].value == 0.3
        assert [(p.topic, p.msg_type) for p in node.publishers] == [
            ("/front/image_raw/edgeseg/mask", ros.sensor_msgs.Image),
            ("/front/image_raw/edgeseg/overlay", ros.sensor_msgs.Image)]
        for publisher in node.publishers:  # reliable, keep last 1: RViz and Foxglove connect
            assert publisher.qos_profile.reliability == ReliabilityPolicy.RELIABLE and publisher.qos_profile.depth == 1
        (subscription,) = node.subscriptions
        assert subscription.topic == "/front/image_raw" and subscription.msg_type is ros.sensor_msgs.Image
        assert subscription.qos_profile is ros.qos.qos_profile_sensor_data  # best effort, as camera drivers publish
        assert [period for period, _ in node.timers] == [2.0]
    finally:
        made.close()
    assert node.destroyed and ros.segmenters[0].closed and made.thread is None


def test_a_frame_in_gives_a_mask_and_an_overlay_out_with_its_header(ros: Any) -> None:
    ros.init(args=ros_args(artifacts="engines/demo"))
    made = ros_node.EdgesegNode(ros_node.import_ros())
    rgb = rgb_frame()
    try:
        msg = image_msg(ros, rgb)
        made.node.subscriptions[0].callback(msg)
        published = wait_for_messages(ros, 2)
    finally:
        made.close()
    (mask_topic, mask_msg), (overlay_topic, overlay_msg) = published
    assert (mask_topic, overlay_topic) == ("/camera/image_raw/edgeseg/mask", "/camera/image_raw/edgeseg/overlay")
    assert mask_msg.header is msg.header and overlay_msg.header is msg.header
    assert (mask_msg.encoding, mask_msg.height, mask_msg.width, mask_msg.step) == ("mono8", 8, 12, 12)
    mask = np.frombuffer(mask_msg.data, np.uint8).reshape(8, 12)
    np.testing.assert_array_equal(mask, rgb[..., 0] // 64)
    assert overlay_msg.encoding == "rgb8" and len(overlay_msg.data) == 8 * 12 * 3
    (_, log_stats), = made.node.timers
    log_stats()  # what the stats timer calls
    assert made.node.logger.lines[-1] == ("info", "frames: 1 received, 1 segmented, 0 dropped (0.0%, the model is "
                                                  "slower than the camera when this grows), 0 failed")


def test_compressed_input_and_no_overlay(ros: Any) -> None:
    ros.init(args=ros_args(artifacts="engines/demo", input_topic="/cam/image_raw/compressed",
                           publish_overlay="false", stats_period_s="0.0"))
    made = ros_node.EdgesegNode(ros_node.import_ros())
    made.close()
    node = made.node
    assert node.subscriptions[0].msg_type is ros.sensor_msgs.CompressedImage
    assert node.subscriptions[0].topic == "/cam/image_raw/compressed"
    assert [p.topic for p in node.publishers] == ["/cam/image_raw/edgeseg/mask"] and node.timers == []


def test_main_spins_until_ctrl_c_then_closes_and_shuts_down(ros: Any) -> None:
    rgb = rgb_frame(1)
    ros.incoming["/camera/image_raw"] = [image_msg(ros, rgb)]
    ros.spin_until = lambda: len(ros.published) >= 2
    ros_node.main(ros_args(artifacts="engines/demo"))
    (node,) = ros.nodes
    assert node.destroyed and ros.segmenters[0].closed and not ros.ok()
    assert [topic for topic, _ in ros.published] == ["/camera/image_raw/edgeseg/mask",
                                                     "/camera/image_raw/edgeseg/overlay"]


def test_main_without_artifacts_is_a_config_error_and_still_shuts_down(ros: Any) -> None:
    with pytest.raises(ConfigError, match="artifacts"):
        ros_node.main(["edgeseg"])
    assert not ros.ok() and ros.opened == []


def test_a_bad_frame_is_logged_and_the_node_goes_on(ros: Any) -> None:
    ros.init(args=ros_args(artifacts="engines/demo"))
    made = ros_node.EdgesegNode(ros_node.import_ros())
    lines = made.node.logger.lines
    try:
        bad = image_msg(ros, rgb_frame())
        bad.encoding = "no_such_encoding"
        made.node.subscriptions[0].callback(bad)
        assert ros.wait_for(lambda: any(level == "error" for level, _ in lines))
        made.node.subscriptions[0].callback(image_msg(ros, rgb_frame(2)))
        wait_for_messages(ros, 2)
    finally:
        made.close()
    errors = [line for level, line in lines if level == "error"]
    assert len(errors) == 1 and "frame skipped" in errors[0] and "no_such_encoding" in errors[0]
    assert made.worker.failed == 1 and made.worker.processed == 1


def test_node_without_rclpy_is_a_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "rclpy", None)  # `import rclpy` raises ImportError
    with pytest.raises(DependencyError) as info:
        ros_node.import_ros()
    assert "rclpy" in info.value.problem and "source /opt/ros" in info.value.fix


def test_python_m_edgeseg_ros2_without_ros_says_how_to_get_it(tmp_path: Path) -> None:
    from helpers.blocked_imports import run_without

    result = run_without("import runpy\nsys.argv = ['edgeseg.ros2']\n"
                         "runpy.run_module('edgeseg.ros2', run_name='__main__', alter_sys=True)",
                         {"rclpy", "sensor_msgs"}, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rclpy is needed" in result.stderr and "source /opt/ros" in result.stderr
    assert "Traceback" not in result.stderr
