"""Live and video sources through OpenCV (layer 1; cv2 imported by the caller, only when used).

The GStreamer pipeline strings are pure functions (tested without GStreamer). A live source is read
by a grab thread that keeps only the newest frame (``LatestFrameGrabber``): the loop always segments
the most recent frame, and every frame OpenCV delivered but the loop never took is counted as dropped.
Its capture time is ``time.monotonic()`` right after OpenCV's ``read()`` returned it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import DependencyError, InputError
from .frame_slot import LatestFrameSlot
from .sources import Frame, FrameStream, Source, SourceStats

CSI_DEFAULT = (1280, 720, 30)  # width, height, framerate: a mode every Jetson CSI sensor driver offers
APPSINK = "appsink drop=true max-buffers=1 sync=false"  # the newest frame only, never a queue
GRAB_JOIN_S = 2.0
OPENCV_WITH_GSTREAMER = (
    "on a Jetson use JetPack's OpenCV (apt: nvidia-opencv; the system python3's cv2 - a venv needs "
    "--system-site-packages and no opencv-python* wheel: pip uninstall -y opencv-python-headless opencv-python); "
    "elsewhere an OpenCV built with -D WITH_GSTREAMER=ON. pip's opencv-python wheels have no GStreamer")


# -- pipeline strings (pure) -----------------------------------------------------------------------------
def csi_pipeline(sensor_id: int = 0, *, width: int = CSI_DEFAULT[0], height: int = CSI_DEFAULT[1],
                 framerate: int = CSI_DEFAULT[2], flip: int = 0) -> str:
    """A Jetson CSI camera through libargus: NVMM NV12 -> nvvidconv (VIC) -> BGRx -> BGR for OpenCV."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM),width={width},height={height},framerate={framerate}/1,format=NV12 ! "
            f"nvvidconv flip-method={flip} ! video/x-raw,width={width},height={height},format=BGRx ! "
            f"videoconvert ! video/x-raw,format=BGR ! {APPSINK}")


def rtsp_pipeline(url: str, *, latency_ms: int = 0, jetson: bool = False) -> str:
    """An RTSP stream, decoded by whatever decoder GStreamer picks. On a Jetson that is the hardware
    decoder, whose NVMM output nvvidconv brings to system memory first."""
    if '"' in url:
        raise InputError("an RTSP URL with a double quote cannot go into a GStreamer pipeline", found=url,
                         fix="percent-encode it (%22)")
    to_system = "nvvidconv ! video/x-raw,format=BGRx ! " if jetson else ""
    return (f'rtspsrc location="{url}" latency={latency_ms} ! decodebin ! {to_system}'
            f"videoconvert ! video/x-raw,format=BGR ! {APPSINK}")


def is_jetson() -> bool:
    return Path("/etc/nv_tegra_release").is_file()


def opencv_build_value(build_information: str, name: str) -> str:
    """The value of the ``name:`` line of ``cv2.getBuildInformation()`` ("" where there is none)."""
    for line in build_information.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return ""


def opencv_gstreamer(build_information: str) -> str:
    """The value of the ``GStreamer:`` line ("NO" where there is none)."""
    return opencv_build_value(build_information, "GStreamer") or "NO"


def has_gstreamer(cv2: Any) -> bool:
    info = getattr(cv2, "getBuildInformation", None)
    return info is not None and opencv_gstreamer(info()).upper().startswith("YES")


def require_gstreamer(cv2: Any, source: Source) -> None:
    """Refuse a source that only GStreamer can open when this OpenCV was built without it."""
    if has_gstreamer(cv2):
        return
    info = getattr(cv2, "getBuildInformation", None)
    line = opencv_gstreamer(info()) if info is not None else "unknown"
    raise DependencyError(f"--source {source.text} needs OpenCV with GStreamer; the installed OpenCV has none",
                          found=f"cv2 {getattr(cv2, '__version__', '?')} ({getattr(cv2, '__file__', '?')}), "
                                f"GStreamer: {line}",
                          fix=OPENCV_WITH_GSTREAMER)


