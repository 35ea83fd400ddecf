"""A QAT checkpoint -> the files a build needs, with no recalibration (layer 3, torch).

- ``write_qat_int8``: model.int8.onnx (TensorRT's Q/DQ at the trained scales, lint-checked, float regions as
  asked), model.int8.ort.onnx and model.int8.ov.onnx — the same writer as after calibration
  (``quant.calibrate.write_int8_models``), fed the fine-tuned float graph and the trained scales;
- ``export_qat``: the build's export step for a QAT checkpoint: model.onnx (the fine-tuned float graph) and
  reference.npz, whose verdict is the QAT model's (the fake-quant graph in PyTorch): the model the user
  fine-tuned and evaluated is what every candidate is held to;
- ``qat_parity``: ONNX Runtime on the written Q/DQ file against the fake-quant graph;
- ``write_qat_folder``: everything ``edgeseg train --qat`` leaves in its --out.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import ArtifactError, require
from ..fileio import atomic_write_bytes, atomic_write_json
from ..metrics import confusion_matrix, mean_iou
from ..onnx_model import load_onnx
from ..quant.calibrate import RANGES_NAME, CalibrateConfig, write_int8_models
from ..quant.fp16_regions import fp16_regions_wanted
from ..quant.qdq_trt import quantize_for_tensorrt
from ..quant.ranges import save_ranges
from ..reference import REFERENCE_FILE, Reference, masks_from_files, preprocess_frames, save_reference
from ..training.qat import qat_graph
from ..training.qat_checkpoint import QAT_FILE, QatCheckpoint, QatPlacement, save_qat_checkpoint
from .checks import ParityResult, compare_logits, run_onnxruntime
from .onnx_export import ONNX_FILE, ExportConfig, ExportResult, reference_frames

# ONNX Runtime on the Q/DQ file vs the fake-quant graph: share of equal argmax pixels. Not 1.0: the two sum
# float32 products in another order, an activation a hair from a rounding tie (x/s = 18.500002 vs 18.499998) lands
# one int8 step apart, and the step travels through every later Q/DQ (measured on the demo model, 8 val frames:
# 99.84 % with FP32 float regions, 99.72 % with FP16 ones; ONNX Runtime's own fused and unfused paths disagree more).
# A writer that drifted from the graph (a scale, a weight, a placement) costs far more than this allows.
MIN_QAT_PARITY = 0.995
QAT_SUMMARY = "qat.json"


def qat_config(checkpoint: QatCheckpoint) -> CalibrateConfig:
    """The calibration config whose writer reproduces the QAT placement (float regions as QAT trained them)."""
    placement = checkpoint.placement
    return CalibrateConfig(method=checkpoint.ranges.method.split("+")[0], trt_version=placement.trt_version,
                           keep_fp_layers=tuple(placement.keep_fp_layers), concat_scales=placement.concat_scales,
                           high_precision=placement.high_precision, input_spec=checkpoint.input_spec)


def write_float_model(checkpoint: QatCheckpoint, out: Path) -> Path:
    """model.onnx: the fine-tuned float graph (BatchNorm folded, no Q/DQ)."""
    return atomic_write_bytes(Path(out) / ONNX_FILE, checkpoint.float_onnx)


def write_qat_int8(checkpoint: QatCheckpoint, out: Path) -> tuple[Path, Path, dict[str, float]]:
    """ranges.json and the three INT8 files from ``checkpoint`` into ``out`` (model.onnx must be there)."""
    onnx_path = Path(out) / ONNX_FILE
    ranges = replace(checkpoint.ranges, onnx_sha256=hashlib.sha256(onnx_path.read_bytes()).hexdigest())
    save_ranges(ranges, Path(out) / RANGES_NAME)
    return write_int8_models(onnx_path, ranges, out, qat_config(checkpoint), scales=checkpoint.scales)


def fake_quant_logits(checkpoint: QatCheckpoint, inputs: np.ndarray, batch_size: int = 4, *,
                      placement: QatPlacement | None = None) -> np.ndarray:
    """The QAT model's logits (the fake-quant graph in PyTorch, FP32 math) on preprocessed N x 3 x H x W
    ``inputs``; ``placement`` in place of the checkpoint's (the drift check's FP32-region twin)."""
    onnx = require("onnx", purpose="running a QAT checkpoint")
    graph = qat_graph(onnx.load_from_string(checkpoint.float_onnx), checkpoint.ranges,
                      placement or checkpoint.placement, scales=checkpoint.scales).eval()
    with torch.no_grad():
        return np.concatenate([graph(torch.from_numpy(np.ascontiguousarray(inputs[i:i + batch_size]))).numpy()
                               for i in range(0, len(inputs), batch_size)])


@dataclass
class QatParity:
    """ONNX Runtime against the fake-quant graph. ``writer``: the file the writer makes with FP32 float regions
    (the graph's own arithmetic) — the drift check, required; ``shipped``: model.int8.onnx as written (with FP16
    float regions it also holds FP16 arithmetic the graph does not do: reported, the build's gates judge it)."""

    writer: ParityResult
    shipped: ParityResult

    def to_dict(self) -> dict[str, Any]:
        return {"writer_fp32_regions": self.writer.to_dict(), "shipped_file": self.shipped.to_dict()}


def qat_parity(checkpoint: QatCheckpoint, int8_path: Path, inputs: np.ndarray) -> QatParity:
    """``QatParity`` of the written ``int8_path`` on ``inputs``.

    ONNX Runtime runs the file with its graph optimizations off: Q/DQ as the ONNX spec defines them (float math on
    dequantized values, what TensorRT's explicit quantization computes). Its fused INT8 kernels are another
    computation: on a CPU without VNNI, int8 x int8 products of full-range weights saturate in 16 bits
    (VPMADDUBSW), which is why the CPU file has 7-bit weights, and that is not what this check is about."""
    onnx = require("onnx", purpose="checking a QAT model's ONNX file")
    spec, placement = checkpoint.input_spec, checkpoint.placement
    shipped = compare_logits(fake_quant_logits(checkpoint, inputs),
                             run_qdq_reference(Path(int8_path).read_bytes(), inputs, spec))
    if not fp16_regions_wanted(placement.high_precision, placement.trt_version):
        return QatParity(shipped, shipped)
    fp32 = replace(placement, high_precision="fp32")
    twin = quantize_for_tensorrt(onnx.load_from_string(checkpoint.float_onnx), checkpoint.ranges,
                                 keep_fp_layers=fp32.keep_fp_layers, concat_scales=fp32.concat_scales,
                                 trt_version=fp32.trt_version, scales=checkpoint.scales)
    writer = compare_logits(fake_quant_logits(checkpoint, inputs, placement=fp32),
                            run_qdq_reference(twin.SerializeToString(), inputs, spec))
    return QatParity(writer, shipped)


def run_qdq_reference(model_bytes: bytes, inputs: np.ndarray, spec: Any) -> np.ndarray:
    """ONNX Runtime (CPU) on a Q/DQ model with graph optimizations off, one frame at a time."""
    ort = require("onnxruntime", purpose="checking a QAT model's ONNX file")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run([spec.output_name], {spec.input_name: inputs[i:i + 1]})[0]
                           for i in range(len(inputs))])


