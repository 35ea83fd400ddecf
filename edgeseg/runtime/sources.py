"""Frame sources: one syntax for every command, each frame with its capture time (layer 1).

    frames/                  an image folder (jpg/png/bmp, recursive, sorted)
    photo.png                one image
    clip.mp4                 a video file (.mp4 .avi .mkv .mov .webm)
    0                        a camera index (OpenCV's default backend)
    v4l2:///dev/video0       a V4L2 device (OpenCV's V4L2 backend; v4l2://0 is /dev/video0)
    csi://0                  a Jetson CSI camera, sensor-id 0 (nvarguscamerasrc; OpenCV with GStreamer)
    rtsp://host:8554/stream  an RTSP stream (GStreamer where OpenCV has it, else OpenCV's FFmpeg)
    gst:PIPELINE ! appsink   any GStreamer pipeline ending in appsink (OpenCV with GStreamer)
    bag:PATH                 a ROS 1 .bag or a ROS 2 bag (.mcap, .db3 or its folder); --topic picks the topic

Cameras take their size and rate in the source itself, so every command accepts them the same way:
``csi://0?width=1920&height=1080&framerate=30&flip=2``, ``v4l2:///dev/video0?width=640&height=480``,
``0?framerate=60``. Every frame is uint8 HxWx3 RGB; video and cameras need OpenCV and bags need rosbags,
both imported only when used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

import numpy as np

from ..errors import InputError, UsageError, require
from ..images import IMAGE_EXTENSIONS, list_images, load_image
from .bags import iter_bag_frames, resolve_topic

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
BAG_EXTENSIONS = (".mcap", ".db3", ".bag")
LIVE_KINDS = ("camera", "v4l2", "csi", "rtsp", "gst")
GSTREAMER_KINDS = ("csi", "gst")  # rtsp falls back to OpenCV's FFmpeg
CAMERA_OPTIONS = {"camera": ("width", "height", "framerate"), "v4l2": ("width", "height", "framerate"),
                  "csi": ("width", "height", "framerate", "flip")}
ACCEPTED = ("an image folder, an image file (" + " ".join(IMAGE_EXTENSIONS) + "), a video file ("
            + " ".join(VIDEO_EXTENSIONS) + "), a camera index (0, 1...), v4l2:///dev/videoN, csi://N, "
            "rtsp://HOST/PATH, gst:PIPELINE ! appsink, bag:PATH (.mcap .db3 .bag or a ROS 2 bag folder; "
            "--topic T); cameras take ?width=W&height=H&framerate=F (csi also &flip=0..7)")


@dataclass(frozen=True)
class Source:
    """A parsed ``--source``: ``kind`` is folder, image, video, camera, v4l2, csi, rtsp, gst or bag."""

    kind: str
    text: str  # as the user wrote it
    location: str = ""  # the path, device, URL or GStreamer pipeline
    index: int | None = None  # camera index, CSI sensor-id
    topic: str | None = None  # bag: the image topic (resolved by prepare_source when not given)
    width: int | None = None
    height: int | None = None
    framerate: int | None = None
    flip: int | None = None  # csi: nvvidconv flip-method

    @property
    def live(self) -> bool:
        """A camera or stream: frames come at the camera's pace, and the loop may drop some."""
        return self.kind in LIVE_KINDS

    @property
    def stamped(self) -> bool:
        """Frames have header stamps and frame ids (a bag's, or the wall clock at grab for live sources)."""
        return self.kind == "bag" or self.live


@dataclass
class Frame:
    """One frame and when it was captured, in the clock the latency figures use."""

    name: str
    rgb: np.ndarray  # uint8 HxWx3
    captured: float  # time.monotonic() seconds; see ``clock``
    clock: str  # "grab": right after OpenCV returned it (live); "read": before the source was asked (replay)
    seq: int  # 1-based count of frames the source delivered up to this one (gaps = frames dropped)
    stamp_ns: int | None = None  # bag: header stamp; live: wall clock at grab; video: position; folder: None
    frame_id: str = ""  # bag: header frame_id; live: "camera"
    log_time_ns: int | None = None  # bag: when the bag recorded it (kept in a --save bag); else None
    header_stamp_ns: int | None = None  # bag: the header stamp as recorded (0 when the driver never set it)


# typing's Generator: Python 3.8 evaluates this line. close() a stream to stop early (a camera's grab thread stops)
FrameStream = Generator[Frame, None, None]


