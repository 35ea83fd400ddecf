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

# The drift check, op by op: every op of the writer's file (FP32 float regions), fed ONNX Runtime's own inputs,
# against the fake-quant graph's op. Whole graphs are only reported: the two sum float32 products in another order,
# an activation within 1e-6 of a rounding tie lands one int8 step apart and the step travels through every later
# Q/DQ (a low-margin hrnet_w18_small_v1: 99.34 % of pixels; the demo: 99.84 %). Op by op, at most this share of an
# op's elements may differ (such a tie), and no op more: a drifted scale, weight or placement breaks far more.
MAX_OFF_PER_OP = 1e-3
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
    (the graph's own arithmetic), whole graph; ``ops_checked`` / ``ops_off``: the same file op by op (the drift
    check, required: ``ops_off`` empty); ``shipped``: model.int8.onnx as written (with FP16 float regions it also
    holds FP16 arithmetic the graph does not do: reported, the build's gates judge it)."""

    writer: ParityResult
    shipped: ParityResult
    ops_checked: int = 0
    ops_off: list[str] = field(default_factory=list)  # "op output: share of elements off"

    def to_dict(self) -> dict[str, Any]:
        return {"writer_fp32_regions": self.writer.to_dict(), "shipped_file": self.shipped.to_dict(),
                "ops_checked": self.ops_checked, "ops_off": list(self.ops_off)}


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
    fp32 = replace(placement, high_precision="fp32")
    float_model = onnx.load_from_string(checkpoint.float_onnx)
    twin = quantize_for_tensorrt(float_model, checkpoint.ranges, keep_fp_layers=fp32.keep_fp_layers,
                                 concat_scales=fp32.concat_scales, trt_version=fp32.trt_version,
                                 scales=checkpoint.scales)
    writer = shipped if not fp16_regions_wanted(placement.high_precision, placement.trt_version) else \
        compare_logits(fake_quant_logits(checkpoint, inputs, placement=fp32),
                       run_qdq_reference(twin.SerializeToString(), inputs, spec))
    graph = qat_graph(float_model, checkpoint.ranges, fp32, scales=checkpoint.scales).eval()
    checked, off = _op_by_op(graph, twin, inputs[:1])
    return QatParity(writer, shipped, checked, off)


def _op_by_op(graph: Any, model: Any, inputs: np.ndarray) -> tuple[int, list[str]]:
    """Each op of ``graph`` fed ONNX Runtime's intermediates of ``model`` (graph optimizations off): how many
    were compared, and those with more than MAX_OFF_PER_OP of their elements off."""
    ort = require("onnxruntime", purpose="checking a QAT model's ONNX file")
    onnx = require("onnx", purpose="checking a QAT model's ONNX file")
    skip = {n.output[0] for n in model.graph.node if n.op_type in ("QuantizeLinear", "Constant")}
    observed = onnx.ModelProto()
    observed.CopyFrom(model)
    names = [o for n in observed.graph.node for o in n.output if o not in skip]
    del observed.graph.output[:]
    observed.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(observed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = dict(zip(names, session.run(None, {session.get_inputs()[0].name: inputs}), strict=True))
    fed = {name: torch.from_numpy(np.asarray(value)) for name, value in values.items()}
    fed[model.graph.input[0].name] = torch.from_numpy(np.ascontiguousarray(inputs))
    checked, off = 0, []
    with torch.no_grad():
        for name, found in graph.step_outputs(fed):
            reference = np.asarray(values[name])
            share = float(np.mean(np.abs(found.numpy() - reference) > 1e-4 * max(float(np.abs(reference).max()),
                                                                                   1e-6)))
            checked += 1
            if share > MAX_OFF_PER_OP:
                off.append(f"{name}: {share:.2%} of its elements")
    return checked, off


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
    if parity.ops_off or not parity.ops_checked:
        raise ArtifactError(f"{int8_path.name} does not compute what the QAT model computes",
                            expected=f"every op of the writer's file (FP32 float regions) as the fake-quant graph's, "
                                     f"at most {MAX_OFF_PER_OP:.1%} of its elements off (a rounding tie)",
                            found=f"{len(parity.ops_off)} of {parity.ops_checked} ops off, e.g. "
                                  + "; ".join(parity.ops_off[:3]),
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
