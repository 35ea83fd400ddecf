"""Pictures for validation, benchmarks and reports (layer 4).

Disagreement overlays are plain numpy + ``edgeseg.images.save_png`` (no matplotlib).
Charts (per-class IoU, latency) use matplotlib with the Agg backend, imported only
inside the functions that draw them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import require
from .spec import resize_bilinear

# Cityscapes colours for the first 19 classes: the usual look of a street-scene mask.
_CITYSCAPES = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
DISAGREEMENT_COLOUR = (255, 0, 255)


def palette(num_classes: int) -> np.ndarray:
    """``num_classes x 3`` uint8 colours: Cityscapes first, then bit-spread distinct colours."""
    colours = [tuple(c) for c in _CITYSCAPES[:num_classes]]
    index = len(colours)
    while len(colours) < num_classes:
        # spread the bits of the class index over the high bits of R, G and B
        r = g = b = 0
        value = index + 1
        for shift in range(8):
            r |= ((value >> 0) & 1) << (7 - shift)
            g |= ((value >> 1) & 1) << (7 - shift)
            b |= ((value >> 2) & 1) << (7 - shift)
            value >>= 3
        colours.append((r, g, b))
        index += 1
    return np.asarray(colours, dtype=np.uint8).reshape(-1, 3)


def colourize(mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """uint8 HxW class indices -> HxWx3 colours (indices beyond the palette are black)."""
    table: np.ndarray = np.zeros((256, 3), dtype=np.uint8)  # 255 (ignore) and unknown indices stay black
    count = min(len(colours), 255)
    table[:count] = colours[:count]
    return table[np.asarray(mask, dtype=np.uint8)]


def disagreement_overlay(frame: np.ndarray, reference: np.ndarray, candidate: np.ndarray,
                         num_classes: int, *, dim: float = 0.35, gap: int = 4) -> np.ndarray:
    """Three panels side by side: the dimmed frame with disagreeing pixels highlighted,
    the reference mask and the candidate mask (both coloured with the same palette)."""
    height, width = reference.shape
    if frame.shape[:2] != (height, width):
        frame = np.clip(np.round(resize_bilinear(frame, height, width)), 0, 255).astype(np.uint8)
    differ = reference != candidate
    left = (frame.astype(np.float32) * dim).astype(np.uint8)
    left[differ] = DISAGREEMENT_COLOUR
    colours = palette(num_classes)
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    return np.concatenate([left, spacer, colourize(reference, colours), spacer, colourize(candidate, colours)],
                          axis=1)


def _pyplot():  # -> matplotlib.pyplot with the file-only Agg backend
    matplotlib = require("matplotlib", extra="report", purpose="drawing plots")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike[str]) -> Path:  # type: ignore[no-untyped-def]
    import io

    from .io import atomic_write_bytes

    buffer = io.BytesIO()
    # no "Software" stamp: the same numbers give the same bytes
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    _pyplot().close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def latency_plot(path: str | os.PathLike[str], samples_ms: Mapping[str, Sequence[float]],
                 *, title: str = "Latency per backend") -> Path:
    """Horizontal box plot (with the raw points) of per-iteration latencies in ms."""
    plt = _pyplot()
    names = list(samples_ms)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * max(1, len(names))))
    data = [np.asarray(samples_ms[n], dtype=np.float64) for n in names]
    try:
        ax.boxplot(data, orientation="horizontal", showfliers=False)  # matplotlib >= 3.10
    except TypeError:
        ax.boxplot(data, vert=False, showfliers=False)
    ax.set_yticks(range(1, len(names) + 1), labels=names)
    for row, values in enumerate(data, start=1):
        jitter = np.linspace(-0.15, 0.15, num=len(values)) if len(values) > 1 else np.zeros(len(values))
        ax.plot(values, row + jitter, ".", alpha=0.4, markersize=3)
    ax.set_xlabel("latency per frame (ms)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def iou_bar_chart(path: str | os.PathLike[str], class_names: Sequence[str],
                  series: Mapping[str, Sequence[float | None]], *, title: str = "Per-class IoU") -> Path:
    """Grouped bars of per-class IoU (0..1) for each series; missing values (None/NaN) are left out."""
    plt = _pyplot()
    count = len(class_names)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * count * max(1, len(series)) + 2), 4))
    width = 0.8 / max(1, len(series))
    positions = np.arange(count)
    for offset, (label, values) in enumerate(series.items()):
        heights = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        ax.bar(positions + (offset - (len(series) - 1) / 2) * width, np.nan_to_num(heights, nan=0.0),
               width=width, label=label)
    ax.set_xticks(positions, labels=list(class_names), rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
