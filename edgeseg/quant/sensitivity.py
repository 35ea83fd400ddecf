"""Which quantized layers cost accuracy: each one kept in float alone, ranked (layer 2).

``measure_sensitivity`` builds model.int8.onnx (TensorRT's Q/DQ layout, the file that goes to
the Jetson) once with every layer quantized and once per layer with only that layer kept in
float (``keep_fp_layers``: no Q/DQ on its inputs or weights), runs each in onnxruntime on a
few calibration frames and compares its argmax with the float model's: agreement, and mIoU
taking the float model's labels as the truth. The gain of a layer is what keeping it in float
buys back. The ranking drives ``--fallback auto`` (fallback.py); it is measured on
calibration frames, never on the held-out frames the gates are checked on.
"""

from __future__ import annotations

import os
import tempfile
import typing
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DependencyError, require
from ..fileio import atomic_write_json, atomic_write_text
from ..metrics import confusion_matrix, mean_iou
from ..runtime.ort_backend import OnnxRuntimeBackend
from .qdq_trt import quantize_for_tensorrt, quantized_layers
from .ranges import Ranges

SENSITIVITY_JSON, SENSITIVITY_MD, SENSITIVITY_PNG = "sensitivity.json", "sensitivity.md", "sensitivity.png"
PLOTTED_LAYERS = 25
SENSITIVITY_FRAMES = 16  # calibration frames per candidate: ~0.7 s per layer for the demo model


@dataclass(frozen=True)
class Score:
    agreement: float  # argmax agreement with the float model, 0..1
    miou: float  # mIoU of the candidate's argmax against the float model's, 0..1


@dataclass(frozen=True)
class LayerEffect:
    layer: str
    op_type: str
    score: Score  # with only this layer in float

    def gain(self, baseline: Score) -> tuple[float, float]:
        """(agreement, mIoU) bought back by keeping this layer in float, in points."""
        return ((self.score.agreement - baseline.agreement) * 100, (self.score.miou - baseline.miou) * 100)


@dataclass
class Sensitivity:
    frames: int
    baseline: Score  # every layer quantized (plus ``kept``)
    layers: list[LayerEffect]  # most harmful first
    kept: list[str] = field(default_factory=list)  # layers in float in every candidate, baseline included

    def ranked(self) -> list[str]:
        return [effect.layer for effect in self.layers]

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "baseline": asdict(self.baseline), "kept": self.kept,
                "measured_on": "calibration frames, against the float ONNX model",
                "layers": [{"layer": e.layer, "op_type": e.op_type, **asdict(e.score),
                            "agreement_gain_points": round(e.gain(self.baseline)[0], 4),
                            "miou_gain_points": round(e.gain(self.baseline)[1], 4)} for e in self.layers]}


def score_predictions(labels: Sequence[np.ndarray], predictions: Sequence[np.ndarray], num_classes: int) -> Score:
    confusion = np.zeros((num_classes, num_classes), np.int64)
    same = total = 0
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} label maps but {len(predictions)} predictions")
    for truth, pred in zip(labels, predictions):
        confusion += confusion_matrix(pred, truth, num_classes)
        same += int(np.count_nonzero(pred == truth))
        total += truth.size
    return Score(same / max(total, 1), mean_iou(confusion))


class _Runner:
    """Runs candidate models (ONNX protos) on fixed inputs; the float model's labels are the truth."""

    def __init__(self, float_path: Path, inputs: Sequence[np.ndarray], threads: int | None, workdir: Path) -> None:
        self.inputs, self.threads, self.workdir = list(inputs), threads, workdir
        with OnnxRuntimeBackend(float_path, threads=threads) as backend:
            logits = [backend.infer(x).copy() for x in self.inputs]
        self.num_classes = int(logits[0].shape[1])
        self.labels = [value.argmax(axis=1) for value in logits]

    def score(self, model: Any) -> Score:
        path = self.workdir / "candidate.onnx"
        path.write_bytes(model.SerializeToString())
        with OnnxRuntimeBackend(path, threads=self.threads) as backend:
            predictions = [backend.infer(x).argmax(axis=1) for x in self.inputs]
        return score_predictions(self.labels, predictions, self.num_classes)


