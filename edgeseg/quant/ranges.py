"""Activation ranges from calibration images, computed by onnxruntime's calibrators (layer 2).

``compute_ranges`` runs the float model on the calibration feed with onnxruntime's
entropy / minmax / percentile calibrator and returns, per activation tensor (ONNX
names), its min, max and amax = max(|min|, |max|). ``ranges.json`` stores them with
what they came from (method, images, hashes) and nothing time-dependent, so the same
inputs give the same bytes.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError, require
from ..fileio import atomic_write_json, read_json
from .calib_data import Batch, OrtCalibrationReader

METHODS = ("entropy", "minmax", "percentile")
RANGES_FORMAT = 1
# TensorRT's entropy calibrator uses 2048 histogram bins and 128 quantized bins; onnxruntime's
# defaults (128/128) leave a single candidate threshold, i.e. plain max. 512 bins (over
# [-t, t]) keep 193 candidate thresholds; onnxruntime's threshold search is pure Python and
# quadratic in the bins (2048 bins: ~0.4 s per tensor, 512: ~0.06 s).
ENTROPY_BINS = 512
ENTROPY_QUANTIZED_BINS = 128
PERCENTILE_BINS = 2048


@dataclass(frozen=True)
class TensorRange:
    min: float
    max: float
    amax: float


@dataclass
class Ranges:
    """Per-tensor activation ranges and their provenance (``ranges.json``)."""

    method: str
    tensors: dict[str, TensorRange]
    num_images: int = 0
    calibration_sha256: str = ""
    onnx_sha256: str = ""
    percentile: float | None = None
    images: list[str] = field(default_factory=list)
    skipped: list[list[str]] = field(default_factory=list)
    derived: dict[str, str] = field(default_factory=dict)  # tensor -> tensor its range was copied from
    format: int = RANGES_FORMAT

    def amax(self, name: str) -> float:
        return self.tensors[name].amax

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tensors"] = {k: asdict(v) for k, v in sorted(self.tensors.items())}
        return data

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "ranges.json") -> Ranges:
        if not isinstance(data, dict) or data.get("format") != RANGES_FORMAT or "tensors" not in data:
            raise ArtifactError(
                f"{source} is not an edgeseg ranges file of format {RANGES_FORMAT}",
                fix="recompute it: edgeseg calibrate --onnx DIR/model.onnx --calib IMAGES",
            )
        try:
            tensors = {k: TensorRange(float(v["min"]), float(v["max"]), float(v["amax"]))
                       for k, v in data["tensors"].items()}
            values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "tensors"}
            return cls(tensors=tensors, **values)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{source} is malformed", found=f"{type(exc).__name__}: {exc}") from None


def save_ranges(ranges: Ranges, path: str | os.PathLike[str]) -> Path:
    return atomic_write_json(path, ranges.to_dict())


def load_ranges(path: str | os.PathLike[str]) -> Ranges:
    return Ranges.from_dict(read_json(path, what="ranges file"), source=str(path))


def check_method(method: str, percentile: float) -> None:
    if method not in METHODS:
        raise ConfigError("unknown calibration method", expected=" | ".join(METHODS), found=repr(method))
    if method == "percentile" and not 0.0 < percentile <= 100.0:
        raise ConfigError("the percentile must be in (0, 100]", found=str(percentile), fix="e.g. --percentile 99.99")


SHAPE_ONLY_OPS = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity")
FUSED_BEFORE_RELU = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add")


def derived_tensors(model) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Tensors whose range is copied from another tensor instead of being calibrated.

    - outputs of shape-only ops (Reshape, Transpose, ...) hold the same values as their
      input, so any method gives them the same range (exact);
    - a Conv/Gemm/Add output read only by a Relu takes the Relu output's range: TensorRT
      fuses the pair, and Relu(clip(x, -a, a)) == clip(Relu(x), 0, a), so nothing
      downstream changes (onnxruntime's quantizer makes the same substitution).
    Skipping them roughly halves the histogram work on ShuffleNetV2.
    """
    consumers: dict[str, list[object]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    derived: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type in SHAPE_ONLY_OPS and node.input and node.output[0] not in outputs:
            derived[node.output[0]] = node.input[0]
        elif node.op_type in FUSED_BEFORE_RELU and node.output[0] not in outputs:
            readers = consumers.get(node.output[0], [])
            if len(readers) == 1 and readers[0].op_type == "Relu":  # type: ignore[attr-defined]
                derived[node.output[0]] = readers[0].output[0]  # type: ignore[attr-defined]
    return derived


def _calibrator(onnx_path: Path, workdir: Path, method: str, percentile: float,  # type: ignore[no-untyped-def]
                skip: set[str]):
    calibrate = require("onnxruntime.quantization.calibrate", purpose="calibration")
    ort = require("onnxruntime", purpose="calibration")
    bases: dict[str, tuple[Any, dict[str, Any]]] = {
        "entropy": (calibrate.EntropyCalibrater,
                    {"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS, "symmetric": False}),
        "minmax": (calibrate.MinMaxCalibrater, {"symmetric": False}),
        "percentile": (calibrate.PercentileCalibrater,
                       {"num_bins": PERCENTILE_BINS, "percentile": percentile, "symmetric": True}),
    }
    base, options = bases[method]

    class Selective(base):  # type: ignore[misc, valid-type]
        """onnxruntime's calibrator for every float activation except the derived ones."""

        def select_tensors_to_calibrate(self, model):  # type: ignore[no-untyped-def]
            tensors, value_infos = super().select_tensors_to_calibrate(model)
            return {t for t in tensors if t not in skip}, value_infos

    calibrator = Selective(Path(onnx_path), None, str(workdir / "augmented.onnx"), **options)
    calibrator.augment_graph()
    # onnxruntime disables all graph optimisations here; basic ones (constant folding,
    # Conv+BN) keep every calibrated tensor and make the calibration passes ~1.5x faster
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    calibrator.infer_session = ort.InferenceSession(calibrator.augmented_model_path, session_options,
                                                    providers=["CPUExecutionProvider"])
    return calibrator


def compute_ranges(
    onnx_path: str | os.PathLike[str],
    batches: Iterable[Batch],
    *,
    method: str = "entropy",
    percentile: float = 99.99,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, TensorRange]:
    """Run onnxruntime's calibrator over ``batches``; ranges of every float activation.

    ``on_batch(n)`` is called after each batch with the number of batches done.
    """
    check_method(method, percentile)
    onnx = require("onnx", purpose="calibration")
    derived = derived_tensors(onnx.load(str(onnx_path), load_external_data=False))
    quiet = contextlib.redirect_stdout(io.StringIO())  # onnxruntime prints chatter on stdout
    with tempfile.TemporaryDirectory(prefix="edgeseg-calib-") as tmp:
        with quiet:
            calibrator = _calibrator(Path(onnx_path), Path(tmp), method, percentile, set(derived))
        done = 0
        for batch in batches:
            with quiet:
                calibrator.collect_data(OrtCalibrationReader([batch]))
            done += 1
            if on_batch is not None:
                on_batch(done)
        if done == 0:
            raise ConfigError("calibration received no batches", fix="check the calibration folder")
        with quiet:
            data = calibrator.compute_data()
        del calibrator  # closes the session before the temp folder goes
    return _with_derived(_to_ranges(data), derived)


def _to_ranges(data: Any) -> dict[str, TensorRange]:
    ranges: dict[str, TensorRange] = {}
    for name, value in data.items():
        low, high = value.range_value
        low_f, high_f = float(np.asarray(low).reshape(-1)[0]), float(np.asarray(high).reshape(-1)[0])
        if not (math.isfinite(low_f) and math.isfinite(high_f)):
            raise ArtifactError(
                f"tensor {name} has a non-finite range during calibration",
                found=f"min={low_f} max={high_f}",
                fix="check the model for NaN/Inf outputs (weights, preprocessing)",
            )
        low_f, high_f = min(low_f, 0.0), max(high_f, 0.0)  # quantized ranges always contain 0
        ranges[name] = TensorRange(low_f, high_f, max(abs(low_f), abs(high_f)))
    return dict(sorted(ranges.items()))


def _with_derived(ranges: dict[str, TensorRange], derived: dict[str, str]) -> dict[str, TensorRange]:
    """Fill in the derived tensors (chains such as Reshape -> Transpose -> Reshape resolved)."""
    result = dict(ranges)
    for name in derived:
        source, seen = name, set()
        while source in derived and source not in result and source not in seen:
            seen.add(source)
            source = derived[source]
        if source in result:
            result[name] = result[source]
    return dict(sorted(result.items()))
