"""``edgeseg bench --source``: capture-to-mask latency of the validated runtime on a real source (layer 4).

The build folder's Segmenter (the file ``edgeseg run`` would run, trust checked the same way) segments
the source's frames; ``runtime.latency`` says what is measured. A live source is timed for
``LIVE_FRAMES`` frames unless ``max_frames`` says otherwise; a file or bag to its end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from ..errors import UsageError
from ..runtime.latency import LatencyRecorder, timed_masks
from ..runtime.segmenter import Segmenter
from ..runtime.sources import Source, SourceStats, frames
from .bench import SourceTiming

LIVE_FRAMES = 300


def frame_limit(source: Source, max_frames: int | None) -> int | None:
    """How many frames to time: ``max_frames``, else LIVE_FRAMES for a live source, else the whole source."""
    return max_frames if max_frames is not None else (LIVE_FRAMES if source.live else None)


def bench_source(artifacts: str | os.PathLike[str], source: Source, *, warmup: int = 10,
                 max_frames: int | None = None, threads: int | None = None, allow_unvalidated: bool = False,
                 on_frame: Callable[[int], None] | None = None) -> SourceTiming:
    """Time capture-to-mask over ``source`` (already prepared: ``sources.prepare_source``); bench.json's
    ``source_latency``. ``warmup`` untimed calls on the first frame, which is left out of the figures."""
    limit = frame_limit(source, max_frames)
    seg = Segmenter.from_artifacts(artifacts, output_size="frame", threads=threads,
                                   allow_unvalidated=allow_unvalidated)
    stats = SourceStats()
    recorder = LatencyRecorder(warmup_frames=1)
    try:
        with contextlib.closing(frames(source, stats)) as stream:
            count = 0
            for count, _ in enumerate(timed_masks(seg, stream, recorder, max_frames=limit, warmup_calls=warmup), 1):
                if on_frame is not None:
                    on_frame(count)
            if limit is not None and count >= limit:
                stats.ended_because = f"{limit} frames" + ("" if max_frames is not None else " (live default)")
    finally:
        seg.close()
    summary = recorder.summary(stats.nominal_fps)
    if summary is None:
        raise UsageError(f"no frames could be read from {source.text}", found=f"{stats.skipped} unreadable")
    return SourceTiming(text=source.text, kind=source.kind, topic=source.topic, opened_with=stats.opened_with,
                        backend=seg.name, model_file=seg.model_file, precision=seg.precision,
                        build_verdict=seg.validation_status, warning=seg.warning, warmup_calls=warmup,
                        ended_because=stats.ended_because or "end of source", latency=summary)