# -- opening -------------------------------------------------------------------------------------------------
def capture_target(cv2: Any, source: Source) -> tuple[tuple[Any, ...], str]:
    """(arguments for cv2.VideoCapture, how it is opened in words)."""
    if source.kind == "csi":
        width, height, rate = (source.width or CSI_DEFAULT[0], source.height or CSI_DEFAULT[1],
                               source.framerate or CSI_DEFAULT[2])
        pipeline = csi_pipeline(source.index or 0, width=width, height=height, framerate=rate, flip=source.flip or 0)
        return (pipeline, cv2.CAP_GSTREAMER), f"GStreamer: {pipeline}"
    if source.kind == "gst":
        return (source.location, cv2.CAP_GSTREAMER), f"GStreamer: {source.location}"
    if source.kind == "rtsp":
        if has_gstreamer(cv2):
            pipeline = rtsp_pipeline(source.location, jetson=is_jetson())
            return (pipeline, cv2.CAP_GSTREAMER), f"GStreamer: {pipeline}"
        return (source.location, cv2.CAP_FFMPEG), "OpenCV FFmpeg (no GStreamer in this OpenCV)"
    if source.kind == "v4l2":
        return (source.location, cv2.CAP_V4L2), f"OpenCV V4L2: {source.location}"
    if source.kind == "camera":
        return (source.index,), f"OpenCV camera {source.index}"
    return (source.location,), f"OpenCV: {source.location}"


OPEN_FIXES = {
    "csi": "check the camera with: gst-launch-1.0 nvarguscamerasrc sensor-id=N num-buffers=30 ! fakesink; "
           "restart the daemon (sudo systemctl restart nvargus-daemon); use a width/height/framerate the sensor has",
    "v4l2": "check the device and your access to it: ls -l /dev/video*, v4l2-ctl --list-formats-ext -d DEVICE "
            "(a user in the video group)",
    "rtsp": "check the URL plays elsewhere (ffplay URL), the network and the credentials",
    "camera": "check the camera index (ls /dev/video*) and permissions",
    "gst": "check the pipeline with gst-launch-1.0 (with fakesink in place of appsink)",
    "video": "check the file plays (ffprobe FILE); OpenCV's wheel reads H.264/MJPEG in mp4/avi/mkv",
}


@contextlib.contextmanager
def native_stderr_captured(cv2: Any) -> Iterator[list[str]]:
    """What OpenCV, FFmpeg and GStreamer print on file descriptor 2 while the block runs, kept out of the
    terminal and handed back as lines (a bad video would otherwise print "moov atom not found" above the
    error that explains it). OpenCV's own logger is silenced for the block too."""
    lines: list[str] = []
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    previous = None
    if logging is not None and hasattr(logging, "setLogLevel"):
        previous = logging.setLogLevel(getattr(logging, "LOG_LEVEL_SILENT", 0))
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real descriptor 2 (an embedding host): nothing to redirect
        saved = None
    try:
        with tempfile.TemporaryFile() as sink:
            if saved is not None:
                os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                if saved is not None:
                    os.dup2(saved, 2)
                    os.close(saved)
                sink.seek(0)
                lines.extend(line.strip() for line in sink.read().decode("utf-8", "replace").splitlines()
                             if line.strip())
    finally:
        if logging is not None and previous is not None:
            logging.setLogLevel(previous)


def open_capture(cv2: Any, source: Source, stats: SourceStats) -> Any:
    args, how = capture_target(cv2, source)
    stats.opened_with = how
    with native_stderr_captured(cv2) as native:
        capture = cv2.VideoCapture(*args)
        opened = capture.isOpened()
    if not opened:
        capture.release()
        said = ("; it said: " + " | ".join(native[-3:])) if native else ""
        raise InputError(f"cannot open {source.kind} source {source.text}", found=how + said,
                         fix=OPEN_FIXES.get(source.kind, "check the source"))
    if native:  # opened after all: its warnings may still matter, shown once, after the open
        sys.stderr.write("\n".join(native) + "\n")
    if source.kind in ("camera", "v4l2"):  # GStreamer pipelines carry their own caps
        for prop, value in (("CAP_PROP_FRAME_WIDTH", source.width), ("CAP_PROP_FRAME_HEIGHT", source.height),
                            ("CAP_PROP_FPS", source.framerate)):
            if value is not None:
                capture.set(getattr(cv2, prop), float(value))
    stats.nominal_fps = _fps(cv2, capture) or (float(source.framerate) if source.framerate else None)
    return capture


def _fps(cv2: Any, capture: Any) -> float | None:
    prop, get = getattr(cv2, "CAP_PROP_FPS", None), getattr(capture, "get", None)
    if prop is None or get is None:
        return None
    value = float(get(prop) or 0.0)
    return value if 0.0 < value < 10_000.0 else None


def _rgb(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[:, :, ::-1])


# -- reading -------------------------------------------------------------------------------------------------
def video_frames(cv2: Any, source: Source, stats: SourceStats) -> FrameStream:
    """A video file, every frame in order; its stamp is the frame's position (index / fps)."""
    capture = open_capture(cv2, source, stats)
    try:
        while True:
            asked = time.monotonic()
            ok, bgr = capture.read()
            if not ok or bgr is None:
                stats.ended_because = "end of video"
                return
            stats.frames += 1
            stats.delivered += 1
            stamp = round((stats.frames - 1) * 1e9 / stats.nominal_fps) if stats.nominal_fps else None
            yield Frame(f"{stats.frames:06d}", _rgb(bgr), asked, "read", stats.frames, stamp)
    finally:
        capture.release()


