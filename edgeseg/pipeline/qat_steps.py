"""The steps of ``edgeseg build --int8 --weights qat.pt`` that replace export and calibration (layer 4).

A QAT checkpoint (edgeseg qat) holds the fine-tuned float graph and the activation scales it was trained
with, so nothing is recalibrated:
- export: model.onnx (the fine-tuned float graph) and reference.npz, whose verdict is the QAT model's (the
  fake-quant graph in PyTorch): the gates hold every candidate to what the user fine-tuned and evaluated;
- quantize: ranges.json and the INT8 files, by the same writer as after a calibration, at the trained scales.
The manifest's ``calibration.qat`` says so (manifest.QatSummary). torch is imported only inside the steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ConfigError, UsageError
from ..fileio import sha256_file, sha256_files
from ..manifest import CalibrationSummary, QatSummary
from ..onnx_model import load_onnx
from ..quant.fp16_regions import float_regions_of
from ..quant.qdq_ov import OV_INT8_NAME
from ..reference import REFERENCE_FILE
from ..trt_version import TrtVersion
from .build_data import reference_samples
from .build_steps import ExportRecord, Log, ModelInfo, export_config, export_record
from .int8_steps import QuantizeResult, target_trt_version
from .options import BuildOptions
from .step_cache import StepRunner

QAT_METHOD = "qat"  # the manifest's calibration method for a QAT build


def read_qat(weights: Path | None) -> Any | None:
    """The QAT checkpoint at ``weights`` (training.qat_checkpoint.QatCheckpoint), or None for any other file."""
    if weights is None:
        return None
    from ..training.qat_checkpoint import read_qat_checkpoint

    return read_qat_checkpoint(weights)


def float_weights(qat: Any) -> Path | None:
    """The float checkpoint a QAT checkpoint was fine-tuned from, when it is still where it was (bench's PyTorch
    eager row times it); else None, and the row is left out."""
    path = Path(qat.float_checkpoint.get("path", ""))
    return path if path.name and path.is_file() else None


def check_qat_options(options: BuildOptions, qat: Any) -> None:
    """What a QAT checkpoint cannot be built with: each is an option error (exit 2), found before any work."""
    given = {"--precision " + options.precision: options.precision != "int8",
             "--calib": options.calib is not None,
             "--fallback auto": options.fallback == "auto",
             "--sensitivity": options.sensitivity}
    if options.model is not None and options.model != qat.model:
        given[f"--model {options.model} (the checkpoint is {qat.model})"] = True
    wrong = [option for option, present in given.items() if present]
    if wrong:
        raise UsageError(f"{options.weights} is a QAT checkpoint: it builds the INT8 model it was fine-tuned as, "
                         "with its trained scales", found=", ".join(wrong),
                         fix="build it with --int8 alone (no --calib, --fallback or --sensitivity); to change the "
                             "placement, run edgeseg qat again")
    if options.input_size is not None and tuple(options.input_size) != qat.input_spec.size:
        height, width = qat.input_spec.size
        raise UsageError("a QAT checkpoint is fine-tuned at one input size", expected=f"{height}x{width}",
                         found="--input-size {}x{}".format(*options.input_size), fix="drop --input-size")
    trained, target = TrtVersion.parse(qat.placement.trt_version), TrtVersion.parse(target_trt_version())
    if (trained.major < 10) != (target.major < 10):
        raise ConfigError("the QAT checkpoint was fine-tuned for another TensorRT's Q/DQ placement",
                          expected=f"TensorRT {'8.x' if target.major < 10 else '>= 10'} (this machine's target)",
                          found=f"placement for TensorRT {trained}",
                          fix=f"run edgeseg qat again with --trt-version {target}")


def qat_model_info(qat: Any) -> ModelInfo:
    return ModelInfo(model=qat.model, num_classes=len(qat.classes), classes=list(qat.classes), model_options={},
                     class_colors=[list(c) for c in qat.class_colors], spec=qat.input_spec)


def run_qat_export_step(runner: StepRunner, options: BuildOptions, qat: Any, out: Path, done: dict[str, bool],
                        log: Log) -> tuple[Path, ExportRecord]:
    """model.onnx + reference.npz (the QAT model's verdict on the reference frames)."""
    assert options.weights is not None
    info = qat_model_info(qat)
    images, masks, source = reference_samples(options, info.spec, info.num_classes, out, log)
    key = {"weights": sha256_file(options.weights), "qat": True, "size": info.spec.size,
           "samples": sha256_files(images + masks), "version": __version__}

    def run() -> ExportRecord:
        from ..export.qat_export import export_qat

        return export_record(info, export_qat(qat, export_config(info, images, masks, source), out, log=log))

    outcome = runner.run("export", key, [out / "model.onnx", out / REFERENCE_FILE], run, result_type=ExportRecord)
    done["export"] = outcome.skipped
    return out / "model.onnx", outcome.result


def run_qat_quantize_step(runner: StepRunner, options: BuildOptions, qat: Any, out: Path,
                          done: dict[str, bool]) -> CalibrationSummary:
    """ranges.json and the INT8 files at the trained scales; what the manifest records under ``calibration``."""
    assert options.weights is not None
    key = {"weights": sha256_file(options.weights), "onnx": sha256_file(out / "model.onnx"),
           "version": __version__}

    def run() -> QuantizeResult:
        from ..export.qat_export import write_qat_int8
        from ..quant.trt_fusion import predict_fusion

        trt_path, _, seconds = write_qat_int8(qat, out)
        written = load_onnx(trt_path)
        placement = qat.placement
        return QuantizeResult(placement.concat_scales, list(placement.keep_fp_layers), dict(seconds),
                              float_regions_of(written), placement.trt_version,
                              predict_fusion(written, placement.trt_version).to_dict(brief=True))

    outputs = [out / "ranges.json", out / "model.int8.onnx", out / "model.int8.ort.onnx", out / OV_INT8_NAME]
    outcome = runner.run("quantize", key, outputs, run, result_type=QuantizeResult)
    done["quantize"] = outcome.skipped
    quantized, metrics = outcome.result, qat.metrics
    summary = QatSummary(checkpoint=str(options.weights), float_checkpoint=dict(qat.float_checkpoint),
                         reference=QAT_METHOD, epochs=max(len(qat.history) - 1, 0), float_miou=metrics.float_miou,
                         ptq_miou=metrics.ptq_miou, qat_miou=metrics.qat_miou, ptq_agreement=metrics.ptq_agreement,
                         qat_agreement=metrics.qat_agreement)
    return CalibrationSummary(method=QAT_METHOD, folder=str(options.weights), images=0, skipped=[],
                              tensors=len(qat.ranges.tensors), seconds=dict(quantized.seconds),
                              concat_scales=quantized.concat_scales, high_precision=qat.placement.high_precision,
                              float_regions=quantized.float_regions or {"high_precision": "fp32"},
                              trt_fusion=quantized.trt_fusion or None, float_layers=list(quantized.float_layers),
                              qat=summary)
