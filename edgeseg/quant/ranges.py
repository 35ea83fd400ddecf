"""Activation ranges from calibration images (layer 2).

``compute_ranges`` runs the float model on the calibration feed (onnxruntime, every
activation as an output) and returns, per activation tensor (ONNX names), its min, max
and amax = max(|min|, |max|) by entropy / minmax / percentile (histogram.py). ``ranges.json`` stores them with
what they came from (method, images, hashes) and nothing time-dependent, so the same
inputs give the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, ConfigError, require
from ..fileio import atomic_write_json, read_json
from .calib_data import Batch
from .histogram import AbsHistogram, entropy_amax, percentile_amax

METHODS = ("entropy", "minmax", "percentile")
# percentile 99.99 of |x|: the method that passed the gates on every trained model and random-weight zoo model
# measured (benchmarks/results/int8_accuracy.md); entropy (TensorRT's KL) clips harder and lost 10x more
# logit accuracy on a random-weight SPEED decoder.
DEFAULT_METHOD = "percentile"
DEFAULT_PERCENTILE = 99.99
RANGES_FORMAT = 1


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
    source: dict[str, Any] | None = None  # frames from a ROS bag: its path, topic, frame stamps (None: a folder)

    def amax(self, name: str) -> float:
        return self.tensors[name].amax

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tensors"] = {k: asdict(v) for k, v in sorted(self.tensors.items())}
        if data["source"] is None:  # a folder's ranges.json stays as it was
            del data["source"]
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


CALIBRATED_TYPES = (1, 10)  # TensorProto FLOAT, FLOAT16


def calibrated_tensors(model) -> list[str]:  # type: ignore[no-untyped-def]
    """Float activations read or written by a node: graph inputs and node outputs, not initializers."""
    onnx = require("onnx", purpose="calibration")
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = {vi.name: vi for vi in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)}
    initializers = {init.name for init in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        for name in (*node.input, *node.output):
            info = infos.get(name)
            if (info is not None and name not in initializers and name not in names
                    and info.type.HasField("tensor_type") and info.type.tensor_type.elem_type in CALIBRATED_TYPES):
                names.append(name)
    return names


def _observing_session(model, tensors: list[str]):  # type: ignore[no-untyped-def]
    """An onnxruntime session whose outputs are the float model's outputs plus every tensor to observe."""
    onnx = require("onnx", purpose="calibration")
    ort = require("onnxruntime", purpose="calibration")
    observed = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in observed.graph.output}
    observed.graph.output.extend(onnx.ValueInfoProto(name=name) for name in tensors if name not in present)
    options = ort.SessionOptions()
    # basic optimisations (constant folding, Conv+BN) keep every observed tensor (they are outputs)
    # and make the passes ~1.5x faster than none
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(observed.SerializeToString(), options, providers=["CPUExecutionProvider"])


def compute_ranges(
    onnx_path: str | os.PathLike[str],
    batches: Iterable[Batch],
    *,
    method: str = DEFAULT_METHOD,
    percentile: float = DEFAULT_PERCENTILE,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, TensorRange]:
    """Run the float model over ``batches``; the range of every float activation by ``method``.

    minmax: the observed extremes; percentile / entropy: a symmetric clip of |x| from its
    histogram (histogram.py), with min/max the observed extremes clipped to it.
    ``on_batch(n)`` is called after each batch with the number of batches done.
    """
    check_method(method, percentile)
    onnx = require("onnx", purpose="calibration")
    model = onnx.load(str(onnx_path), load_external_data=False)
    derived = derived_tensors(model)
    tensors = [name for name in calibrated_tensors(model) if name not in derived]
    session = _observing_session(model, tensors)
    histograms = {name: AbsHistogram() for name in tensors}
    minmax_only = method == "minmax"
    done = 0
    outputs = [o.name for o in session.get_outputs()]
    for batch in batches:
        values = dict(zip(outputs, session.run(None, batch)))
        values.update(batch)  # graph inputs are not session outputs
        for name, histogram in histograms.items():
            if minmax_only:
                histogram.add_extremes(values[name])
            else:
                histogram.add(values[name])
        done += 1
        if on_batch is not None:
            on_batch(done)
    if done == 0:
        raise ConfigError("calibration received no batches", fix="check the calibration folder")
    return _with_derived(_to_ranges(histograms, method, percentile), derived)


def _to_ranges(histograms: dict[str, AbsHistogram], method: str, percentile: float) -> dict[str, TensorRange]:
    ranges: dict[str, TensorRange] = {}
    for name, histogram in histograms.items():
        if not histogram.finite:
            raise ArtifactError(
                f"tensor {name} has a non-finite range during calibration",
                found=f"min={histogram.min} max={histogram.max}",
                fix="check the model for NaN/Inf outputs (weights, preprocessing)",
            )
        low, high = min(histogram.min, 0.0), max(histogram.max, 0.0)  # quantized ranges always contain 0
        if method == "entropy":
            amax = entropy_amax(histogram)
        elif method == "percentile":
            amax = percentile_amax(histogram, percentile)
        else:
            amax = max(-low, high)
        low, high = max(low, -amax), min(high, amax)
        ranges[name] = TensorRange(low, high, max(-low, high))
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
