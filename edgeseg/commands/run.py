"""``edgeseg run``: segment frames from any source with the runtime Segmenter; capture-to-mask latency."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ._common import POSITIVE, quote, summary_table
from .backend_option import backend_option
from .option_groups import threads_option

SOURCE_HELP = ("Image folder, image or video file, camera index (0), v4l2:///dev/video0, csi://0, rtsp://..., "
               "gst:PIPELINE ! appsink, or bag:PATH (.mcap/.db3/.bag; with --topic). Cameras take "
               "?width=W&height=H&framerate=F (csi://0?width=1920&height=1080&framerate=30&flip=2).")
RUN_FILE = "run.json"
LIVE_TOPIC = "/camera/image_raw"  # the input topic live frames stand for: output topics derive from it


@dataclass
class Outputs:
    """Where a run writes: overlay PNGs, a bag of masks + overlays, the run JSON."""

    png_dir: Path | None = None
    bag: Path | None = None
    json: Path | None = None
    mask_topic: str | None = None
    overlay_topic: str | None = None
    show: bool = False


@click.command("run")
@click.option("--artifacts", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Build folder (engines/NAME) with manifest.json.")
@click.option("--source", required=True, help=SOURCE_HELP)
@click.option("--topic", default=None, help="Image topic of a bag: source (needed when it has several).")
@backend_option(help="auto: the runtime the build chose when it is installed here (TensorRT on a GPU, else ONNX "
                      "Runtime, else OpenVINO); torch runs the PyTorch reference and needs --weights.")
@click.option("--device", default=None,
              help="openvino: its device (CPU, GPU, NPU; default: the build's, else CPU; GPU/NPU untested); "
                   "torch: cpu or cuda.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Checkpoint the folder was built from (only for --backend torch).")
@click.option("--save", type=click.Path(path_type=Path), default=None,
              help="A folder: overlay PNGs. A path ending in .mcap or .db3 (ROS 2) or .bag (ROS 1): a bag of mono8 "
                   "masks + rgb8 overlays with the input's header stamps (bag: and live sources only).")
@click.option("--mask-topic", default=None, help="Mask topic of a --save bag [default: INPUT_TOPIC/edgeseg/mask].")
@click.option("--overlay-topic", default=None,
              help="Overlay topic of a --save bag [default: INPUT_TOPIC/edgeseg/overlay].")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the run's figures here [default: run.json in the --save folder, OUT.run.json beside a "
                   "--save bag, none without --save].")
@click.option("--show", is_flag=True, help="Show overlays in a window (needs OpenCV with a GUI and a display).")
@click.option("--max-frames", type=POSITIVE, default=None, help="Stop after this many frames.")
@threads_option("CPU threads (onnxruntime and openvino backends).")
@click.option("--alpha", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True, help="Overlay opacity.")
@click.option("--allow-unvalidated", is_flag=True,
              help="Run a folder whose accuracy gates failed or were not run (a warning says why).")
def run_cmd(artifacts: Path, source: str, topic: str | None, backend: str, device: str | None, weights: Path | None,
            save: Path | None,
            mask_topic: str | None, overlay_topic: str | None, json_file: Path | None, show: bool,
            max_frames: int | None, threads: int | None, alpha: float, allow_unvalidated: bool) -> None:
    """Run the segmentation loop on frames; report capture-to-mask latency (p50/p90/p99, jitter), FPS and
    dropped frames (zero copy on GPU backends). Stop a camera with Ctrl-C: the summary and outputs are kept.

    Only a folder whose build passed its accuracy gates runs, after the hash of the file it
    runs is checked against manifest.json (--allow-unvalidated overrides the gates, never the hashes).
    """
    from ..runtime.segmenter import Segmenter
    from ..runtime.sources import parse_source, prepare_source

    _check_backend(artifacts, backend, weights, device)
    src = parse_source(source, topic=topic)
    outputs = _plan_outputs(src, save, mask_topic, overlay_topic, json_file)
    cv2 = _gui_opencv() if show else None
    outputs.show = show
    src = prepare_source(src)  # OpenCV / GStreamer / rosbags and the bag's topic, before the model loads
    _bag_topics(outputs, src)  # the output topics derive from the topic the source resolved
    _prepare_output_folders(outputs)
    seg = Segmenter.from_artifacts(artifacts, backend=backend, output_size="frame", threads=threads,
                                   weights=weights, device=device, allow_unvalidated=allow_unvalidated)
    if seg.warning:
        click.secho(seg.warning, fg="yellow", err=True)
    click.echo(f"running {seg.model_file} ({seg.precision}, {seg.name}; build verdict: {seg.validation_status}) "
               f"on {src.kind} {src.text}{' topic ' + str(src.topic) if src.topic else ''}", err=True)
    try:
        outcome = _run_loop(seg, src, outputs, cv2, alpha, max_frames)
    finally:
        seg.close()
    _finish(artifacts, seg, src, outputs, outcome)


def _check_backend(artifacts: Path, backend: str, weights: Path | None, device: str | None = None) -> None:
    from ..errors import UsageError

    if device is not None and backend not in ("openvino", "torch"):
        raise UsageError("--device picks OpenVINO's or PyTorch's device",
                         found=f"--backend {backend}", fix="add --backend openvino (or torch), or drop --device")

    if backend == "torch" and weights is None:
        raise UsageError("--backend torch runs the PyTorch model and needs its weights (build folders hold none)",
                         fix=f"edgeseg run --artifacts {quote(artifacts)} --backend torch --weights CHECKPOINT ..., "
                             "or drop --backend torch")
    if weights is not None and backend != "torch":
        raise UsageError("--weights is only used with --backend torch", fix="add --backend torch or drop --weights")
    if backend == "torch":
        from ..errors import require

        require("torch", purpose="--backend torch")  # the robot install has none: say so before anything else


def _plan_outputs(src: Any, save: Path | None, mask_topic: str | None, overlay_topic: str | None,
                  json_file: Path | None) -> Outputs:
    """What --save / --json / topics mean for this source; bad combinations exit 2 before any work."""
    from ..errors import UsageError
    from ..runtime.sources import BAG_EXTENSIONS

    bag = save if save is not None and save.suffix.lower() in BAG_EXTENSIONS else None
    if bag is not None and not src.stamped:
        raise UsageError(f"--save {save} writes a bag, whose messages need header stamps and frame ids; "
                         f"--source {src.text} (a {src.kind}) has none",
                         fix="use --save DIR for overlay PNGs, or read a bag (--source bag:PATH) or a camera")
    if bag is None and (mask_topic or overlay_topic):
        raise UsageError("--mask-topic and --overlay-topic name the topics of a --save bag",
                         fix="add --save OUT.mcap (or .db3, .bag), or drop them")
    if bag is not None and bag.exists():
        raise UsageError(f"--save {bag} exists already", fix="delete it, or write to another path")
    if json_file is not None and json_file.suffix.lower() != ".json":
        raise UsageError(f"--json {json_file} should end in .json")
    png_dir = save if save is not None and bag is None else None
    if json_file is None and save is not None:
        json_file = png_dir / RUN_FILE if png_dir is not None else save.with_suffix(".run.json")
    outputs = Outputs(png_dir, bag, json_file, mask_topic, overlay_topic)
    if bag is not None:
        from ..errors import require

        require("rosbags", extra="ros", purpose=f"--save {bag}")
        if mask_topic and overlay_topic:
            _bag_topics(outputs, src)  # both given: a clash is refused before the bag is opened
    return outputs


def _bag_topics(outputs: Outputs, src: Any) -> None:
    """The --save bag's mask and overlay topics, the defaults derived from the source's topic: call it after
    prepare_source, which resolves a bag's only image topic when --topic was not given."""
    if outputs.bag is None:
        return
    from ..runtime.bag_writer import BagMaskWriter

    checked = BagMaskWriter(outputs.bag, src.topic or LIVE_TOPIC, mask_topic=outputs.mask_topic,
                            overlay_topic=outputs.overlay_topic)
    outputs.mask_topic, outputs.overlay_topic = checked.mask_topic, checked.overlay_topic  # the defaults resolved