@dataclass
class SourceStats:
    frames: int = 0  # frames handed to the loop
    skipped: int = 0  # unreadable images skipped
    ended_because: str = ""
    delivered: int = 0  # frames the source delivered (live: OpenCV reads, dropped ones included)
    dropped: int = 0  # live: delivered frames replaced by a newer one before the loop took them
    nominal_fps: float | None = None  # what the camera or video file says (CAP_PROP_FPS), when it says
    opened_with: str = ""  # how OpenCV opened it (GStreamer pipeline, V4L2, FFmpeg...)


# -- parsing ---------------------------------------------------------------------------------------------
def parse_source(text: str | Path, *, topic: str | None = None, width: int | None = None,
                 height: int | None = None, framerate: int | None = None) -> Source:
    """``--source`` (and ``--topic``) as a Source; a UsageError (exit 2) listing the accepted forms otherwise.

    ``width``/``height``/``framerate`` are the same as the source's ``?width=...`` query (they must agree)."""
    raw = str(text).strip()
    if not raw:
        raise UsageError("--source is empty", expected=ACCEPTED)
    kind, location, index, query = _split(raw)
    given = {"width": width, "height": height, "framerate": framerate}
    options = _camera_options(kind, raw, query, {k: v for k, v in given.items() if v is not None})
    if topic is not None and kind != "bag":
        raise UsageError(f"--topic only applies to bag sources, and --source {raw} is a {kind}",
                         fix=f"drop --topic, or read a bag: --source bag:PATH --topic {topic}")
    return Source(kind, raw, location, index, topic or None, **options)


def _split(raw: str) -> tuple[str, str, int | None, str]:
    """(kind, location, index, query) of a source text."""
    lower = raw.lower()
    if lower.startswith("bag:"):
        return "bag", _existing(os.path.expanduser(raw[4:]), raw, "bag"), None, ""  # no shell expands ~ here
    if lower.startswith("gst:"):
        pipeline = raw[4:].strip()
        if "appsink" not in pipeline:
            raise UsageError("a gst: source must end in appsink (OpenCV reads frames from it)", found=raw,
                             fix="gst:videotestsrc ! videoconvert ! video/x-raw,format=BGR ! appsink")
        return "gst", pipeline, None, ""
    if lower.startswith(("rtsp://", "rtsps://")):
        return "rtsp", raw, None, ""
    if lower.startswith("csi://"):
        sensor, _, query = raw[6:].partition("?")
        if not sensor.isdigit():
            raise UsageError("csi:// takes the sensor id (nvarguscamerasrc sensor-id)", found=raw, expected="csi://0")
        return "csi", sensor, int(sensor), query
    if lower.startswith("v4l2://"):
        device, _, query = raw[7:].partition("?")
        device = f"/dev/video{device}" if device.isdigit() else device
        if not device.startswith("/dev/"):
            raise UsageError("v4l2:// takes a device path", found=raw, expected="v4l2:///dev/video0 (three slashes)")
        return "v4l2", device, None, query
    head, _, query = raw.partition("?")
    if head.isdigit():
        return "camera", head, int(head), query
    if "://" in raw:
        raise UsageError(f"unknown source scheme in {raw}", expected=ACCEPTED)
    path = Path(raw)
    suffix = path.suffix.lower()
    if path.is_dir():
        return ("bag" if (path / "metadata.yaml").is_file() else "folder"), raw, None, ""
    for kind, suffixes in (("bag", BAG_EXTENSIONS), ("video", VIDEO_EXTENSIONS), ("image", IMAGE_EXTENSIONS)):
        if suffix in suffixes:
            return kind, _existing(raw, raw, kind), None, ""
    raise UsageError(f"cannot tell what kind of source {raw} is", expected=ACCEPTED,
                     found=raw if path.exists() else f"{raw} (does not exist)")


def _existing(path: str, raw: str, kind: str) -> str:
    if not path or not Path(path).exists():
        hint = " (bag:PATH takes a .mcap/.db3/.bag file or a ROS 2 bag folder)" if kind == "bag" else ""
        raise UsageError(f"--source {raw}: the {kind} {path or '(no path)'} does not exist",
                         fix="check the path" + hint)
    return path