def require_qat_parity(parity: QatParity, int8_path: Path) -> None:
    if parity.writer.argmax_agreement < MIN_QAT_PARITY:
        raise ArtifactError(f"{int8_path.name} does not compute what the QAT model computes",
                            expected=f"argmax agreement >= {MIN_QAT_PARITY:.1%} (ONNX Runtime on the writer's file "
                                     "with FP32 float regions vs the fake-quant graph)",
                            found=f"{parity.writer.argmax_agreement:.3%}",
                            fix="report this with the checkpoint: the Q/DQ writer and the QAT graph disagree")


def export_qat(checkpoint: QatCheckpoint, config: ExportConfig, out_dir: str | os.PathLike[str], *,
               log: Callable[[str], None] | None = None) -> ExportResult:
    """The build's export step for a QAT checkpoint: model.onnx and reference.npz (the QAT model's verdict)."""
    say = log or (lambda _message: None)
    out = Path(out_dir)
    spec = checkpoint.input_spec
    frames = reference_frames(config)
    masks = (masks_from_files(config.sample_masks, *spec.size, len(checkpoint.classes))
             if config.sample_masks else None)
    inputs = preprocess_frames(frames, spec)
    say(f"reference: the QAT model (fake-quant graph) on {len(frames)} frames at {spec.height}x{spec.width}")
    logits = fake_quant_logits(checkpoint, inputs)
    onnx_path = write_float_model(checkpoint, out)
    onnx_sha256 = hashlib.sha256(checkpoint.float_onnx).hexdigest()
    float_logits = run_onnxruntime(checkpoint.float_onnx, inputs, input_name=spec.input_name,
                                   output_name=spec.output_name)
    meta = _float_checkpoint_scores(checkpoint, inputs, logits, masks)
    meta |= {"model": checkpoint.model, "num_classes": len(checkpoint.classes), "classes": list(checkpoint.classes),
            "input_spec": spec.to_dict(), "onnx_sha256": onnx_sha256, "edgeseg_version": __version__,
            "frames": (config.samples_source or "images") if config.sample_images else f"synthetic(seed={config.seed})",
            "ground_truth": masks is not None, "reference_model": "qat",
            "float_checkpoint": dict(checkpoint.float_checkpoint)}
    reference_path = save_reference(out / REFERENCE_FILE, Reference.from_logits(frames, logits, meta, masks))
    # what the export records as parity: the fine-tuned float graph vs the QAT model (how far QAT moved it)
    parity = compare_logits(logits, float_logits)
    say(f"wrote {onnx_path} and {reference_path}")
    model = load_onnx(onnx_path)
    return ExportResult(onnx_path, reference_path, onnx_sha256, parity, True, len(model.graph.node),
                        ["reference.npz holds the QAT model's verdict (fake-quant graph), not the float model's"])


