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

from ..errors import require
from ..fileio import atomic_write_bytes
from ..images import to_uint8
from ..palette import DISAGREEMENT_COLOUR, class_palette, hex_colour
from ..spec import resize_bilinear


def colourize(mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """uint8 HxW class indices -> HxWx3 colours (indices beyond the palette are black)."""
    table: np.ndarray = np.zeros((256, 3), dtype=np.uint8)  # 255 (ignore) and unknown indices stay black
    count = min(len(colours), 255)
    table[:count] = colours[:count]
    return table[np.asarray(mask, dtype=np.uint8)]


def disagreement_overlay(frame: np.ndarray, reference: np.ndarray, candidate: np.ndarray,
                         num_classes: int, *, dim: float = 0.35, gap: int = 4,
                         colours: np.ndarray | None = None) -> np.ndarray:
    """Three panels side by side: the dimmed frame with disagreeing pixels in DISAGREEMENT_COLOUR,
    the reference mask and the candidate mask (both coloured with ``colours``, default the class palette)."""
    height, width = reference.shape
    if frame.shape[:2] != (height, width):
        frame = to_uint8(resize_bilinear(frame, height, width))
    differ = reference != candidate
    left = (frame.astype(np.float32) * dim).astype(np.uint8)
    left[differ] = DISAGREEMENT_COLOUR
    colours = class_palette(num_classes) if colours is None else colours
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


def legend_plot(path: str | os.PathLike[str], class_names: Sequence[str], colours: np.ndarray, *,
                title: str = "Class colours") -> Path:
    """One swatch per class with its name and hex colour, plus the disagreement colour."""
    if len(class_names) != len(colours):
        raise ValueError(f"{len(class_names)} class names but {len(colours)} colours")
    plt = _pyplot()
    entries = [(name, tuple(int(c) for c in colour)) for name, colour in zip(class_names, colours)]
    entries.append(("disagreement (validation overlays)", DISAGREEMENT_COLOUR))
    columns = 1 if len(entries) <= 20 else 2 if len(entries) <= 60 else 4
    rows = -(-len(entries) // columns)
    fig, ax = plt.subplots(figsize=(3.6 * columns, 0.6 + 0.28 * rows))
    for index, (name, colour) in enumerate(entries):
        x, y = index // rows, rows - 1 - index % rows
        ax.add_patch(plt.Rectangle((x, y + 0.1), 0.18, 0.8, facecolor=np.asarray(colour) / 255.0,
                                   edgecolor="black", linewidth=0.5))
        ax.text(x + 0.23, y + 0.5, f"{index if index < len(class_names) else '-'}  {name}  {hex_colour(colour)}",
                va="center", fontsize=8)
    ax.set_xlim(0, columns)
    ax.set_ylim(0, rows)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def sensitivity_plot(path: str | os.PathLike[str], rows: Sequence[tuple[str, float, float]], *,
                     title: str = "INT8 sensitivity: points bought back by keeping one layer in float") -> Path:
    """Horizontal bars per layer (most harmful on top): agreement and mIoU gains in points."""
    plt = _pyplot()
    names = [name if len(name) <= 48 else "..." + name[-45:] for name, _, _ in rows]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.3 * max(1, len(rows))))
    positions = np.arange(len(rows))[::-1]
    ax.barh(positions + 0.2, [r[1] for r in rows], height=0.4, label="agreement")
    ax.barh(positions - 0.2, [r[2] for r in rows], height=0.4, label="mIoU vs float")
    ax.set_yticks(positions, labels=names, fontsize=7)
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_xlabel("gain (points)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
