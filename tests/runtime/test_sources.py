"""runtime.sources / camera_sources / latency: the source syntax, GStreamer pipeline strings, frames with
their capture times from folders, videos, bags and (fake) cameras, the grab-newest policy, latency figures."""

from __future__ import annotations

import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from helpers.bags import default_stamps, gradient_frames, write_image_bag
from helpers.fake_capture import FakeCapture
from helpers.tiny_onnx import write_images

from edgeseg.errors import DependencyError, InputError, UsageError
from edgeseg.runtime import camera_sources
from edgeseg.runtime.camera_sources import (
    LatestFrameGrabber,
    capture_target,
    csi_pipeline,
    has_gstreamer,
    opencv_gstreamer,
    rtsp_pipeline,
)
from edgeseg.runtime.latency import LatencyRecorder, simulate_keep_latest, timed_masks
from edgeseg.runtime.sources import Frame, SourceStats, frames, parse_source, prepare_source


# -- the syntax ------------------------------------------------------------------------------------------
def test_every_form_parses(tmp_path: Path) -> None:
    write_images(tmp_path / "frames", 1)
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "metadata.yaml").write_text("rosbag2_bagfile_information: {}")
    (tmp_path / "demo.mcap").write_bytes(b"x")
    image = next((tmp_path / "frames").glob("*.png"))
    cases = {
        str(tmp_path / "frames"): ("folder", str(tmp_path / "frames"), None),
        str(image): ("image", str(image), None),
        str(tmp_path / "clip.mp4"): ("video", str(tmp_path / "clip.mp4"), None),
        "0": ("camera", "0", 0),
        "2?width=640&height=480&framerate=60": ("camera", "2", 2),
        "v4l2:///dev/video1": ("v4l2", "/dev/video1", None),
        "v4l2://3": ("v4l2", "/dev/video3", None),
        "csi://1?width=1920&height=1080&framerate=30&flip=2": ("csi", "1", 1),
        "rtsp://user:pw@cam:554/stream?channel=1": ("rtsp", "rtsp://user:pw@cam:554/stream?channel=1", None),
        "gst:videotestsrc ! videoconvert ! appsink": ("gst", "videotestsrc ! videoconvert ! appsink", None),
        f"bag:{tmp_path / 'demo.mcap'}": ("bag", str(tmp_path / "demo.mcap"), None),
        str(tmp_path / "demo.mcap"): ("bag", str(tmp_path / "demo.mcap"), None),
        f"bag:{tmp_path / 'rec'}": ("bag", str(tmp_path / "rec"), None),
        str(tmp_path / "rec"): ("bag", str(tmp_path / "rec"), None),  # a rosbag2 folder is not an image folder
    }
    for text, (kind, location, index) in cases.items():
        source = parse_source(text)
        assert (source.kind, source.location, source.index, source.text) == (kind, location, index, text), text
    csi = parse_source("csi://1?width=1920&height=1080&framerate=30&flip=2")
    assert (csi.width, csi.height, csi.framerate, csi.flip, csi.live, csi.stamped) == (1920, 1080, 30, 2, True, True)
    assert parse_source("2?width=640&height=480&framerate=60").framerate == 60
    assert not parse_source(str(tmp_path / "frames")).stamped and parse_source(str(tmp_path / "demo.mcap")).stamped
    assert parse_source(str(tmp_path / "demo.mcap"), topic="/cam").topic == "/cam"


def test_options_merge_with_the_query() -> None:
    assert parse_source("csi://0", width=1280, height=720, framerate=60).framerate == 60
    assert parse_source("csi://0?width=1280&height=720", width=1280).width == 1280  # same value twice is fine
    with pytest.raises(UsageError, match="given twice"):
        parse_source("csi://0?width=1280&height=720", width=640)


