"""``model.int8.ort.onnx``: the INT8 model for ONNX Runtime's CPU provider (layer 2).

TensorRT's Q/DQ layout (model.int8.onnx: Q/DQ on inputs only) is what TensorRT wants,
but ONNX Runtime's CPU provider only runs int8 kernels where a node is wrapped in
DQ -> op -> Q, so it would run that model in float with extra (de)quantization. This
model is made by onnxruntime's own static quantizer from the SAME ranges (no second
calibration pass), in the layout measured fastest here (benchmarks/int8.py):
QDQ, uint8 activations (asymmetric, from the calibrated min/max), int8 weights,
per-channel weights in 7 bits (``reduce_range``: see ``OrtInt8Options``),
Resize / Concat / ConvTranspose left in float (``CPU_INT8_OPS``), every tensor with its own
range (a Concat output spans its inputs'); when Concat is quantized, its inputs and output share
one range (their union).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DependencyError, require
from ..fileio import atomic_write_bytes
from .qdq_trt import concat_shared_ranges, concat_spanning_ranges
from .ranges import Ranges

ORT_INT8_NAME = "model.int8.ort.onnx"
FORMATS = ("qdq", "qoperator")
ACTIVATION_TYPES = ("uint8", "int8")
# The ops quantized for the CPU: onnxruntime's defaults minus Resize, Concat and ConvTranspose, which its
# CPU provider runs slower in int8 than in float (uint8 Resize, requantizing Concat, and no int8
# ConvTranspose kernel: Q/DQ around a float one), plus the layout transposes they add. Measured at
# 512x1024 (benchmarks/results/int8.md): INT8 / FP32 1.40 -> 1.17 (x0_5_mdspp), 1.25 -> 1.00 (x1_0_dspp),
# 0.81 -> 0.68 (hrnet_w18_small_v1), 0.42 -> 0.36 (x1_0_deeplabv3plus).
CPU_INT8_OPS = ("Conv", "Gemm", "MatMul", "Add", "Mul", "AveragePool", "MaxPool", "Relu", "Sigmoid", "Split",
                "Slice", "Transpose", "Reshape")


@dataclass(frozen=True)
class OrtInt8Options:
    quant_format: str = "qdq"
    activation_type: str = "uint8"
    per_channel: bool = True
    # 7-bit weights: with 8-bit ones onnxruntime's fused int8 kernels on an x86 CPU without VNNI (this project's
    # machine) drift from the Q/DQ arithmetic: demo CPU INT8 agreement 99.60 % (fused) vs 99.71 % (the same
    # file with QDQ fusion off); x0_5_deeplabv3 (random weights) mean error 0.26 vs 0.03. With 7 bits fused and
    # unfused agree (99.69 / 0.04), at no speed cost (benchmarks/results/int8.md, ort_int8_reduce_range).
    reduce_range: bool = True
    op_types: tuple[str, ...] | None = CPU_INT8_OPS  # None: onnxruntime's defaults for the format
    nodes_to_exclude: tuple[str, ...] = ()  # node names left in float (keep_fp_layers, the fallback's layers)

    def check(self) -> None:
        if self.quant_format not in FORMATS:
            raise ConfigError("unknown ONNX Runtime quantization format", expected=" | ".join(FORMATS),
                              found=repr(self.quant_format))
        if self.activation_type not in ACTIVATION_TYPES:
            raise ConfigError("unknown activation type", expected=" | ".join(ACTIVATION_TYPES),
                              found=repr(self.activation_type))


MIN_ORT_FOR_SAVED_RANGES = "1.27"


def check_saved_ranges_support(calibrate: Any) -> None:
    """quantize_static takes saved ranges (no second calibration pass) from onnxruntime 1.27 on; older ones
    (e.g. 1.19, the last for Python 3.8 / JetPack 5) cannot write model.int8.ort.onnx this way."""
    if not hasattr(calibrate, "save_tensors_data"):
        import onnxruntime

        raise DependencyError(
            "this onnxruntime cannot write the CPU INT8 model from saved ranges",
            expected=f"onnxruntime >= {MIN_ORT_FOR_SAVED_RANGES}", found=f"onnxruntime {onnxruntime.__version__}",
            fix="calibrate on the workstation (pip install -U onnxruntime, Python 3.10+) and build on the Jetson "
                "from its model.int8.onnx: edgeseg build --onnx DIR/model.int8.onnx --backend tensorrt",
        )


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """onnxruntime's quantizer logs advice ('consider pre-processing') at WARNING on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_for_onnxruntime(
    onnx_path: str | os.PathLike[str],
    ranges: Ranges,
    out_path: str | os.PathLike[str],
    options: OrtInt8Options = OrtInt8Options(),
) -> Path:
    """Quantize ``onnx_path`` for ONNX Runtime CPU with ``ranges``; writes ``out_path`` atomically."""
    options.check()
    quantization = require("onnxruntime.quantization", purpose="ONNX Runtime INT8 models")
    calibrate = require("onnxruntime.quantization.calibrate", purpose="ONNX Runtime INT8 models")
    check_saved_ranges_support(calibrate)
    onnx = require("onnx", purpose="ONNX Runtime INT8 models")
    model = onnx.load(str(onnx_path), load_external_data=False)
    concat_in_int8 = options.op_types is None or "Concat" in options.op_types
    # an int8 Concat wants one range for its inputs and output (their union); a float one wants each input
    # kept at its own range (the union coarsened backbone tensors that also feed a decoder Concat)
    shared = concat_shared_ranges(model, ranges) if concat_in_int8 else concat_spanning_ranges(model.graph, ranges)
    tensors = calibrate.TensorsData(calibrate.CalibrationMethod.MinMax, {
        name: calibrate.TensorData(lowest=np.array(r.min, np.float32), highest=np.array(r.max, np.float32))
        for name, r in shared.items()
    })
    qtype = quantization.QuantType
    activation = qtype.QUInt8 if options.activation_type == "uint8" else qtype.QInt8
    quant_format = quantization.QuantFormat.QDQ if options.quant_format == "qdq" else quantization.QuantFormat.QOperator
    with tempfile.TemporaryDirectory(prefix="edgeseg-ortq-") as tmp, _quiet_logging():
        cache = Path(tmp) / "ranges.json"
        calibrate.save_tensors_data(tensors, cache)
        output = Path(tmp) / "model.onnx"
        quantization.quantize_static(
            str(onnx_path),
            str(output),
            None,  # no data reader: the ranges come from the cache, no second calibration
            quant_format=quant_format,
            op_types_to_quantize=list(options.op_types) if options.op_types else None,
            nodes_to_exclude=list(options.nodes_to_exclude),
            per_channel=options.per_channel,
            reduce_range=options.reduce_range,
            activation_type=activation,
            weight_type=qtype.QInt8,
            calibrate_method=calibrate.CalibrationMethod.MinMax,
            calibration_cache_path=str(cache),
            extra_options={"ActivationSymmetric": options.activation_type == "int8", "WeightSymmetric": True},
        )
        return atomic_write_bytes(out_path, output.read_bytes())
