"""``edgeseg run``: segment a video, a camera or an image folder with the runtime Segmenter."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import summary_table


@click.command("run")
@click.option("--artifacts", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Build folder (engines/NAME) with manifest.json.")
@click.option("--source", required=True, help="Image folder, image file, video file, or camera index (0, 1...).")
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime", "torch"]), default="auto",
              show_default=True)
@click.option("--save", "save_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write overlay PNGs here.")
@click.option("--show", is_flag=True, help="Show overlays in a window (needs OpenCV and a display).")
@click.option("--max-frames", type=int, default=None, help="Stop after this many frames.")
@click.option("--threads", type=int, default=None, help="CPU threads (onnxruntime backend).")
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Overlay opacity.")
def run_cmd(artifacts: Path, source: str, backend: str, save_dir: Path | None, show: bool, max_frames: int | None,
            threads: int | None, alpha: float) -> None:
    """Run the segmentation loop on frames and report FPS (zero copy on GPU backends)."""
    import time

    from ..errors import UsageError, require
    from ..images import save_png
    from ..runtime.kernels import default_palette, numpy_overlay
    from ..runtime.segmenter import Segmenter
    from ..sources import SourceStats, iter_frames

    if max_frames is not None and max_frames < 1:
        raise UsageError("--max-frames must be at least 1", found=str(max_frames))
    if not 0.0 <= alpha <= 1.0:
        raise UsageError("--alpha must be from 0 to 1", found=str(alpha))
    cv2 = require("cv2", extra="video", purpose="--show") if show else None
    seg = Segmenter.from_artifacts(artifacts, backend=backend, output_size="frame", threads=threads)
    palette = default_palette(_num_classes(artifacts))
    stats = SourceStats()
    latencies: list[float] = []
    written = 0
    started = time.perf_counter()
    try:
        for name, frame in iter_frames(source, stats):
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
    finally:
        seg.close()
    wall = time.perf_counter() - started
    if not latencies:
        raise UsageError(f"no frames could be read from {source}", found=f"{stats.skipped} unreadable")
    ordered = sorted(latencies)
    rows = [("backend", seg.name), ("frames", f"{len(latencies)} ({stats.skipped} unreadable skipped)"),
            ("ended because", stats.ended_because or "end of source"),
            ("model FPS", f"{len(latencies) / sum(latencies):.1f} (p50 {ordered[len(ordered) // 2] * 1e3:.1f} ms)"),
            ("end-to-end FPS", f"{len(latencies) / wall:.1f} (reading and saving included)")]
    if save_dir is not None:
        rows.append(("overlays", f"{written} PNGs in {save_dir}"))
    summary_table("run finished", rows, [f"edgeseg bench --artifacts {artifacts}"])


def _num_classes(artifacts: Path) -> int:
    from ..io import read_json

    return int(read_json(artifacts / "manifest.json", what="manifest")["num_classes"])