def _prepare_output_folders(outputs: Outputs) -> None:
    from ..fileio import prepare_out_dir

    if outputs.png_dir is not None:
        outputs.png_dir, _ = prepare_out_dir(outputs.png_dir, option="--save")
    if outputs.bag is not None:
        prepare_out_dir(outputs.bag.parent, option="--save")
    if outputs.json is not None:
        prepare_out_dir(outputs.json.parent, option="--json")


@dataclass
class Outcome:
    stats: Any  # SourceStats
    recorder: Any  # LatencyRecorder
    latency: Any = None  # LatencySummary | None, once the loop ended
    wall_s: float = 0.0
    written: int = 0  # overlay PNGs
    bag_messages: int = 0  # masks (and as many overlays) written to the bag


def _run_loop(seg: Any, src: Any, outputs: Outputs, cv2: Any, alpha: float, max_frames: int | None) -> Outcome:
    import time

    from ..runtime.latency import LatencyRecorder
    from ..runtime.sources import SourceStats, frames

    outcome = Outcome(SourceStats(), LatencyRecorder(warmup_frames=1))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        writer = None
        if outputs.bag is not None:
            from ..runtime.bag_writer import BagMaskWriter

            writer = stack.enter_context(BagMaskWriter(outputs.bag, src.topic or LIVE_TOPIC, alpha=alpha,
                                                       mask_topic=outputs.mask_topic,
                                                       overlay_topic=outputs.overlay_topic))
        stream = stack.enter_context(contextlib.closing(frames(src, outcome.stats)))
        try:
            _segment(seg, stream, outcome, outputs, writer, cv2, alpha, max_frames)
        except KeyboardInterrupt:  # Ctrl-C ends a camera run: what was segmented is kept and summarised
            outcome.stats.ended_because = "stopped with Ctrl-C"
        outcome.bag_messages = writer.count if writer is not None else 0
    outcome.wall_s = time.monotonic() - started
    outcome.latency = outcome.recorder.summary(outcome.stats.nominal_fps)
    return outcome


