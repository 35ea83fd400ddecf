"""``edgeseg run``: segment a video, a camera or an image folder with the runtime Segmenter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._common import POSITIVE, quote, summary_table


@click.command("run")
@click.option("--artifacts", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Build folder (engines/NAME) with manifest.json.")
@click.option("--source", required=True, help="Image folder, image file, video file, or camera index (0, 1...).")
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime", "torch"]), default="auto",
              show_default=True, help="torch runs the PyTorch reference and needs --weights.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Checkpoint the folder was built from (only for --backend torch).")
@click.option("--save", "save_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write overlay PNGs here.")
@click.option("--show", is_flag=True, help="Show overlays in a window (needs OpenCV with a GUI and a display).")
@click.option("--max-frames", type=POSITIVE, default=None, help="Stop after this many frames.")
@click.option("--threads", type=POSITIVE, default=None, help="CPU threads (onnxruntime backend).")
@click.option("--alpha", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True, help="Overlay opacity.")
@click.option("--allow-unvalidated", is_flag=True,
              help="Run a folder whose accuracy gates failed or were not run (a warning says why).")
def run_cmd(artifacts: Path, source: str, backend: str, weights: Path | None, save_dir: Path | None, show: bool,
            max_frames: int | None, threads: int | None, alpha: float, allow_unvalidated: bool) -> None:
    """Run the segmentation loop on frames and report FPS (zero copy on GPU backends).

    Only a folder whose build passed its accuracy gates runs, after the hash of the file it
    runs is checked against manifest.json (--allow-unvalidated overrides the gates, never the hashes).
    """
    import time

    from ..errors import UsageError
    from ..runtime.segmenter import Segmenter
    from ..runtime.sources import SourceStats, iter_frames

    if backend == "torch" and weights is None:
        raise UsageError("--backend torch runs the PyTorch model and needs its weights (build folders hold none)",
                         fix=f"edgeseg run --artifacts {quote(artifacts)} --backend torch --weights CHECKPOINT ..., "
                             "or drop --backend torch")
    if weights is not None and backend != "torch":
        raise UsageError("--weights is only used with --backend torch", fix="add --backend torch or drop --weights")
    cv2 = _gui_opencv() if show else None
    if save_dir is not None:
        from ..fileio import prepare_out_dir

        save_dir, _ = prepare_out_dir(save_dir, option="--save")
    seg = Segmenter.from_artifacts(artifacts, backend=backend, output_size="frame", threads=threads,
                                   weights=weights, allow_unvalidated=allow_unvalidated)
    if seg.warning:
        click.secho(seg.warning, fg="yellow", err=True)
    click.echo(f"running {seg.model_file} ({seg.precision}, {seg.name}; build verdict: {seg.validation_status})",
               err=True)
    stats = SourceStats()
    started = time.perf_counter()
    try:
        latencies, written = _segment(seg, iter_frames(source, stats), stats, save_dir, cv2, alpha, max_frames)
    finally:
        seg.close()
    wall = time.perf_counter() - started
    if not latencies:
        raise UsageError(f"no frames could be read from {source}", found=f"{stats.skipped} unreadable")
    ordered = sorted(latencies)
    rows = [("model file", f"{seg.model_file} ({seg.precision}; build verdict {seg.validation_status})"),
            ("backend", seg.name), ("frames", f"{len(latencies)} ({stats.skipped} unreadable skipped)"),
            ("ended because", stats.ended_because or "end of source"),
            ("model FPS", f"{len(latencies) / sum(latencies):.1f} (p50 {ordered[len(ordered) // 2] * 1e3:.1f} ms)"),
            ("end-to-end FPS", f"{len(latencies) / wall:.1f} (reading and saving included)")]
    if save_dir is not None:
        rows.append(("overlays", f"{written} PNGs in {save_dir}"))
    summary_table("run finished", rows, [f"edgeseg bench --artifacts {quote(artifacts)}"])


def _segment(seg: Any, frames: Any, stats: Any, save_dir: Path | None, cv2: Any, alpha: float,
             max_frames: int | None) -> tuple[list[float], int]:
    """The loop: segment each frame, save / show its overlay; (model latencies in s, overlays written)."""
    import time

    from ..images import save_png
    from ..runtime.kernels import default_palette, numpy_overlay

    palette = default_palette(seg.num_classes)
    latencies: list[float] = []
    written = 0
    for name, frame in frames:
        tick = time.perf_counter()
        mask = seg(frame)
        latencies.append(time.perf_counter() - tick)
        if save_dir is not None or cv2 is not None:
            overlay = numpy_overlay(frame, mask, palette, alpha)
            if save_dir is not None:
                save_png(save_dir / f"{Path(name).stem}.png", overlay)
                written += 1
            if cv2 is not None:
                cv2.imshow("edgeseg", overlay[:, :, ::-1])
                if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                    stats.ended_because = "stopped by the user"
                    break
        if len(latencies) % 50 == 0:
            click.echo(f"{len(latencies)} frames, {len(latencies) / sum(latencies):.1f} FPS (model)", err=True)
        if max_frames is not None and len(latencies) >= max_frames:
            stats.ended_because = f"--max-frames {max_frames}"
            break
    return latencies, written


def _gui_opencv() -> Any:
    """OpenCV with a GUI and a display, checked before any work (pip's headless wheel has no imshow)."""
    import os
    import sys

    from ..errors import DependencyError, require

    cv2 = require("cv2", extra="video", purpose="--show")
    gui = next((line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines()
                if line.strip().startswith("GUI:")), "")
    if gui.upper() in ("", "NONE"):
        raise DependencyError("--show needs OpenCV with a GUI; the installed one is headless",
                              found=f"cv2 {cv2.__version__}, GUI: {gui or 'none'}",
                              fix="pip uninstall -y opencv-python-headless && pip install opencv-python "
                                  "(on Jetson: JetPack's OpenCV), or use --save DIR instead of --show")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise DependencyError("--show needs a display, and none is set", found="DISPLAY and WAYLAND_DISPLAY unset",
                              fix="run on the robot's desktop (or ssh -X), or use --save DIR instead of --show")
    return cv2
