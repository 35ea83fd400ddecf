"""Q/DQ lint: does a quantized ONNX follow TensorRT's explicit-quantization rules? (layer 2)

``lint_qdq(model)`` returns every issue found (rule id, node, message); ``check_qdq``
raises an ArtifactError listing them. Rules (see qdq_trt.py for why):

  zero-point     every Q/DQ zero point is 0
  int8-type      every Q/DQ works on int8 (not uint8, int16, float8)
  weight-axis    weights are per-channel on the op's output-channel axis
  per-tensor     activation scales are per tensor (scalars)
  missing-qdq    Conv/ConvTranspose/Gemm read their data and weight inputs through DQ
                 (except kept-float nodes and convs fed by a Resize)
  resize         no DQ feeds a Resize and no Q reads a Resize output
  coarse-scale   (with ranges) no activation scale is more than 2x coarser than the
                 tensor's own calibrated range; unequal scales around a Concat are fine
  unsupported-op no QLinearConv/ConvInteger/MatMulInteger/... (TensorRT cannot run them)
  no-qdq         the model has Q/DQ at all

The Resize and ConvTranspose rules follow the TensorRT the file was written for (its ``edgeseg_quantization``
metadata; another quantizer's file gets the 8.x rules): 8.x runs Resize in FP32/FP16 only and has no
per-output-channel deconvolution weights (TensorRT#2380); >= 10 may read Resize inputs through DQ.
``qdq_warnings`` adds what is legal but only costs: round-trip (a Q/DQ no INT8 layer reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError, require
from ..trt_version import TrtVersion
from .qdq_trt import effective_amax, quantization_record, weight_axis

UNSUPPORTED_OPS = ("QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "QLinearAdd", "QLinearMul",
                   "QLinearConcat", "QLinearSigmoid", "QLinearAveragePool", "QLinearGlobalAveragePool",
                   "QLinearLeakyRelu", "DynamicQuantizeLinear", "QGemm")
CHECKED_OPS = ("Conv", "ConvTranspose", "Gemm")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
COARSE_FACTOR = 2.0  # a scale this much coarser than the tensor's own range is an error
INT8 = 3  # onnx.TensorProto.INT8


@dataclass(frozen=True)
class LintIssue:
    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.node}: {self.message}"


class _Index:
    def __init__(self, model: Any) -> None:
        onnx = require("onnx", purpose="checking Q/DQ models")
        self.numpy_helper = onnx.numpy_helper
        graph = model.graph
        self.inits = {i.name: i for i in graph.initializer}
        self.constants: dict[str, Any] = {}
        self.producers: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.output:
                self.producers[name] = node
            if node.op_type == "Constant":
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = value
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)

    def array(self, name: str) -> np.ndarray | None:
        tensor = self.inits.get(name, self.constants.get(name))
        return None if tensor is None else self.numpy_helper.to_array(tensor)

    def elem_type(self, name: str) -> int | None:
        tensor = self.inits.get(name, self.constants.get(name))
        return None if tensor is None else int(tensor.data_type)

    def producer(self, name: str) -> Any:
        return self.producers.get(name)


def _kept_float(model: Any) -> set[str]:
    return set(quantization_record(model).get("keep_fp_layers", []))


def _trt_major(model: Any) -> int | None:
    """The TensorRT generation edgeseg wrote the file for (None: another quantizer's file: the 8.x rules)."""
    written = quantization_record(model).get("trt_version")
    try:
        return TrtVersion.parse(str(written)).major if written else None
    except ConfigError:
        return None


def _check_qdq_node(node: Any, index: _Index, issues: list[LintIssue]) -> None:
    name = node.name or node.output[0]
    zero = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zero is None:
        # no zero point: QuantizeLinear defaults to uint8; DequantizeLinear takes its input's type
        source_type = index.elem_type(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if source_type != INT8:
            issues.append(LintIssue("int8-type", name, "no int8 zero point: the type defaults to uint8"))
        return
    zero_type, zero_value = index.elem_type(zero), index.array(zero)
    if zero_type is not None and zero_type != INT8:
        issues.append(LintIssue("int8-type", name, f"zero point {zero} is not int8 (ONNX type {zero_type})"))
    if zero_value is None:
        issues.append(LintIssue("zero-point", name, f"zero point {zero} is not a constant"))
    elif np.any(zero_value != 0):
        issues.append(LintIssue("zero-point", name, f"zero point {zero} is not 0 (symmetric quantization)"))


def _constant_weight(name: str, index: _Index) -> bool:
    """A constant, possibly behind a DequantizeLinear (and a QuantizeLinear)."""
    for _ in range(3):
        if index.array(name) is not None:
            return True
        node = index.producer(name)
        if node is None or node.op_type not in QDQ_OPS:
            return False
        name = node.input[0]
    return False


def _scale(node: Any, index: _Index) -> np.ndarray | None:
    return index.array(node.input[1]) if len(node.input) > 1 else None


def _check_weights(node: Any, index: _Index, issues: list[LintIssue], trt_major: int | None = None) -> None:
    """The weight input of a Conv/ConvTranspose/Gemm: DQ of an int8 (or Q'd float) constant, per channel."""
    weight_name = node.input[1]
    dq = index.producer(weight_name)
    if dq is None or dq.op_type != "DequantizeLinear":
        issues.append(LintIssue("missing-qdq", node.name,
                                f"weight {weight_name} is not read through a DequantizeLinear"))
        return
    source = dq.input[0]
    raw = index.array(source)
    if raw is None:  # float weight -> Q -> DQ (fake quantization) is fine too
        q = index.producer(source)
        raw = index.array(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
    if raw is None:
        issues.append(LintIssue("missing-qdq", node.name, f"weight {weight_name} is not a constant"))
        return
    axis = weight_axis(node, raw.ndim)
    scale = _scale(dq, index)
    dq_axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if node.op_type == "ConvTranspose" and trt_major is not None and trt_major < 10:
        # TensorRT 8.x has no per-output-channel deconvolution weights (NVIDIA in TensorRT#2380; wrong results
        # in #1694): one scale per tensor, or per input channel (axis 0)
        if scale is not None and scale.size > 1 and dq_axis % raw.ndim != 0:
            issues.append(LintIssue("weight-axis", dq.name, f"ConvTranspose {node.name} has per-output-channel "
                                                             f"weights (axis {dq_axis}); TensorRT 8.x cannot run "
                                                             "them (TensorRT#2380): use per-tensor or axis 0"))
        return
    if node.op_type == "ConvTranspose" and scale is not None and scale.size == 1:
        return  # per-tensor deconvolution weights: valid on every TensorRT (what 8.x needs)
    if scale is None or scale.ndim == 0 or scale.size == 1 and raw.shape[axis] != 1:
        issues.append(LintIssue("weight-axis", dq.name, f"weights of {node.name} are per-tensor; expected per-channel "
                                                         f"on axis {axis}"))
    elif dq_axis % raw.ndim != axis or scale.size != raw.shape[axis]:
        issues.append(LintIssue("weight-axis", dq.name, f"weights of {node.op_type} {node.name} quantized on axis "
                                                         f"{dq_axis} with {scale.size} scales; expected axis {axis} "
                                                         f"with {raw.shape[axis]}"))


def lint_qdq(model: Any, *, keep_fp_layers: set[str] | None = None, ranges: Any = None) -> list[LintIssue]:
    """Every rule violation in a Q/DQ model (empty list: the model follows the rules).

    With ``ranges`` (the calibration's ``Ranges``) an activation whose scale is more than
    COARSE_FACTOR x coarser than its own calibrated range is flagged: it runs on a few int8
    levels (the shared-Concat-scale failure).
    """
    index = _Index(model)
    keep = _kept_float(model) if keep_fp_layers is None else set(keep_fp_layers)
    # each tensor's own range as the quantizer sees it (a Concat output spans its inputs)
    own_amax = effective_amax(model.graph, ranges) if ranges is not None else None
    issues: list[LintIssue] = []
    nodes = list(model.graph.node)
    trt_major = _trt_major(model)
    int8_resize = trt_major is not None and trt_major >= 10  # written for TensorRT >= 10: Resize may read int8
    if not any(n.op_type in QDQ_OPS for n in nodes):
        issues.append(LintIssue("no-qdq", "(graph)", "the model has no QuantizeLinear/DequantizeLinear nodes"))
    for node in nodes:
        name = node.name or node.output[0]
        if node.op_type in UNSUPPORTED_OPS:
            issues.append(LintIssue("unsupported-op", name, f"{node.op_type} cannot be built by TensorRT; use Q/DQ"))
        elif node.op_type in QDQ_OPS:
            _check_qdq_node(node, index, issues)
            scale = _scale(node, index)
            is_weight = index.array(node.input[0]) is not None
            if not is_weight and scale is not None and scale.size != 1:
                issues.append(LintIssue("per-tensor", name, f"activation scale has {scale.size} values; expected 1"))
            if node.op_type == "QuantizeLinear" and not is_weight and own_amax is not None:
                _check_coarse(node, scale, own_amax, issues, index)
            if int8_resize:
                pass  # TensorRT >= 10 runs Resize on int8 (ModelOpt places Q/DQ on its inputs); 8.x does not
            elif node.op_type == "QuantizeLinear" and (index.producer(node.input[0]) or node).op_type == "Resize":
                issues.append(LintIssue("resize", name, "QuantizeLinear directly after a Resize"))
            elif node.op_type == "DequantizeLinear" and any(
                    c.op_type == "Resize" for c in index.consumers.get(node.output[0], [])):
                issues.append(LintIssue("resize", name, "DequantizeLinear directly feeding a Resize"))
        elif node.op_type in CHECKED_OPS and name not in keep:
            data = index.producer(node.input[0])
            if data is not None and data.op_type == "Resize":
                continue  # left in float on purpose: no Q/DQ after a Resize
            if node.op_type == "Gemm" and not _constant_weight(node.input[1], index):
                continue  # activation x activation: not a weight layer
            if data is None or data.op_type != "DequantizeLinear":
                issues.append(LintIssue("missing-qdq", name, f"data input {node.input[0]} is not read through a "
                                                             "DequantizeLinear"))
            _check_weights(node, index, issues, trt_major)
    return issues


def qdq_warnings(model: Any, *, trt_version: str | None = None) -> list[LintIssue]:
    """What TensorRT can build but only costs (warnings, never errors): a Q/DQ round trip that no INT8 layer
    reads, found by the fusion prediction (quant/trt_fusion.py) for ``trt_version`` (default: the TensorRT the
    file was written for)."""
    from .trt_fusion import predict_fusion, written_for

    prediction = predict_fusion(model, trt_version or written_for(model))
    return [LintIssue("round-trip", tensor, "quantized and dequantized but no INT8 layer reads it: rounding "
                                            f"with no INT8 kernel (TensorRT {prediction.trt_version}, predicted)")
            for tensor in prediction.round_trips]


def _check_coarse(node: Any, scale: np.ndarray | None, own_amax: dict[str, float], issues: list[LintIssue],
                  index: _Index | None = None) -> None:
    """A Q/DQ scale far coarser than the tensor's own calibrated range wastes most int8 levels."""
    tensor = node.input[0]
    if scale is None or scale.size != 1 or tensor not in own_amax:
        return
    if index is not None:
        readers = [c for dq in index.consumers.get(node.output[0], [])
                   for c in index.consumers.get(dq.output[0], [])]
        pools = [c for c in readers if c.op_type == "MaxPool"]
        if readers and len(pools) == len(readers) and pools[0].output[0] in own_amax:
            tensor = pools[0].output[0]  # quantized at the MaxPool output's scale: max commutes with Q
        concats = [c for c in readers if c.op_type == "Concat"]
        if readers and len(concats) == len(readers):
            # a Q/DQ on a Concat input edge at the scale of the tensor after the Concat: those values are
            # quantized at that scale anyway (Q commutes with Concat), so compare with the Concat's range
            tensor = concats[0].output[0]
            if tensor not in own_amax:
                return
    own = float(own_amax[tensor])
    used = float(np.asarray(scale).ravel()[0]) * 127.0
    if own > 0 and used > COARSE_FACTOR * own:
        issues.append(LintIssue("coarse-scale", node.name or tensor,
                                f"scale covers +/-{used:.4g} but {tensor}'s calibrated range is +/-{own:.4g} "
                                f"({used / own:.1f}x coarser: about {127 * own / used:.0f} of 127 levels used)"))


def check_qdq(model: Any, *, source: str = "model.int8.onnx", keep_fp_layers: set[str] | None = None,
              ranges: Any = None) -> None:
    """Raise an ArtifactError listing every lint issue (nothing when the model is clean)."""
    issues = lint_qdq(model, keep_fp_layers=keep_fp_layers, ranges=ranges)
    if issues:
        shown = "\n    ".join(str(i) for i in issues[:20])
        more = f"\n    ... and {len(issues) - 20} more" if len(issues) > 20 else ""
        coarse = any(i.rule == "coarse-scale" for i in issues)
        raise ArtifactError(
            f"{source} breaks TensorRT's Q/DQ rules ({len(issues)} issue(s))",
            found=f"\n    {shown}{more}",
            fix=("calibrate with --concat-scales separate (the default): a shared Concat scale is too coarse for "
                 "this model" if coarse else
                 "regenerate it with edgeseg calibrate (QLinear*/uint8 models come from other quantizers)"),
        )