def camera_reads(capture: Any, max_failures: int, stop: Callable[[], bool] = lambda: False
                 ) -> Iterator[tuple[np.ndarray, float, int]]:
    """(bgr, capture time, wall-clock ns) of each frame ``capture.read()`` returns, until ``stop()`` or
    ``max_failures`` failed reads in a row (then ``no_frame_reason``)."""
    failures = 0
    while not stop():
        ok, bgr = capture.read()
        captured, wall = time.monotonic(), time.time_ns()
        if not ok or bgr is None:
            failures += 1
            if failures >= max_failures:
                return
            continue
        failures = 0
        yield bgr, captured, wall


def no_frame_reason(max_failures: int) -> str:
    return f"camera delivered no frame {max_failures} times in a row"


def sequential_live_frames(cv2: Any, source: Source, stats: SourceStats, max_failures: int) -> FrameStream:
    """Every frame OpenCV returns, read in the caller's thread (what OpenCV buffers is not seen)."""
    capture = open_capture(cv2, source, stats)
    try:
        for bgr, captured, wall in camera_reads(capture, max_failures):
            stats.frames += 1
            stats.delivered += 1
            yield Frame(f"{stats.frames:06d}", _rgb(bgr), captured, "grab", stats.delivered, wall, LIVE_FRAME_ID)
        stats.ended_because = no_frame_reason(max_failures)
    finally:
        capture.release()


LIVE_FRAME_ID = "camera"  # header frame_id of live frames (a bag written from a camera)


class LatestFrameGrabber:
    """A thread reads ``capture`` as fast as it delivers into a keep-the-newest ``LatestFrameSlot``.

    ``delivered`` counts the frames read; ``dropped`` those replaced by a newer one before ``take()``.
    """

    def __init__(self, capture: Any, *, max_failures: int = 30) -> None:
        self.capture, self.max_failures = capture, max_failures
        self.ended_because = ""
        self.error: BaseException | None = None
        self._slot = LatestFrameSlot()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="edgeseg-grab", daemon=True)

    @property
    def delivered(self) -> int:
        return self._slot.stats.received

    @property
    def dropped(self) -> int:
        return self._slot.stats.dropped

    def start(self) -> LatestFrameGrabber:
        self._thread.start()
        return self

    def _run(self) -> None:
        why = "stopped"
        try:
            for bgr, captured, wall in camera_reads(self.capture, self.max_failures, lambda: self._stop):
                self._slot.put((bgr, captured, wall, self._slot.stats.received + 1))
            if not self._stop:
                why = no_frame_reason(self.max_failures)
        except Exception as exc:  # an OpenCV error in the thread: the loop raises it as an input error
            self.error = exc
            why = f"reading failed: {type(exc).__name__}: {exc}"
        self.ended_because = why
        self._slot.close()

    def take(self) -> tuple[np.ndarray, float, int, int] | None:
        """(bgr, captured, wall-clock ns, delivered count) of the newest frame not yet taken; None at the end."""
        item: tuple[np.ndarray, float, int, int] | None = self._slot.take()
        return item

    def stop(self) -> bool:
        """Stop the thread; False when it is still stuck in ``read()`` after GRAB_JOIN_S."""
        self._stop = True
        self._thread.join(timeout=GRAB_JOIN_S)
        return not self._thread.is_alive()


def latest_live_frames(cv2: Any, source: Source, stats: SourceStats, max_failures: int) -> FrameStream:
    """The newest frame each time the loop asks (grab thread); frames it never took are counted as dropped."""
    capture = open_capture(cv2, source, stats)
    grabber = LatestFrameGrabber(capture, max_failures=max_failures).start()
    stopped = False
    try:
        while True:
            item = grabber.take()
            stats.delivered, stats.dropped = grabber.delivered, grabber.dropped
            if item is None:
                break
            bgr, captured, wall, seq = item
            stats.frames += 1
            yield Frame(f"{stats.frames:06d}", _rgb(bgr), captured, "grab", seq, wall, LIVE_FRAME_ID)
    finally:
        stopped = grabber.stop()
        stats.delivered, stats.dropped = grabber.delivered, grabber.dropped
        stats.ended_because = stats.ended_because or grabber.ended_because
        if stopped:  # never release a capture a thread is still reading from
            capture.release()
    if grabber.error is not None:
        raise InputError(f"reading {source.text} failed", found=grabber.ended_because,
                         fix=OPEN_FIXES.get(source.kind, "check the source"))
