"""The rclpy node (rclpy and sensor_msgs come from a ROS 2 install and are imported in ``main``).

Thin on purpose: everything but the ROS wiring is node_core's and tested without ROS; this file is tested
only through a fake rclpy (tests/ros2/test_node.py) and is unverified on a real ROS 2 system. docs/ros2.md.

    subscription (sensor-data QoS) -> LatestFrameSlot -> worker thread: Segmenter -> mask + overlay publishers
"""

from __future__ import annotations

import array
import threading
from dataclasses import fields
from types import SimpleNamespace
from typing import Any

from ..errors import DependencyError
from ..palette import class_palette
from ..runtime.frame_slot import LatestFrameSlot
from ..runtime.segmenter import Segmenter
from .node_core import NodeParameters, SegmentationCore, Worker, stats_line

ROS_INSTALL = ("install ROS 2 (https://docs.ros.org, e.g. Humble: apt install ros-humble-ros-base) and "
               "`source /opt/ros/humble/setup.bash` before starting the node; rclpy is not on PyPI")


def import_ros() -> Any:
    """rclpy, its Node and QoS, and sensor_msgs' classes; a DependencyError without a sourced ROS 2."""
    try:
        import rclpy
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image
    except ImportError as exc:
        raise DependencyError("rclpy is needed for the ROS 2 node but cannot be imported",
                              found=f"{type(exc).__name__}: {exc}", fix=ROS_INSTALL) from exc
    return SimpleNamespace(rclpy=rclpy, Node=Node, QoSProfile=QoSProfile, sensor_qos=qos_profile_sensor_data,
                           Image=Image, CompressedImage=CompressedImage)


def rclpy_factory(image_cls: Any) -> Any:
    """ros_image's message factory for rclpy's sensor_msgs/Image (the input's header object is reused)."""
    def build(header: Any, height: int, width: int, encoding: str, step: int, data: bytes) -> Any:
        msg = image_cls()
        msg.header, msg.height, msg.width, msg.encoding = header, height, width, encoding
        msg.is_bigendian, msg.step = 0, step
        msg.data = array.array("B", data)  # from bytes: one copy, not a per-element conversion
        return msg

    return build


def read_parameters(node: Any) -> NodeParameters:
    defaults = NodeParameters()
    values = {f.name: node.declare_parameter(f.name, getattr(defaults, f.name)).value for f in fields(defaults)}
    return NodeParameters(**values).resolved()


class EdgesegNode:
    """The rclpy node, its Segmenter, subscription, publishers and worker thread."""

    def __init__(self, ros: Any, name: str = "edgeseg") -> None:
        self.node = ros.Node(name)
        params = read_parameters(self.node)
        self.log = self.node.get_logger()
        # frames are always RGB after ros_image's conversion; the mask comes back at the frame's size
        self.segmenter = Segmenter.from_artifacts(params.artifacts, backend=params.backend, output_size="frame")
        core = SegmentationCore(self.segmenter, factory=rclpy_factory(ros.Image), alpha=params.overlay_alpha,
                                palette=class_palette(self.segmenter.num_classes, self.segmenter.class_colors),
                                frame_order=params.frame_order, overlay=params.publish_overlay)
        reliable = ros.QoSProfile(depth=1)  # reliable, keep last: RViz's and Foxglove's defaults connect
        self.mask_pub = self.node.create_publisher(ros.Image, params.mask_topic, reliable)
        self.overlay_pub = (self.node.create_publisher(ros.Image, params.overlay_topic, reliable)
                            if params.publish_overlay else None)
        self.slot = LatestFrameSlot()
        self.worker = Worker(core, self.slot, self._publish, self._failed)
        self.thread: threading.Thread | None = self.worker.start_thread()
        msg_type = ros.CompressedImage if params.compressed else ros.Image
        self.subscription = self.node.create_subscription(msg_type, params.input_topic, self._on_image,
                                                          ros.sensor_qos)
        if params.stats_period_s > 0:
            self.timer = self.node.create_timer(params.stats_period_s, self._log_stats)
        self.log.info(f"edgeseg: {params.input_topic} -> {params.mask_topic}"
                      + (f", {params.overlay_topic}" if params.publish_overlay else "")
                      + f" ({self.segmenter.name}, {params.artifacts})")

    def _on_image(self, msg: Any) -> None:
        self.slot.put(msg)  # never blocks the executor; a pending older frame is dropped

    def _publish(self, mask_msg: Any, overlay_msg: Any) -> None:
        self.mask_pub.publish(mask_msg)
        if self.overlay_pub is not None:
            self.overlay_pub.publish(overlay_msg)

    def _failed(self, exc: Exception) -> None:
        self.log.error(f"frame skipped: {exc}")

    def _log_stats(self) -> None:
        self.log.info(stats_line(self.slot, self.worker))

    def close(self) -> None:
        self.worker.stop()
        if self.thread is not None:
            self.thread.join(timeout=5.0)
            self.thread = None
        self.segmenter.close()
        self.node.destroy_node()


def main(argv: list[str] | None = None) -> None:
    ros = import_ros()
    ros.rclpy.init(args=argv)
    node = None
    try:
        node = EdgesegNode(ros)
        ros.rclpy.spin(node.node)
    except KeyboardInterrupt:
        pass
    finally:
        if node is not None:
            node.close()
        if ros.rclpy.ok():
            ros.rclpy.shutdown()