@pytest.mark.parametrize(("text", "kwargs", "message"), [
    ("", {}, "--source is empty"),
    ("http://cam/stream", {}, "unknown source scheme"),
    ("notes.txt", {}, "cannot tell what kind of source"),
    ("missing.mp4", {}, "does not exist"),
    ("bag:missing.mcap", {}, "does not exist"),
    ("csi://front", {}, "sensor id"),
    ("v4l2://video0", {}, "device path"),
    ("csi://0?fps=30", {}, "unknown camera option"),
    ("csi://0?width=1280", {}, "only one of width and height"),
    ("csi://0?flip=9&width=1&height=1", {}, "from 0 to 7"),
    ("0?width=0&height=480", {}, "from 1 to"),
    ("gst:videotestsrc ! fakesink", {}, "must end in appsink"),
    ("rtsp://cam/stream", {"width": 640, "height": 480}, "only apply to cameras"),
    ("0", {"topic": "/cam/image"}, "--topic only applies to bag sources"),
])
def test_bad_sources_are_usage_errors_listing_the_forms(text: str, kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_source(text, **kwargs)
    assert message in caught.value.format()
    if "scheme" in message or "cannot tell" in message:
        assert "csi://N" in caught.value.format() and "bag:PATH" in caught.value.format()
    assert caught.value.exit_code == 2


# -- GStreamer: pipeline strings and the OpenCV check -------------------------------------------------------
def test_csi_pipeline_string() -> None:
    assert csi_pipeline(1, width=1920, height=1080, framerate=30, flip=2) == (
        "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1,format=NV12 ! "
        "nvvidconv flip-method=2 ! video/x-raw,width=1920,height=1080,format=BGRx ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false")
    assert "width=1280,height=720,framerate=30/1" in csi_pipeline()


def test_rtsp_pipeline_string() -> None:
    assert rtsp_pipeline("rtsp://cam/s?a=1&b=2") == (
        'rtspsrc location="rtsp://cam/s?a=1&b=2" latency=0 ! decodebin ! videoconvert ! video/x-raw,format=BGR ! '
        "appsink drop=true max-buffers=1 sync=false")
    assert "decodebin ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert" in rtsp_pipeline("rtsp://c/s", jetson=True)
    with pytest.raises(InputError, match="double quote"):
        rtsp_pipeline('rtsp://c/"s')


def fake_cv2(gstreamer: str = "NO", capture: object = None) -> types.SimpleNamespace:
    info = f"  Video I/O:\n    FFMPEG:   YES\n    GStreamer:   {gstreamer}\n"
    return types.SimpleNamespace(
        __version__="4.10.0", __file__="/venv/site-packages/cv2/__init__.py", VideoCapture=capture,
        CAP_GSTREAMER=1800, CAP_FFMPEG=1900, CAP_V4L2=200, CAP_PROP_FPS=5, CAP_PROP_FRAME_WIDTH=3,
        CAP_PROP_FRAME_HEIGHT=4, getBuildInformation=lambda: info)


def test_gstreamer_line_of_the_build_information() -> None:
    assert opencv_gstreamer("    GStreamer:                   YES (1.20.3)\n") == "YES (1.20.3)"
    assert opencv_gstreamer("    GStreamer:                   NO\n") == "NO"
    assert opencv_gstreamer("  Video I/O:\n    FFMPEG: YES\n") == "NO"
    assert has_gstreamer(fake_cv2("YES (1.16.3)")) and not has_gstreamer(fake_cv2("NO"))


@pytest.mark.parametrize("text", ["csi://0", "gst:videotestsrc ! appsink"])
def test_gstreamer_sources_refused_up_front_without_it(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []
    monkeypatch.setitem(sys.modules, "cv2", fake_cv2("NO", capture=lambda *a: opened.append(a)))
    for attempt in (lambda: prepare_source(parse_source(text)), lambda: frames(text)):
        with pytest.raises(DependencyError) as caught:
            attempt()
        message = caught.value.format()
        assert "needs OpenCV with GStreamer" in message and "GStreamer: NO" in message
        assert "JetPack" in message and "WITH_GSTREAMER=ON" in message
    assert opened == []  # checked before anything was opened


def test_capture_targets_per_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(camera_sources, "is_jetson", lambda: False)
    with_gst, without = fake_cv2("YES (1.20.3)"), fake_cv2("NO")
    args, how = capture_target(with_gst, parse_source("csi://1?width=640&height=480&framerate=15"))
    assert args == (csi_pipeline(1, width=640, height=480, framerate=15), 1800) and how.startswith("GStreamer")
    assert capture_target(with_gst, parse_source("rtsp://c/s"))[0] == (rtsp_pipeline("rtsp://c/s"), 1800)
    assert capture_target(without, parse_source("rtsp://c/s"))[0] == ("rtsp://c/s", 1900)  # FFmpeg fallback
    assert capture_target(without, parse_source("v4l2:///dev/video2"))[0] == ("/dev/video2", 200)
    assert capture_target(without, parse_source("3"))[0] == (3,)


# -- frames -------------------------------------------------------------------------------------------------
def test_folder_frames_and_the_old_tuple_api(tmp_path: Path) -> None:
    write_images(tmp_path / "frames", 3)
    (tmp_path / "frames" / "broken.png").write_bytes(b"not a png")
    stats = SourceStats()
    got = list(frames(str(tmp_path / "frames"), stats))
    assert [f.seq for f in got] == [1, 2, 3] and stats.skipped == 1 and stats.ended_because == "end of folder"
    assert all(f.clock == "read" and f.stamp_ns is None and f.rgb.dtype == np.uint8 and f.rgb.shape[2] == 3
               for f in got)
    assert [f.captured for f in got] == sorted(f.captured for f in got)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        list(frames(str(tmp_path / "empty")))


def test_video_frames(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (48, 32))
    if not writer.isOpened():
        pytest.skip("this OpenCV cannot write MJPG .avi files")
    for i in range(5):
        writer.write(np.full((32, 48, 3), (i * 40, 0, 255), np.uint8))  # BGR: red is high
    writer.release()
    stats = SourceStats()
    got = list(frames(str(path), stats))
    assert len(got) == 5 and stats.ended_because == "end of video" and stats.nominal_fps == 25.0
    assert all(f.rgb.shape == (32, 48, 3) and f.rgb.dtype == np.uint8 for f in got)
    assert got[0].rgb[..., 0].mean() > 200 and got[0].rgb[..., 2].mean() < 30  # RGB, not BGR
    assert [f.stamp_ns for f in got] == [i * 40_000_000 for i in range(5)]


@pytest.mark.parametrize(("storage", "name", "compressed"), [("mcap", "b.mcap", None), ("sqlite3", "b.db3", "jpeg"),
                                                              ("ros1", "b.bag", None)])
def test_bag_frames(tmp_path: Path, storage: str, name: str, compressed: str | None) -> None:
    pictures = gradient_frames(4)
    bag = write_image_bag(tmp_path / name, storage, pictures, topic="/cam/image", compressed=compressed,
                          frame_id="cam_optical", extra_image_topics=["/cam/other"])
    with pytest.raises(UsageError, match="several image topics"):
        prepare_source(parse_source(f"bag:{bag}"))
    source = prepare_source(parse_source(f"bag:{bag}", topic="/cam/image"))
    stats = SourceStats()
    got = list(frames(source, stats))
    assert [f.stamp_ns for f in got] == default_stamps(4) and [f.seq for f in got] == [1, 2, 3, 4]
    assert {f.frame_id for f in got} == {"cam_optical"} and {f.clock for f in got} == {"read"}
    assert stats.ended_because == "end of bag"
    if compressed is None:
        assert all(np.array_equal(f.rgb, p) for f, p in zip(got, pictures, strict=True))


# -- live: the grab-newest policy ---------------------------------------------------------------------------
class Burst(FakeCapture):
    """60 frames 1 ms apart, then failing; the fake cv2's camera reports 90 fps."""

    def get(self, prop: int) -> float:
        return 90.0 if prop == 5 else 0.0  # CAP_PROP_FPS of fake_cv2


class Gated(FakeCapture):
    """60 frames read as fast as asked, but the 11th read waits for ``resume``: ``paused`` says frames 1-10 are
    delivered, ``ended`` that all 60 are (the grab thread puts a frame before it reads the next)."""

    period = 0.0

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.paused, self.resume, self.ended = threading.Event(), threading.Event(), threading.Event()

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.reads == 10:
            self.paused.set()
            self.resume.wait(30)
        if self.reads == self.count:
            self.ended.set()
        return super().read()


def test_grabber_keeps_the_newest_and_counts_every_drop() -> None:
    capture = Gated()
    grabber = LatestFrameGrabber(capture, max_failures=3).start()
    assert capture.paused.wait(30)
    first = grabber.take()  # a model slower than the camera: ten frames came, the newest is taken
    capture.resume.set()
    assert capture.ended.wait(30)
    last = grabber.take()
    assert first is not None and last is not None and (first[3], last[3]) == (10, 60)  # the last one is not lost
    assert grabber.take() is None and grabber.stop()
    assert grabber.delivered == 60 and "no frame 3 times" in grabber.ended_because
    assert grabber.dropped == 58 and 2 + grabber.dropped == grabber.delivered  # taken + dropped == delivered


def test_live_frames_through_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", fake_cv2("NO", capture=Burst))
    stats = SourceStats()
    got = []
    for frame in frames("0?width=4&height=4", stats, max_failures=3):
        got.append(frame)
        time.sleep(0.004)
    assert stats.delivered == 60 and stats.frames == len(got) and stats.dropped == 60 - len(got)
    assert all(f.clock == "grab" and f.frame_id == "camera" and f.stamp_ns for f in got)
    assert stats.nominal_fps == 90.0 and stats.opened_with == "OpenCV camera 0"
    assert [f.seq for f in got] == [int(f.rgb[0, 0, 0]) for f in got]  # seq is the delivery count
    sequential = list(frames("0", max_failures=3, latest=False))  # every frame, none dropped
    assert len(sequential) == 60


def test_a_camera_error_in_the_grab_thread_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(Burst):
        def read(self) -> tuple[bool, np.ndarray | None]:
            raise RuntimeError("VIDIOC_DQBUF: No such device")

    monkeypatch.setitem(sys.modules, "cv2", fake_cv2("NO", capture=Broken))
    with pytest.raises(InputError, match="reading v4l2:///dev/video0 failed") as caught:
        list(frames("v4l2:///dev/video0"))
    assert "No such device" in caught.value.format()


def test_a_capture_that_does_not_open(monkeypatch: pytest.MonkeyPatch) -> None:
    class Closed(Burst):
        def isOpened(self) -> bool:  # noqa: N802
            return False

    monkeypatch.setitem(sys.modules, "cv2", fake_cv2("YES (1.20.3)", capture=Closed))
    with pytest.raises(InputError, match="cannot open csi source") as caught:
        list(frames("csi://0"))
    assert "nvargus-daemon" in caught.value.format() and "nvarguscamerasrc" in caught.value.format()


@pytest.mark.skipif("cv2" not in sys.modules and not __import__("importlib").util.find_spec("cv2"),
                    reason="OpenCV is not installed")
def test_gstreamer_videotestsrc_end_to_end() -> None:
    import cv2

    if not has_gstreamer(cv2):
        pytest.skip(f"this OpenCV ({cv2.__version__}) has no GStreamer: GStreamer: "
                    f"{opencv_gstreamer(cv2.getBuildInformation())}")
    text = ("gst:videotestsrc num-buffers=20 ! video/x-raw,width=64,height=48,framerate=30/1 ! videoconvert ! "
            "video/x-raw,format=BGR ! appsink")
    stats = SourceStats()
    got = list(frames(text, stats, max_failures=3))
    assert got and all(f.rgb.shape == (48, 64, 3) for f in got) and stats.opened_with.startswith("GStreamer")
    assert stats.delivered == 20 and len(got) + stats.dropped == 20


# -- latency ------------------------------------------------------------------------------------------------
def test_keep_latest_simulation() -> None:
    arrivals = [0.0, 0.1, 0.2, 0.3]
    assert simulate_keep_latest(arrivals, [0.05] * 4) == 0
    # frame 0 busy until .25: 1 and 2 arrived, 2 is taken, 1 dropped; 2 busy until .5: 3 taken
    assert simulate_keep_latest(arrivals, [0.25] * 4) == 1
    assert simulate_keep_latest(arrivals, [1.0] * 4) == 2  # 0, then 3 (1 and 2 dropped)
    assert simulate_keep_latest([], []) == 0


def frame(captured: float, seq: int, clock: str = "grab", stamp: int | None = None) -> Frame:
    return Frame(f"{seq:06d}", np.zeros((2, 2, 3), np.uint8), captured, clock, seq, stamp)


def test_recorder_figures_for_a_live_source() -> None:
    recorder = LatencyRecorder(warmup_frames=1)
    recorder.add(frame(0.0, 1), 0.5, 1.0)  # warm-up frame: left out
    for i, seq in enumerate([3, 4, 7, 8]):  # 2, 5 and 6 were dropped
        recorder.add(frame(1.0 + i * 0.1, seq), 1.0 + i * 0.1 + 0.01, 1.0 + i * 0.1 + 0.02 * (i + 1))
    summary = recorder.summary(nominal_fps=30.0)
    assert summary is not None
    assert summary.frames == 4 and summary.warmup_frames == 1 and summary.clock == "grab"
    assert summary.p50_ms == pytest.approx(50.0) and summary.max_ms == pytest.approx(80.0)
    assert summary.jitter_ms == pytest.approx(summary.p99_ms - summary.p50_ms)
    assert summary.delivered == 6 and summary.dropped == 2  # seq 3..8: six delivered, four segmented
    assert summary.source_fps == pytest.approx(5 / 0.3) and summary.nominal_fps == 30.0
    assert summary.fps == pytest.approx(3 / (1.38 - 1.02))
    assert summary.samples_ms == pytest.approx([20.0, 40.0, 60.0, 80.0])
    assert any("dropped" == key and "2 of 6" in value for key, value in summary.rows())


def test_recorder_figures_for_a_replay() -> None:
    recorder = LatencyRecorder(warmup_frames=1)
    for i in range(5):  # recorded at 10 Hz, each frame takes 0.25 s: a live loop would drop some
        recorder.add(frame(i * 1.0, i + 1, "read", 1_000 + i * 100_000_000), i * 1.0, i * 1.0 + 0.25)
    summary = recorder.summary()
    assert summary is not None and summary.dropped == 0 and summary.source_fps == pytest.approx(10.0)
    assert summary.dropped_if_live == simulate_keep_latest([0.0, 0.1, 0.2, 0.3], [0.25] * 4) == 1
    assert LatencyRecorder().summary() is None
    single = LatencyRecorder(warmup_frames=1)
    single.add(frame(0.0, 1, "read"), 0.0, 0.002)
    assert single.summary().frames == 1  # the only frame is not left out


def test_timed_masks_warms_up_and_stops() -> None:
    calls: list[int] = []

    def seg(rgb: np.ndarray) -> np.ndarray:
        calls.append(1)
        return rgb[:, :, 0]

    recorder = LatencyRecorder()
    out = list(timed_masks(seg, (frame(time.monotonic(), i + 1, "read") for i in range(10)), recorder,
                           max_frames=4, warmup_calls=3))
    assert len(out) == 4 and len(recorder) == 4 and len(calls) == 3 + 4


def test_stopping_early_stops_the_grab_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    class Endless(Burst):
        count = 10**9

    monkeypatch.setitem(sys.modules, "cv2", fake_cv2("NO", capture=Endless))
    stats = SourceStats()
    stream = frames("0", stats)
    assert [next(stream).seq > 0 for _ in range(3)] == [True] * 3
    assert any(t.name == "edgeseg-grab" for t in threading.enumerate())
    stream.close()  # what contextlib.closing does when the loop stops (--max-frames, Ctrl-C)
    assert not any(t.name == "edgeseg-grab" for t in threading.enumerate())
    assert stats.frames == 3 and stats.delivered >= 3
