"""The build report: report.md + report.json + PNG plots in the build folder (layer 4).

Everything a reader needs to trust an engine: what model and artifacts (with hashes),
which precision and calibration, how close it is to PyTorch (per class), how fast it
is and on which machine. Apart from the timestamp the output is a pure function of its
inputs. Plots need matplotlib (``edgeseg[report]``); without it the report is written
without them and says so.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DependencyError
from ..fileio import atomic_write_json, atomic_write_text, sha256_file
from ..machine import machine_info
from ..manifest import Manifest
from ..palette import DISAGREEMENT_COLOUR, DISAGREEMENT_NAME, class_palette, hex_colour
from .latency_notes import latency_notes, noise_reasons
from .markdown import render_markdown
from .plots import iou_bar_chart, latency_plot, legend_plot

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
IOU_PLOT = "report_iou.png"
LATENCY_PLOT = "report_latency.png"
LEGEND_PLOT = "report_legend.png"
NO_PLOTS = "matplotlib is not installed: the report has no plots (pip install 'edgeseg[report]')"


def _as_dict(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if hasattr(value, "to_dict"):
        return dict(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return dict(value)
    return {"value": str(value)}


def _artifact_rows(build_dir: Path, manifest: Manifest) -> list[dict[str, Any]]:
    rows = []
    for role, name in sorted(manifest.artifacts.items()):
        path = build_dir / name
        recorded = manifest.hashes.get(role)
        actual = sha256_file(path) if path.is_file() else None
        rows.append({"role": role, "file": name, "exists": actual is not None,
                     "size_bytes": path.stat().st_size if actual else None, "sha256": actual,
                     "matches_manifest": None if recorded is None or actual is None else recorded == actual})
    return rows


def _latency_summary(bench: dict[str, Any] | None) -> dict[str, Any] | None:
    if not bench:
        return None
    keep = ("name", "backend", "precision", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_fps", "note",
            "flush_denormal")
    return {"runners": [{k: r.get(k) for k in keep} for r in bench.get("runners", [])],
            "ratios": bench.get("ratios", {}), "skipped": bench.get("skipped", []),
            "iterations": bench.get("iterations"), "warmup": bench.get("warmup"), "threads": bench.get("threads"),
            "order": bench.get("order"), "input_shape": bench.get("input_shape"),
            "load_average": bench.get("load_average") or None,
            # recomputed: a bench.json written before these notes existed gets them too
            "noisy": bool(noise_reasons(bench)), "notes": latency_notes(bench),
            "source_latency": {k: v for k, v in (bench.get("source_latency") or {}).items() if k != "samples_ms"}
            or None}


def _legend(names: Sequence[str], colours: np.ndarray) -> list[dict[str, Any]]:
    """index, class name and hex colour of every class, as overlays and ``edgeseg run`` draw them."""
    if len(names) != len(colours):
        raise ValueError(f"{len(names)} class names but {len(colours)} colours")
    return [{"index": i, "class": name, "colour": hex_colour(colour)}
            for i, (name, colour) in enumerate(zip(names, colours))]


def _accuracy_summary(validation: dict[str, Any] | None) -> dict[str, Any] | None:
    if not validation:
        return None
    keep = ("candidate", "reference", "reference_kind", "parity", "ground_truth", "gates", "per_class", "notes")
    return {k: validation.get(k) for k in keep}


def _draw(build_dir: Path, accuracy: dict[str, Any] | None, bench: dict[str, Any] | None,
          classes: tuple[list[str], np.ndarray], notes: list[str]) -> dict[str, str]:
    """PNG plots -> {kind: file name}; none (and a note) without matplotlib."""
    try:
        plots: dict[str, str] = {}
        names, colours = classes
        if names:
            legend_plot(build_dir / LEGEND_PLOT, names, colours)
            plots["legend"] = LEGEND_PLOT
        if accuracy and accuracy.get("per_class"):
            rows = accuracy["per_class"]
            against = rows[0].get("against", "reference")
            series = {"candidate vs " + ("ground truth" if against == "ground_truth" else "PyTorch"):
                      [r.get("iou_candidate") for r in rows]}
            if any(r.get("iou_reference") is not None for r in rows):
                series = {"PyTorch vs ground truth": [r.get("iou_reference") for r in rows], **series}
            iou_bar_chart(build_dir / IOU_PLOT, [r["class"] for r in rows], series)
            plots["iou"] = IOU_PLOT
        if bench and bench.get("runners"):
            latency_plot(build_dir / LATENCY_PLOT, {r["name"]: r["samples_ms"] for r in bench["runners"]})
            plots["latency"] = LATENCY_PLOT
        return plots
    except DependencyError:
        notes.append(NO_PLOTS)
        return {}


def write_report(build_dir: str | os.PathLike[str], *, manifest: Manifest | dict[str, Any],
                 validation: Any = None, bench: Any = None, calibration: Any = None,
                 export: Any = None, class_colours: Sequence[Sequence[int]] | None = None) -> list[Path]:
    """Write report.md, report.json and the plots into ``build_dir``; return the paths written.

    ``class_colours``: the training data's colours (the manifest's ``class_colors``, from classes.json or a
    public dataset's table), when it had them (they win over the palette).
    """
    root = Path(build_dir)
    if isinstance(manifest, dict):
        manifest = Manifest.from_dict(manifest)
    validation_d, bench_d = _as_dict(validation), _as_dict(bench)
    if bench_d is not None and "ratios" not in bench_d and hasattr(bench, "ratios"):
        bench_d["ratios"] = bench.ratios()
    accuracy = _accuracy_summary(validation_d)
    notes: list[str] = []
    names = list(manifest.classes) or [f"class_{i}" for i in range(manifest.num_classes)]
    colours = class_palette(manifest.num_classes, class_colours)
    legend = _legend(names, colours)
    plots = _draw(root, accuracy, bench_d, (names, colours), notes)
    # overlays inside the build folder are linked (relative); others are only named
    overlays = [_relative(p, root) for p in (validation_d or {}).get("files", []) if str(p).endswith(".png")]
    machine = (bench_d or {}).get("machine")
    if not machine:
        machine = machine_info()
    report = {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "edgeseg_version": manifest.edgeseg_version,
        "model": manifest.model,
        "num_classes": manifest.num_classes,
        "classes": list(manifest.classes),
        "input_spec": manifest.input_spec.to_dict(),
        "precision": manifest.precision,
        "selection": (manifest.build or {}).get("selection"),  # --precision best: what was kept and why
        "backend": manifest.backend,
        "tensorrt_version": manifest.tensorrt_version,
        "gpu": {"name": manifest.gpu_name, "compute_capability": manifest.compute_capability},
        "artifacts": _artifact_rows(root, manifest),
        "calibration": _as_dict(calibration) or (manifest.calibration.to_dict() if manifest.calibration else None),
        "export": _as_dict(export),
        "accuracy": accuracy or (manifest.accuracy.to_dict() if manifest.accuracy else None),
        "validation": manifest.validation.to_dict() if manifest.validation else {},
        "latency": _latency_summary(bench_d) or (manifest.latency.to_dict() if manifest.latency else None),
        "machine": machine,
        "overlays": [p for p in overlays if not Path(p).is_absolute()],
        "overlays_elsewhere": [p for p in overlays if Path(p).is_absolute()],
        "plots": plots,
        "legend": legend,
        "disagreement_colour": {"name": DISAGREEMENT_NAME, "colour": hex_colour(DISAGREEMENT_COLOUR)},
        "notes": notes,
    }
    written = [root / name for name in plots.values()]
    written.append(atomic_write_json(root / REPORT_JSON, report))
    written.append(atomic_write_text(root / REPORT_MD, render_markdown(report)))
    return written


def _relative(path: str | os.PathLike[str], root: Path) -> str:
    target = Path(path)
    try:
        return target.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(target)  # outside the build folder: keep it as given
