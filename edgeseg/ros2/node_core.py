"""The ROS-free core of the ROS 2 node (numpy and threading only; tested with rosbags' message classes).

- ``SegmentationCore``: image message -> (mono8 mask message, rgb8 overlay message) with the input's
  header, through any ``segment(rgb) -> mask`` callable (a Segmenter). Messages are built by a factory
  (ros_image.MessageFactory): rclpy's in the node, a rosbags typestore's in the tests.
- ``LatestFrameSlot`` (runtime/frame_slot.py, shared with the live camera loop): the drop policy. The
  subscription callback puts each frame; the worker thread takes the newest.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError
from ..palette import class_palette
from ..runtime.bag_writer import default_output_topics
from ..runtime.frame_slot import LatestFrameSlot
from ..runtime.kernels import check_alpha
from ..runtime.ros_image import MessageFactory, msg_to_rgb, segmentation_msgs, typestore_factory

FRAME_ORDERS = ("auto", "RGB", "BGR")
SWAPPED = {"RGB": ("bgr8", "bgra8"), "BGR": ("rgb8", "rgba8")}  # forced order -> labels it contradicts


def check_frame_order(frame_order: str) -> str:
    if frame_order not in FRAME_ORDERS:
        raise ConfigError("unknown frame_order", expected=" | ".join(FRAME_ORDERS), found=repr(frame_order))
    return frame_order


class SegmentationCore:
    """``process(msg) -> (mask msg, overlay msg)``; the mask is at the image's resolution.

    ``frame_order`` "auto" trusts the message's encoding; "RGB"/"BGR" force the colour order of 3- and
    4-channel images whose driver labels them wrongly (a common camera driver bug).
    """

    def __init__(self, segment: Callable[[np.ndarray], np.ndarray], *, factory: MessageFactory | None = None,
                 typestore: Any = None, palette: np.ndarray | None = None, alpha: float = 0.5,
                 frame_order: str = "auto", overlay: bool = True) -> None:
        self.segment = segment
        self.factory = factory if factory is not None else typestore_factory(typestore)  # built once, not per message
        self.overlay = overlay  # False: no blend, (mask_msg, None)
        self.palette = palette if palette is not None else class_palette(256)
        self.alpha = check_alpha(alpha)  # here, not at the first message
        self.frame_order = check_frame_order(frame_order)

    def to_rgb(self, msg: Any) -> np.ndarray:
        rgb = msg_to_rgb(msg)
        encoding = str(getattr(msg, "encoding", "")).lower()
        if self.frame_order != "auto" and encoding in SWAPPED[self.frame_order]:
            rgb = np.ascontiguousarray(rgb[..., ::-1])
        return rgb

    def process(self, msg: Any) -> tuple[Any, Any]:
        rgb = self.to_rgb(msg)
        mask = self.segment(rgb)  # may be a view of the Segmenter's buffer: serialized before the next call
        return segmentation_msgs(rgb, mask, msg.header, self.factory, palette=self.palette, alpha=self.alpha,
                                 with_overlay=self.overlay)


class Worker:
    """The node's processing loop, without ROS: take the latest frame, process it, publish.

    ``publish(mask_msg, overlay_msg)`` and ``on_error(exc)`` are the node's; ``run`` returns once
    ``stop`` was called. A frame that fails (a bad encoding) is reported and the loop goes on.
    """

    def __init__(self, core: SegmentationCore, slot: LatestFrameSlot, publish: Callable[[Any, Any], None],
                 on_error: Callable[[Exception], None]) -> None:
        self.core, self.slot, self.publish, self.on_error = core, slot, publish, on_error
        self.processed = 0
        self.failed = 0
        self._stop = threading.Event()

    def run(self, poll_s: float = 0.1) -> None:
        while not self._stop.is_set():
            msg = self.slot.take(timeout=poll_s)
            if msg is None:
                continue
            try:
                self.publish(*self.core.process(msg))
                self.processed += 1
            except Exception as exc:  # one bad frame must not kill the node's worker
                self.failed += 1
                self.on_error(exc)

    def stop(self) -> None:
        self._stop.set()
        self.slot.close()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="edgeseg-worker", daemon=True)
        thread.start()
        return thread


@dataclass
class NodeParameters:
    """The node's ROS parameters (``--ros-args -p name:=value``) and their defaults."""

    artifacts: str = ""  # the build folder (engines/NAME): required
    backend: str = "auto"  # auto | tensorrt | onnxruntime
    input_topic: str = "/camera/image_raw"  # ending in /compressed: a CompressedImage subscription
    mask_topic: str = ""  # "": input topic (without /compressed) + /edgeseg/mask
    overlay_topic: str = ""  # "": input topic (without /compressed) + /edgeseg/overlay
    publish_overlay: bool = True
    frame_order: str = "auto"  # auto (trust the encoding) | RGB | BGR (force, for mislabelled drivers)
    overlay_alpha: float = 0.5
    stats_period_s: float = 5.0  # how often receive/drop counts are logged (0: never)

    @property
    def compressed(self) -> bool:
        return self.input_topic.rstrip("/").endswith("/compressed")

    def resolved(self) -> NodeParameters:
        """Checked, with the derived topic names filled in."""
        if not self.artifacts:
            raise ConfigError("the node needs the artifacts parameter", expected="a build folder (engines/NAME)",
                              fix="ros2 launch ... artifacts:=engines/NAME, or --ros-args -p artifacts:=engines/NAME")
        check_frame_order(self.frame_order)
        check_alpha(self.overlay_alpha, "overlay_alpha")
        mask, overlay = default_output_topics(self.input_topic)
        return NodeParameters(**{**self.__dict__, "mask_topic": self.mask_topic or mask,
                                 "overlay_topic": self.overlay_topic or overlay})


def stats_line(slot: LatestFrameSlot, worker: Worker) -> str:
    """The periodic log line: how many frames came, were segmented, dropped as stale, failed."""
    stats = slot.stats
    share = 100.0 * stats.dropped / stats.received if stats.received else 0.0
    return (f"frames: {stats.received} received, {worker.processed} segmented, {stats.dropped} dropped "
            f"({share:.1f}%, the model is slower than the camera when this grows), {worker.failed} failed")