def measure_sensitivity(
    onnx_path: str | os.PathLike[str],
    ranges: Ranges,
    inputs: Sequence[np.ndarray],
    *,
    keep_fp_layers: Sequence[str] = (),
    concat_scales: str = "separate",
    threads: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Sensitivity:
    """Rank the layers of model.int8.onnx by what keeping each alone in float buys back.

    ``inputs``: preprocessed frames (1x3xHxW). ``on_progress(done, total)`` counts candidates.
    """
    if not inputs:
        raise ConfigError("sensitivity needs at least one frame", fix="pass more calibration images")
    onnx = require("onnx", purpose="sensitivity analysis")
    model = onnx.load(str(onnx_path))
    kinds = {node.name: node.op_type for node in model.graph.node}
    layers = quantized_layers(model, keep_fp_layers)
    total = len(layers) + 1
    with tempfile.TemporaryDirectory(prefix="edgeseg-sensitivity-") as tmp:
        runner = _Runner(Path(onnx_path), inputs, threads, Path(tmp))

        def candidate(kept: Sequence[str]) -> Score:
            return runner.score(quantize_for_tensorrt(model, ranges, keep_fp_layers=[*keep_fp_layers, *kept],
                                                      concat_scales=concat_scales))

        if on_progress is not None:
            on_progress(0, total)
        baseline = candidate([])
        effects = []
        for done, layer in enumerate(layers, start=2):
            effects.append(LayerEffect(layer, kinds[layer], candidate([layer])))
            if on_progress is not None:
                on_progress(done, total)
    effects.sort(key=lambda e: (-e.score.agreement, -e.score.miou, e.layer))
    return Sensitivity(len(inputs), baseline, effects, sorted(keep_fp_layers))


# (path, [(layer, agreement gain, mIoU gain)]) -> the PNG written: report.plots.sensitivity_plot, handed in by
# the layers above (quant/ sits below report/); it raises DependencyError without matplotlib
SensitivityPlot = typing.Callable[[Path, typing.Sequence[typing.Tuple[str, float, float]]], Path]


def write_sensitivity(result: Sensitivity, out_dir: str | os.PathLike[str], *,
                      plot: SensitivityPlot | None = None) -> list[Path]:
    """sensitivity.json, sensitivity.md (ranked table) and, with ``plot`` and matplotlib, sensitivity.png."""
    out = Path(out_dir)
    written = [atomic_write_json(out / SENSITIVITY_JSON, result.to_dict()),
               atomic_write_text(out / SENSITIVITY_MD, sensitivity_markdown(result))]
    if plot is not None:
        try:
            written.append(plot(out / SENSITIVITY_PNG, [(e.layer, *e.gain(result.baseline))
                                                        for e in result.layers[:PLOTTED_LAYERS]]))
        except DependencyError:  # no matplotlib: the numbers are written anyway
            pass
    return written


def sensitivity_markdown(result: Sensitivity) -> str:
    base = result.baseline
    lines = [
        "# INT8 sensitivity per layer",
        "",
        f"model.int8.onnx (TensorRT Q/DQ) run by onnxruntime on {result.frames} calibration frames, compared with "
        f"the float model. Every layer quantized: agreement {base.agreement * 100:.2f} %, mIoU vs float "
        f"{base.miou * 100:.2f} %." + (f" Kept in float throughout: {', '.join(result.kept)}." if result.kept else ""),
        "Each row keeps only that layer in float; the gains are what it buys back (points), most harmful first.",
        "",
        "| rank | layer | op | agreement % | gain | mIoU vs float % | gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for rank, effect in enumerate(result.layers, start=1):
        gain_agreement, gain_miou = effect.gain(base)
        lines.append(f"| {rank} | `{effect.layer}` | {effect.op_type} | {effect.score.agreement * 100:.2f} | "
                     f"{gain_agreement:+.2f} | {effect.score.miou * 100:.2f} | {gain_miou:+.2f} |")
    return "\n".join(lines) + "\n"