def _segment(seg: Any, stream: Any, outcome: Outcome, outputs: Outputs, writer: Any, cv2: Any, alpha: float,
             max_frames: int | None) -> None:
    """The loop: segment each frame, then save / write / show it (after its mask-ready time)."""
    from ..images import IMAGE_EXTENSIONS, save_png
    from ..palette import class_palette
    from ..runtime.kernels import numpy_overlay
    from ..runtime.latency import timed_masks

    palette = class_palette(seg.num_classes, getattr(seg, "class_colors", None))  # the build's colours
    recorder, stats = outcome.recorder, outcome.stats
    for frame, mask in timed_masks(seg, stream, recorder, max_frames=max_frames):
        overlay = None
        if outputs.png_dir is not None or writer is not None or cv2 is not None:
            overlay = numpy_overlay(frame.rgb, mask, palette, alpha)
        if outputs.png_dir is not None and overlay is not None:
            stem = Path(frame.name).stem if Path(frame.name).suffix.lower() in IMAGE_EXTENSIONS else frame.name
            save_png(outputs.png_dir / f"{stem}.png", overlay)
            outcome.written += 1
        if writer is not None:  # the input's header stamp (a zero one stays zero) and its log time
            header = frame.header_stamp_ns if frame.header_stamp_ns is not None else frame.stamp_ns
            writer.write_frame(frame.rgb, mask, stamp_ns=int(header or 0), frame_id=frame.frame_id,
                               overlay=overlay, log_time_ns=frame.log_time_ns or frame.stamp_ns or None)
        if cv2 is not None and overlay is not None:
            cv2.imshow("edgeseg", overlay[:, :, ::-1])
            if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                stats.ended_because = "stopped by the user"
                break
        if len(recorder) % 50 == 0:
            p50, fps = recorder.recent()
            click.echo(f"{len(recorder)} frames; last 50: capture-to-mask p50 {p50:.1f} ms, "
                       f"{fps or 0.0:.1f} FPS", err=True)
    if max_frames is not None and len(recorder) >= max_frames and not stats.ended_because:
        stats.ended_because = f"--max-frames {max_frames}"