def _camera_options(kind: str, raw: str, query: str, given: dict[str, int]) -> dict[str, int]:
    allowed = CAMERA_OPTIONS.get(kind, ())
    if (query or given) and not allowed:
        raise UsageError(f"width/height/framerate only apply to cameras, and --source {raw} is a {kind}",
                         expected="csi://0?width=1280&height=720&framerate=30, v4l2:///dev/video0?width=640"
                                  "&height=480, 0?framerate=30")
    options: dict[str, int] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if key not in allowed or not sep:
            raise UsageError(f"unknown camera option {item!r} in --source {raw}",
                             expected=f"{'&'.join(f'{k}=N' for k in allowed)} after '?'")
        options[key] = _number(key, value, raw)
    for key, number in given.items():
        if key in options and options[key] != number:
            raise UsageError(f"{key} given twice with different values", found=f"{options[key]} in --source {raw}, "
                                                                             f"{number} as an option")
        options[key] = _number(key, str(number), raw)
    if ("width" in options) != ("height" in options):
        raise UsageError(f"--source {raw} sets only one of width and height", fix="give both: ?width=W&height=H")
    return options


def _number(key: str, value: str, raw: str) -> int:
    low, high = (0, 7) if key == "flip" else (1, 100_000)
    if not value.isdigit() or not low <= int(value) <= high:
        raise UsageError(f"{key}={value} in --source {raw} is not a whole number from {low} to {high}")
    return int(value)


# -- before any work -------------------------------------------------------------------------------------
def prepare_source(source: Source) -> Source:
    """Check what reading ``source`` needs before any work: OpenCV (with GStreamer where it must have it),
    rosbags and the bag's image topic (a bag with several and no --topic lists them).
    Returns the source with its topic resolved."""
    if source.kind in ("video", *LIVE_KINDS):
        cv2 = require("cv2", extra="video", purpose=f"--source {source.text}")
        if source.kind in GSTREAMER_KINDS:
            from .camera_sources import require_gstreamer

            require_gstreamer(cv2, source)
    elif source.kind == "bag":
        require("rosbags", extra="ros", purpose="bag: sources")

        return dataclasses.replace(source, topic=resolve_topic(source.location, source.topic))
    return source


# -- reading ---------------------------------------------------------------------------------------------
def frames(source: str | Source, stats: SourceStats | None = None, *, topic: str | None = None,
           max_failures: int = 30, skip_bad: bool = True, latest: bool | None = None) -> FrameStream:
    """Every frame of ``source`` as a Frame (uint8 RGB + capture time).

    Live sources are read by a grab thread that keeps only the newest frame (``latest``, the default for
    them; ``latest=False`` reads every frame OpenCV returns in the caller's thread). A camera that stops
    delivering ends after ``max_failures`` failed reads in a row instead of hanging."""
    stats = stats if stats is not None else SourceStats()
    src = source if isinstance(source, Source) else parse_source(source, topic=topic)
    if src.kind in ("folder", "image"):
        return _image_frames(src, stats, skip_bad)
    if src.kind == "bag":
        return _bag_frames(src, stats)
    cv2 = require("cv2", extra="video", purpose=f"--source {src.text}")
    from . import camera_sources

    if src.kind == "video":
        return camera_sources.video_frames(cv2, src, stats)
    if src.kind in GSTREAMER_KINDS:
        camera_sources.require_gstreamer(cv2, src)
    reader = camera_sources.latest_live_frames if latest or latest is None else camera_sources.sequential_live_frames
    return reader(cv2, src, stats, max_failures)


def _image_frames(source: Source, stats: SourceStats, skip_bad: bool) -> FrameStream:
    paths = list_images(source.location) if source.kind == "folder" else [Path(source.location)]
    if not paths:
        raise InputError(f"no images in {source.location}", expected="jpg/png/bmp files")
    for path in paths:
        asked = time.monotonic()
        try:
            rgb = load_image(path)
        except InputError:
            if not skip_bad:
                raise
            stats.skipped += 1
            continue
        stats.frames += 1
        stats.delivered += 1
        yield Frame(path.name, rgb, asked, "read", stats.frames)
    stats.ended_because = "end of folder" if source.kind == "folder" else "end of image"


def _bag_frames(source: Source, stats: SourceStats) -> FrameStream:
    bag_frames: Any = iter_bag_frames(source.location, source.topic)  # a generator: closing it closes the bag
    with contextlib.closing(bag_frames) as messages:
        while True:
            asked = time.monotonic()  # reading and decoding the message count as part of the latency
            message: Any = next(messages, None)
            if message is None:
                break
            stats.frames += 1
            stats.delivered += 1
            yield Frame(message.name, message.rgb, asked, "read", message.index + 1, message.stamp_ns,
                        message.frame_id, message.log_time_ns,
                        message.header_stamp_ns)
    stats.ended_because = "end of bag"