def _float_checkpoint_scores(checkpoint: QatCheckpoint, inputs: np.ndarray, qat_logits: np.ndarray,
                             masks: np.ndarray | None) -> dict[str, float]:
    """The float checkpoint QAT started from, on the reference frames: its agreement with the QAT model and,
    with ground truth, its mIoU (validation reports the candidate's drop against it)."""
    if not checkpoint.original_onnx:
        return {}
    spec = checkpoint.input_spec
    labels = run_onnxruntime(checkpoint.original_onnx, inputs, input_name=spec.input_name,
                             output_name=spec.output_name).argmax(1)
    scores = {"float_checkpoint_agreement": float(np.mean(labels == qat_logits.argmax(1)))}
    if masks is not None:
        classes = len(checkpoint.classes)
        confusion = sum(confusion_matrix(p, t, classes) for p, t in zip(labels, masks, strict=True))
        scores["float_checkpoint_miou"] = mean_iou(np.asarray(confusion))
    return scores


@dataclass
class QatFolder:
    """What ``write_qat_folder`` wrote, and the parity it measured."""

    out: Path
    files: list[Path]
    parity: QatParity | None
    summary: dict[str, Any] = field(default_factory=dict)


def write_qat_folder(checkpoint: QatCheckpoint, out: str | os.PathLike[str], *,
                     parity_inputs: np.ndarray | None = None) -> QatFolder:
    """qat.pt, model.onnx, ranges.json, the INT8 files and qat.json into ``out``; with ``parity_inputs``
    (preprocessed frames) ONNX Runtime on model.int8.onnx is checked against the fake-quant graph."""
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    files = [save_qat_checkpoint(target / QAT_FILE, checkpoint), write_float_model(checkpoint, target)]
    trt_path, ort_path, _ = write_qat_int8(checkpoint, target)
    files += [target / RANGES_NAME, trt_path, ort_path, target / "model.int8.ov.onnx"]
    parity = qat_parity(checkpoint, trt_path, parity_inputs) if parity_inputs is not None else None
    summary = {"model": checkpoint.model, "metrics": asdict(checkpoint.metrics), "history": checkpoint.history,
               "placement": asdict(checkpoint.placement), "float_checkpoint": checkpoint.float_checkpoint,
               "config": checkpoint.config,
               "parity": parity.to_dict() if parity is not None else None,
               "files": [p.name for p in files] + [QAT_SUMMARY]}
    files.append(atomic_write_json(target / QAT_SUMMARY, json.loads(json.dumps(summary, default=str))))
    if parity is not None:
        require_qat_parity(parity, trt_path)
    return QatFolder(target, files, parity, summary)