def _finish(artifacts: Path, seg: Any, src: Any, outputs: Outputs, outcome: Outcome) -> None:
    from ..errors import InputError

    stats, latency = outcome.stats, outcome.latency
    if latency is None:  # a user error like an empty folder's (exit 1), not a bad option
        raise InputError(f"no frames could be read from {src.text}", found=f"{stats.skipped} unreadable",
                         fix="check the source (corrupt or unreadable images, a bag topic without messages, a "
                             "camera that delivered nothing)")
    left_out = ("the first left out of the figures (one-time set-up)" if latency.warmup_frames
                else "the only one, in the figures: no warm-up frame to leave out" if stats.frames == 1
                else "all in the figures")
    rows = [("model file", f"{seg.model_file} ({seg.precision}; build verdict {seg.validation_status})"),
            ("backend", seg.name),
            ("source", f"{src.kind} {src.text}" + (f" topic {src.topic}" if src.topic else "")
             + (f" ({stats.opened_with})" if stats.opened_with else "")),
            ("frames", f"{stats.frames} ({stats.skipped} unreadable skipped; {left_out})"),
            ("ended because", stats.ended_because or "end of source"),
            *latency.rows(_loop_includes(outputs, src)),
            ("wall-clock FPS", f"{stats.frames / outcome.wall_s:.1f} (every frame over the whole run: opening the "
                               "source and the first frame included)")]
    if outputs.png_dir is not None:
        rows.append(("overlays", f"{outcome.written} PNGs in {outputs.png_dir}"))
    if outputs.bag is not None:
        writer_topics = [outputs.mask_topic, outputs.overlay_topic]
        rows.append(("bag", f"{outputs.bag}: {outcome.bag_messages} masks + overlays on {', '.join(writer_topics)}"))
    if outputs.json is not None:
        rows.append(("figures", str(_write_json(seg, src, outputs, outcome))))
    next_commands = [f"edgeseg bench --artifacts {quote(artifacts)} --source {quote(src.text)}"
                     + (f" --topic {quote(src.topic)}" if src.topic else "")]
    if outputs.bag is not None:
        info = "rosbag info" if outputs.bag.suffix.lower() == ".bag" else "ros2 bag info"
        next_commands.append(f"{info} {quote(outputs.bag)}   (or open it in Foxglove / RViz)")
    summary_table("run finished", rows, next_commands)


def _loop_includes(outputs: Outputs, src: Any) -> str:
    """What the loop does between two masks besides segmenting: the end-to-end FPS counts it."""
    parts = ["reading" + (" and decoding" if src.kind in ("bag", "folder", "image", "video") else "")]
    if outputs.png_dir is not None:
        parts.append("writing overlay PNGs")
    if outputs.bag is not None:
        parts.append("writing the bag")
    if outputs.show:
        parts.append("showing")
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


def _write_json(seg: Any, src: Any, outputs: Outputs, outcome: Outcome) -> Path:
    from datetime import datetime, timezone

    from ..fileio import atomic_write_json
    from ..machine import machine_info

    stats = outcome.stats
    data = {"command": "run", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model_file": seg.model_file, "precision": seg.precision, "backend": seg.name,
            "build_verdict": seg.validation_status,
            "source": {"text": src.text, "kind": src.kind, "topic": src.topic, "opened_with": stats.opened_with},
            "frames": stats.frames, "skipped": stats.skipped, "ended_because": stats.ended_because or "end of source",
            "wall_clock_fps": stats.frames / outcome.wall_s if outcome.wall_s > 0 else None,
            "fps_includes": _loop_includes(outputs, src),  # what latency.fps (end-to-end) counts besides the model
            "latency": outcome.latency.to_dict(),
            "outputs": {"overlays": str(outputs.png_dir) if outputs.png_dir else None,
                        "bag": str(outputs.bag) if outputs.bag else None,
                        "bag_topics": [outputs.mask_topic, outputs.overlay_topic] if outputs.bag else None,
                        "bag_messages_per_topic": outcome.bag_messages},
            "machine": machine_info()}
    assert outputs.json is not None
    return atomic_write_json(outputs.json, data)


def _gui_opencv() -> Any:
    """OpenCV with a GUI and a display, checked before any work (pip's headless wheel has no imshow)."""
    import os
    import sys

    from ..errors import DependencyError, require
    from ..runtime.camera_sources import opencv_build_value

    cv2 = require("cv2", extra="video", purpose="--show")
    gui = opencv_build_value(cv2.getBuildInformation(), "GUI")
    if gui.upper() in ("", "NONE"):
        raise DependencyError("--show needs OpenCV with a GUI; the installed one is headless",
                              found=f"cv2 {cv2.__version__}, GUI: {gui or 'none'}",
                              fix="pip uninstall -y opencv-python-headless && pip install opencv-python "
                                  "(on Jetson: JetPack's OpenCV), or use --save DIR instead of --show")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise DependencyError("--show needs a display, and none is set", found="DISPLAY and WAYLAND_DISPLAY unset",
                              fix="run on the robot's desktop (or ssh -X), or use --save DIR instead of --show")
    return cv2
