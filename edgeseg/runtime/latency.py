"""Capture-to-mask latency of a frame loop (layer 1; numpy only).

For each frame: from its capture time (``Frame.captured``) to the mask being ready (``time.monotonic()``
right after ``seg(frame)`` returned), both on ``time.monotonic()``. What "capture" means depends on the
source (``Frame.clock``):

- ``grab`` (cameras, streams): right after OpenCV's ``read()`` returned the frame, in a grab thread that
  keeps only the newest frame. The latency includes the wait for the model to finish the previous frame;
  the exposure, driver and transport before ``read()`` returned are not in it (they add about one frame
  interval on a V4L2 or CSI camera). ``dropped`` counts frames OpenCV delivered that the loop never took.
- ``read`` (bags, videos, folders: a replay, with no live clock): from asking the source for the frame
  (reading and decoding it) to the mask being ready. Nothing is dropped; where the frames have stamps
  (bag header stamps, video positions), ``dropped_if_live`` says how many a live keep-the-newest loop
  would have dropped at the recorded frame rate with the measured processing times.

Jitter is p99 - p50 of the capture-to-mask latency (the tail above the typical frame). FPS is masks
per second between the first and the last mask in the figures. The first ``warmup_frames`` frames
(one-time set-up: first allocation, CUDA graph capture) are left out of the figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .sources import Frame

CLOCKS = {
    "grab": "capture = time.monotonic() right after OpenCV's read() returned the frame (grab thread keeping "
            "the newest frame); exposure, driver and transport before that are not included",
    "read": "replay (no live clock): from asking the source for the frame (read + decode) to the mask being "
            "ready; header stamps are kept for the outputs, not used for latency",
}


@dataclass
class LatencySummary:
    frames: int  # frames in the figures
    warmup_frames: int  # frames at the start left out
    clock: str  # grab | read (see CLOCKS)
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    max_ms: float
    jitter_ms: float  # p99 - p50
    segment_p50_ms: float  # the seg(frame) call alone
    fps: float | None  # masks per second, first to last mask in the figures
    delivered: int  # frames the source delivered over the figures' span (dropped ones included)
    dropped: int  # live: delivered but never segmented; replay: 0
    dropped_if_live: int | None = None  # replay with stamps: what a live keep-newest loop would drop
    source_fps: float | None = None  # live: delivery rate; replay: recorded rate (from stamps)
    nominal_fps: float | None = None  # what the camera / video file says
    meaning: str = ""
    jitter: str = "p99 - p50 of capture-to-mask latency"
    samples_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self, loop_includes: str = "reading the frames") -> list[tuple[str, str]]:
        """Summary-table rows. ``loop_includes`` says what else the loop did between two masks (reading, writing
        PNGs or a bag, showing): the end-to-end FPS counts it, the model-alone figure does not."""
        fps = "-" if self.fps is None else f"{self.fps:.1f}"
        model_fps = f"{1000.0 / self.segment_p50_ms:.1f}" if self.segment_p50_ms > 0 else "-"
        rows = [("capture-to-mask", f"p50 {self.p50_ms:.1f} ms, p90 {self.p90_ms:.1f}, p99 {self.p99_ms:.1f}, "
                                    f"jitter {self.jitter_ms:.1f} ms (p99-p50), {self.frames} frames"),
                ("FPS end-to-end", f"{fps} masks/s ({loop_includes} included)"),
                ("FPS mask only", f"{model_fps} masks/s (the model alone: p50 {self.segment_p50_ms:.1f} ms per mask)")]
        if self.clock == "grab":
            rate = "" if self.source_fps is None else f" at {self.source_fps:.1f} FPS"
            nominal = "" if self.nominal_fps is None else f" (camera says {self.nominal_fps:.1f})"
            rows.append(("dropped", f"{self.dropped} of {self.delivered} frames delivered{rate}{nominal}"))
        elif self.dropped_if_live is not None:
            rate = "" if self.source_fps is None else f" at the recorded {self.source_fps:.1f} FPS"
            rows.append(("dropped", f"0 (replay); a live loop{rate} would drop {self.dropped_if_live} "
                                    f"of {self.delivered}"))
        return rows


def simulate_keep_latest(arrivals_s: Sequence[float], service_s: Sequence[float]) -> int:
    """Frames a single worker that always takes the newest arrived frame would drop: frames arriving at
    ``arrivals_s`` (non-decreasing), frame i taking ``service_s[i]`` to process."""
    dropped, free, i, n = 0, float("-inf"), 0, len(arrivals_s)
    while i < n:
        start = max(free, arrivals_s[i])
        newest = i
        while newest + 1 < n and arrivals_s[newest + 1] <= start:
            newest += 1
        dropped += newest - i
        free = start + service_s[newest]
        i = newest + 1
    return dropped


class LatencyRecorder:
    """Collects (captured, segment start, mask ready) per frame; ``summary()`` turns them into figures."""

    def __init__(self, warmup_frames: int = 1) -> None:
        self.warmup_frames = warmup_frames
        self._rows: list[tuple[float, float, float, int, int | None]] = []
        self.clock = ""

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, frame: Frame, start: float, ready: float) -> None:
        self.clock = self.clock or frame.clock
        self._rows.append((frame.captured, start, ready, frame.seq, frame.stamp_ns))

    def recent(self, count: int = 50) -> tuple[float, float | None]:
        """(p50 capture-to-mask ms, masks/s) over the last ``count`` frames: cheap, for progress lines."""
        rows = self._rows[-count:]
        latency = sorted((r[2] - r[0]) * 1e3 for r in rows)
        span = rows[-1][2] - rows[0][2] if rows else 0.0
        return (latency[len(latency) // 2] if latency else 0.0), ((len(rows) - 1) / span if span > 0 else None)

    def summary(self, nominal_fps: float | None = None) -> LatencySummary | None:
        """The figures, without the first ``warmup_frames`` (all frames when there are no more than that)."""
        if not self._rows:
            return None
        skip = self.warmup_frames if len(self._rows) > self.warmup_frames else 0
        rows = self._rows[skip:]
        captured, start, ready = (np.array([r[k] for r in rows], np.float64) for k in range(3))
        latency = (ready - captured) * 1e3
        p50, p90, p99 = (float(v) for v in np.percentile(latency, [50, 90, 99]))
        span = float(ready[-1] - ready[0])
        seqs = [r[3] for r in rows]
        delivered = seqs[-1] - seqs[0] + 1
        summary = LatencySummary(
            len(rows), skip, self.clock, p50, p90, p99, float(latency.mean()), float(latency.std()),
            float(latency.max()), p99 - p50, float(np.percentile((ready - start) * 1e3, 50)),
            (len(rows) - 1) / span if len(rows) > 1 and span > 0 else None, delivered,
            delivered - len(rows) if self.clock == "grab" else 0, nominal_fps=nominal_fps,
            meaning=CLOCKS.get(self.clock, ""), samples_ms=[round(float(v), 4) for v in latency])
        if self.clock == "grab":
            duration = float(captured[-1] - captured[0])
            summary.source_fps = (delivered - 1) / duration if delivered > 1 and duration > 0 else None
        else:
            self._replay_drops(summary, [r[4] for r in rows], ready - captured)
        return summary

    @staticmethod
    def _replay_drops(summary: LatencySummary, stamps: list[int | None], service_s: np.ndarray) -> None:
        known = [s for s in stamps if s is not None]
        if len(known) < 2 or len(known) < len(stamps):
            return
        arrivals = [(s - known[0]) / 1e9 for s in known]
        if any(b < a for a, b in zip(arrivals, arrivals[1:])) or arrivals[-1] <= 0:
            return  # out-of-order stamps: no recorded rate to replay against
        summary.source_fps = (len(arrivals) - 1) / arrivals[-1]
        summary.dropped_if_live = simulate_keep_latest(arrivals, [float(v) for v in service_s])


def timed_masks(seg: Any, source_frames: Iterable[Frame], recorder: LatencyRecorder, *,
                max_frames: int | None = None, warmup_calls: int = 0) -> Iterator[tuple[Frame, np.ndarray]]:
    """``(frame, mask)`` for each frame, each timed into ``recorder`` (mask ready = right after ``seg``
    returned, before the caller saves or shows anything). ``warmup_calls`` extra calls on the first frame
    come first, untimed. Stops after ``max_frames``."""
    for count, frame in enumerate(source_frames, 1):
        if count == 1:
            for _ in range(warmup_calls):
                seg(frame.rgb)
        start = time.monotonic()
        mask = seg(frame.rgb)
        recorder.add(frame, start, time.monotonic())
        yield frame, mask
        if max_frames is not None and count >= max_frames:
            return
