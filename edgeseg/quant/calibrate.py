"""Calibration: one call from ``model.onnx`` + calibration images to every INT8 artifact (layer 2).

``calibrate_model(onnx_path, calib_dir, config)`` writes, next to the ONNX (or into
``out_dir``), all atomically:

  ranges.json          per-tensor activation ranges + provenance (ranges.py)
  model.int8.onnx      Q/DQ for TensorRT explicit quantization, lint-checked (qdq_trt.py); its float
                       regions in FP16 for TensorRT >= 10 unless high_precision="fp32" (fp16_regions.py)
  model.int8.ort.onnx  INT8 for ONNX Runtime's CPU provider, same ranges (qdq_ort.py)
  calibration.cache    TensorRT's native cache for the implicit path (trt_cache.py)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import ArtifactError, ConfigError
from ..fileio import atomic_write_bytes, sha256_file
from ..onnx_model import input_dims, input_spec_of, load_onnx
from ..spec import InputSpec
from ..trt_cache_format import cache_header
from .calib_data import CalibrationFeed, CalibrationImages, CalibSource
from .fp16_regions import DEFAULT_HIGH_PRECISION, check_high_precision, convert_float_regions, fp16_regions_wanted
from .lint import check_qdq
from .qdq_ort import ORT_INT8_NAME, OrtInt8Options, quantize_for_onnxruntime
from .qdq_ov import write_ov_int8
from .qdq_trt import CONCAT_SCALES, quantize_for_tensorrt, resolve_keep_fp_layers
from .ranges import (
    DEFAULT_METHOD,
    DEFAULT_PERCENTILE,
    Ranges,
    check_method,
    compute_ranges,
    derived_tensors,
    save_ranges,
)
from .sensitivity import SENSITIVITY_FRAMES, Sensitivity, SensitivityPlot, measure_sensitivity, write_sensitivity
from .trt_cache import DEFAULT_TRT_VERSION, write_trt_cache

RANGES_NAME = "ranges.json"
TRT_INT8_NAME = "model.int8.onnx"
TRT_CACHE_NAME = "calibration.cache"


@dataclass
class CalibrateConfig:
    method: str = DEFAULT_METHOD
    calib_images: int = 100
    batch_size: int = 1
    percentile: float = DEFAULT_PERCENTILE
    seed: int = 0
    trt_version: str = DEFAULT_TRT_VERSION
    keep_fp_layers: tuple[str, ...] = ()  # node names, or the aliases first_conv / classifier
    concat_scales: str = "separate"  # Q/DQ for TensorRT: separate | shared (qdq_trt's docstring says why)
    # float regions of model.int8.onnx: fp16 (TensorRT >= 10: float16 tensors; 8.x: float32, the builder's FP16
    # flag) or fp32 (fp16_regions.py)
    high_precision: str = DEFAULT_HIGH_PRECISION
    frame_order: str = "RGB"  # channel order of the calibration image files as loaded (always RGB)
    input_spec: InputSpec | None = None  # None: the spec in the ONNX metadata
    ort: OrtInt8Options = field(default_factory=OrtInt8Options)

    def check(self) -> None:
        check_method(self.method, self.percentile)
        cache_header(self.trt_version)  # ConfigError for a TensorRT without calibration caches
        self.ort.check()
        check_high_precision(self.high_precision)
        if self.concat_scales not in CONCAT_SCALES:
            raise ConfigError("unknown --concat-scales", expected=" | ".join(CONCAT_SCALES),
                              found=repr(self.concat_scales))
        if self.calib_images < 1 or self.batch_size < 1:
            raise ConfigError("calibration needs at least one image and a batch size of at least 1",
                              found=f"images={self.calib_images} batch size={self.batch_size}")


@dataclass
class CalibrationResult:
    out_dir: Path
    ranges_path: Path
    trt_int8_path: Path
    ort_int8_path: Path
    trt_cache_path: Path
    images: CalibrationImages
    num_tensors: int
    seconds: dict[str, float]

    @property
    def artifacts(self) -> dict[str, Path]:
        return {"ranges": self.ranges_path, "int8_onnx": self.trt_int8_path,
                "int8_ort_onnx": self.ort_int8_path, "calibration_cache": self.trt_cache_path}


def _check_batch(model, spec: InputSpec, batch_size: int) -> None:  # type: ignore[no-untyped-def]
    dims = input_dims(model, spec.input_name)
    if len(dims) != 4:
        raise ConfigError("the model input is not 4-D (N x 3 x H x W)", found=str(dims))
    batch, height, width = dims[0], dims[2], dims[3]
    if isinstance(height, int) and isinstance(width, int) and (height, width) != spec.size:
        raise ConfigError(
            "the input spec's size does not match the ONNX input",
            expected=f"{height}x{width} (the ONNX input)", found=f"{spec.height}x{spec.width}",
        )
    if isinstance(batch, int) and batch != batch_size:
        raise ConfigError(
            "the calibration batch size does not match the model's static batch",
            expected=f"--batch-size {batch}", found=f"--batch-size {batch_size}",
            fix=f"use --batch-size {batch}, or export with another --batch",
        )


def calibrate_model(
    onnx_path: str | os.PathLike[str],
    calib_dir: CalibSource,
    config: CalibrateConfig | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> CalibrationResult:
    """Calibrate ``onnx_path`` on ``calib_dir`` and write every INT8 artifact.

    ``on_progress(done, total)`` is called with batch counts (once with done=0 first).
    """
    config = config or CalibrateConfig()
    target = Path(out_dir) if out_dir is not None else Path(onnx_path).parent
    ranges, images, seconds = calibrate_ranges(onnx_path, calib_dir, config, out_dir=target, on_progress=on_progress)
    trt_path, ort_path, written_s = write_int8_models(onnx_path, ranges, target, config)
    cache_path = target / TRT_CACHE_NAME
    return CalibrationResult(target, target / RANGES_NAME, trt_path, ort_path, cache_path, images,
                             len(ranges.tensors), {**seconds, **written_s})


def calibrate_ranges(
    onnx_path: str | os.PathLike[str],
    calib_dir: CalibSource,
    config: CalibrateConfig,
    *,
    out_dir: str | os.PathLike[str],
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[Ranges, CalibrationImages, dict[str, float]]:
    """The calibration pass: ranges.json and calibration.cache in ``out_dir``."""
    config.check()
    source = Path(onnx_path)
    target = Path(out_dir)
    model = load_onnx(source)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv") for n in model.graph.node):
        raise ArtifactError(
            f"{source.name} is already quantized",
            expected="the float model.onnx written by edgeseg export",
            found="QuantizeLinear/DequantizeLinear nodes",
            fix=f"pass --onnx {source.parent / 'model.onnx'}",
        )
    spec = config.input_spec or input_spec_of(model, source=str(source))
    _check_batch(model, spec, config.batch_size)
    clock = time.perf_counter()
    feed = CalibrationFeed(calib_dir, spec, count=config.calib_images, batch_size=config.batch_size,
                           seed=config.seed, frame_order=config.frame_order)
    total = feed.num_batches
    if on_progress is not None:
        on_progress(0, total)
    tensors = compute_ranges(source, feed, method=config.method, percentile=config.percentile,
                             on_batch=(lambda done: on_progress(done, total)) if on_progress else None)
    ranges = Ranges(
        method=config.method, tensors=tensors, num_images=len(feed.images.used),
        calibration_sha256=feed.images.sha256(), onnx_sha256=sha256_file(source),
        percentile=config.percentile if config.method == "percentile" else None,
        images=feed.images.names, skipped=[[name, why] for name, why in feed.images.skipped],
        derived={k: v for k, v in sorted(derived_tensors(model).items()) if k in tensors},
        source=feed.images.bag,
    )
    save_ranges(ranges, target / RANGES_NAME)
    order = [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output]
    write_trt_cache(target / TRT_CACHE_NAME, {k: v.amax for k, v in tensors.items()}, order=order,
                    trt_version=config.trt_version)
    return ranges, feed.images, {"calibration": round(time.perf_counter() - clock, 2)}


def write_int8_models(
    onnx_path: str | os.PathLike[str],
    ranges: Ranges,
    out_dir: str | os.PathLike[str],
    config: CalibrateConfig,
    *,
    float_layers: Sequence[str] = (),
    ov_weight_bits: int | None = None,
    scales: Mapping[str, float] | None = None,
) -> tuple[Path, Path, dict[str, float]]:
    """model.int8.onnx (lint-checked), model.int8.ort.onnx and model.int8.ov.onnx (OpenVINO's: TensorRT's
    placement and scales, weights in ``ov_weight_bits``, default this CPU's ``qdq_ov.openvino_weight_bits()``)
    from ``ranges``; ``float_layers`` (the fallback's choice) stay in float in all three, on top of
    ``config.keep_fp_layers``. ``scales``: QAT's trained activation scales for model.int8.onnx (the other two
    files take theirs from ``ranges``)."""
    model = load_onnx(onnx_path)
    clock = time.perf_counter()
    trt_path = write_trt_int8(model, ranges, out_dir, config, float_layers=float_layers, scales=scales)
    seconds = {"qdq_tensorrt": round(time.perf_counter() - clock, 2)}
    clock = time.perf_counter()
    ort_path = write_ort_int8(onnx_path, model, ranges, out_dir, config, float_layers=float_layers)
    seconds["qdq_onnxruntime"] = round(time.perf_counter() - clock, 2)
    clock = time.perf_counter()
    write_ov_int8(model, ranges, out_dir, keep_fp_layers=_kept(config, float_layers),
                  concat_scales=config.concat_scales, trt_version=config.trt_version, weight_bits=ov_weight_bits)
    seconds["qdq_openvino"] = round(time.perf_counter() - clock, 2)
    return trt_path, ort_path, seconds


def _kept(config: CalibrateConfig, float_layers: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*config.keep_fp_layers, *float_layers]))


def write_trt_int8(model, ranges: Ranges, out_dir: str | os.PathLike[str],  # type: ignore[no-untyped-def]
                   config: CalibrateConfig, *, float_layers: Sequence[str] = (),
                   scales: Mapping[str, float] | None = None) -> Path:
    """model.int8.onnx: Q/DQ for TensorRT from the float ``model`` (an onnx.ModelProto), lint-checked; with
    float16 regions when ``config`` asks for them and targets TensorRT >= 10 (its metadata records which
    tensors stayed float32: ``fp16_regions.float_regions_of``). ``scales``: trained activation scales (QAT) in
    place of the calibrated ones (``quantize_for_tensorrt``)."""
    quantized = quantize_for_tensorrt(model, ranges, keep_fp_layers=_kept(config, float_layers),
                                      concat_scales=config.concat_scales, trt_version=config.trt_version,
                                      scales=scales)
    if fp16_regions_wanted(config.high_precision, config.trt_version):
        quantized, _ = convert_float_regions(quantized, ranges)
    # never write a model TensorRT would mis-build, or one whose scales waste most int8 levels
    check_qdq(quantized, source=TRT_INT8_NAME, ranges=ranges)
    return atomic_write_bytes(Path(out_dir) / TRT_INT8_NAME, quantized.SerializeToString())


def write_ort_int8(onnx_path: str | os.PathLike[str], model, ranges: Ranges,  # type: ignore[no-untyped-def]
                   out_dir: str | os.PathLike[str], config: CalibrateConfig, *,
                   float_layers: Sequence[str] = ()) -> Path:
    """model.int8.ort.onnx: ONNX Runtime's CPU INT8 of ``onnx_path`` (``model`` is it, loaded, to resolve
    the layer names kept in float)."""
    kept = resolve_keep_fp_layers(model, _kept(config, float_layers))
    options = replace(config.ort, nodes_to_exclude=tuple(kept))
    return quantize_for_onnxruntime(onnx_path, ranges, Path(out_dir) / ORT_INT8_NAME, options)



def layer_sensitivity(
    onnx_path: str | os.PathLike[str],
    calib_dir: CalibSource,
    ranges: Ranges,
    config: CalibrateConfig,
    *,
    frames: int = SENSITIVITY_FRAMES,
    out_dir: str | os.PathLike[str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    plot: SensitivityPlot | None = None,
) -> tuple[Sensitivity, list[Path]]:
    """Rank model.int8.onnx's layers on ``frames`` calibration images (another seeded sample than the
    calibration pass drew); writes sensitivity.json/.md into ``out_dir`` when given, and sensitivity.png
    with ``plot`` (report.plots.sensitivity_plot)."""
    spec = config.input_spec or input_spec_of(load_onnx(onnx_path), source=str(onnx_path))
    feed = CalibrationFeed(calib_dir, spec, count=frames, batch_size=config.batch_size, seed=config.seed + 1,
                           frame_order=config.frame_order)
    inputs = [batch[spec.input_name] for batch in feed]
    result = measure_sensitivity(onnx_path, ranges, inputs, keep_fp_layers=config.keep_fp_layers,
                                 concat_scales=config.concat_scales, on_progress=on_progress)
    return result, (write_sensitivity(result, out_dir, plot=plot) if out_dir is not None else [])
