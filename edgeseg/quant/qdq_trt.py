"""``model.int8.onnx``: explicit-quantization (Q/DQ) ONNX for TensorRT (layer 2).

Written directly with onnx.helper from the calibrated ranges, following TensorRT's
placement rules for explicit quantization:

- symmetric int8, zero point 0 everywhere;
- weights of Conv / ConvTranspose / Gemm / MatMul(constant B): int8 initializer ->
  DequantizeLinear, one scale per output channel (Conv axis 0, ConvTranspose axis 1,
  Gemm axis 0 with transB else 1, MatMul last axis);
- activations per tensor, scale = amax / 127, Q/DQ on the data inputs of those ops and
  on the residual input(s) of Adds; never on outputs (TensorRT fuses BN/ReLU/Add);
- nothing directly around Resize (TensorRT has no INT8 Resize): a Resize output is
  never quantized and a DequantizeLinear never feeds a Resize;
- every quantized tensor keeps its own calibrated scale (``concat_scales="separate"``, the
  default; a Concat output's range spans its inputs', see ``effective_amax``): TensorRT
  accepts unequal scales on a Concat's inputs (it requantizes rather than
  removing the Concat). A shared maximum is what broke accuracy: backbone skips that also
  feed a decoder Concat took a ConvTranspose output's range, 7-31x coarser than their own.
  ``"shared"`` gives a Concat group one scale from the members' pooled ranges (the median
  amax: the widest member is clipped rather than every other member coarsened), for graphs
  where it is measured not to cost accuracy and the folded Concat is worth it.

Once a tensor is quantized, every consumer reads the DequantizeLinear output (except
Resize, graph outputs and kept-float nodes), so TensorRT sees one int8 tensor rather than
an int8 and a float copy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError, require
from ..onnx_model import MIN_QDQ_OPSET, metadata_of, opset_of, set_metadata
from ..trt_version import TrtVersion
from .ranges import Ranges, TensorRange

WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
CONCAT_SCALES = ("separate", "shared")  # how Concat groups are scaled (see the module docstring)
QDQ_METADATA_KEY = "edgeseg_quantization"
DEQUANTIZED = "_dequantized"  # suffix of the tensor a DequantizeLinear writes for tensor X
FIRST_CONV, CLASSIFIER = "first_conv", "classifier"  # aliases accepted in keep_fp_layers
COARSE_LIMIT = 2.0  # a shared scale may be at most this much coarser than a tensor's own (lint.COARSE_FACTOR)
MIN_AMAX = 1e-8  # a tensor that was constant 0 during calibration still needs a valid scale


WEIGHT_BITS = (8, 7)


def quantization_record(model: Any) -> dict[str, Any]:
    """edgeseg's ``edgeseg_quantization`` metadata of a Q/DQ file ({} for another quantizer's file)."""
    raw = metadata_of(model).get(QDQ_METADATA_KEY)
    try:
        record = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) else {}


def activation_scale(amax: float) -> np.float32:
    """TensorRT's per-tensor scale: amax / 127 in float32."""
    return np.float32(max(float(amax), MIN_AMAX)) / np.float32(127.0)


def weight_axis(node, rank: int) -> int:  # type: ignore[no-untyped-def]
    """The output-channel axis of a weight tensor of ``rank`` dims for its consumer op."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1  # weight is C_in x C_out/group x kH x kW
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return rank - 1  # MatMul: K x N, N = output features


@dataclass
class _Graph:
    """Indexes over an ONNX graph used while inserting Q/DQ."""

    producers: dict[str, Any]
    positions: dict[str, int]  # tensor -> index of the node that produces it
    consumers: dict[str, list[Any]]
    initializers: dict[str, Any]
    constants: set[str]
    outputs: set[str]

    @classmethod
    def of(cls, graph) -> _Graph:  # type: ignore[no-untyped-def]
        producers: dict[str, Any] = {}
        positions: dict[str, int] = {}
        consumers: dict[str, list[Any]] = {}
        constants = set()
        for position, node in enumerate(graph.node):
            for name in node.output:
                producers[name] = node
                positions[name] = position
            if node.op_type == "Constant":
                constants.update(node.output)
            for name in node.input:
                if name:
                    consumers.setdefault(name, []).append(node)
        initializers = {init.name: init for init in graph.initializer}
        outputs = {o.name for o in graph.output}
        return cls(producers, positions, consumers, initializers, constants | set(initializers), outputs)

    def producer_op(self, tensor: str) -> str | None:
        node = self.producers.get(tensor)
        return node.op_type if node is not None else None  # type: ignore[attr-defined]


def resolve_keep_fp_layers(model, names: Iterable[str]) -> list[str]:  # type: ignore[no-untyped-def]
    """Node names to keep in float; ``first_conv`` / ``classifier`` are resolved by graph position."""
    graph = model.graph
    convs = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]
    known = {n.name for n in graph.node}
    resolved = []
    for name in names:
        if name == FIRST_CONV and convs:
            resolved.append(convs[0].name)
        elif name == CLASSIFIER and convs:
            resolved.append(convs[-1].name)
        elif name in known:
            resolved.append(name)
        else:
            conv_names = [n.name for n in convs]
            shown = ", ".join(conv_names[:3] + ["..."] + conv_names[-2:]) if len(conv_names) > 5 else ", ".join(
                conv_names)
            raise ConfigError(
                f"keep_fp_layers names a node that is not in the model: {name!r}",
                expected=f"a node name ({shown}) or the aliases {FIRST_CONV!r}, {CLASSIFIER!r}",
                found=repr(name),
            )
    return sorted(set(resolved))


def quantized_layers(model, keep_fp_layers: Iterable[str] = ()) -> list[str]:  # type: ignore[no-untyped-def]
    """Names of the nodes that read int8 data in model.int8.onnx (graph order): the layers that
    ``keep_fp_layers`` can keep in float, one at a time (sensitivity) or a few (fallback)."""
    index = _Graph.of(model.graph)
    keep = set(resolve_keep_fp_layers(model, keep_fp_layers))
    return [node.name for node in model.graph.node if node.name not in keep and _activation_inputs(node, index)]


def _quantizable_weight(node, index: _Graph) -> str | None:  # type: ignore[no-untyped-def]
    if node.op_type not in WEIGHT_OPS or len(node.input) < 2:
        return None
    weight = node.input[1]
    init = index.initializers.get(weight)
    if init is None or init.data_type != 1:  # float32 initializers only (MatMul with a constant B)
        return None
    return weight


def _activation_inputs(node, index: _Graph) -> list[str]:  # type: ignore[no-untyped-def]
    """Data inputs of ``node`` that should be quantized under TensorRT's placement rules."""
    if node.op_type in WEIGHT_OPS:
        if node.op_type in ("Gemm", "MatMul") and _quantizable_weight(node, index) is None:
            return []  # activation x activation (attention): TensorRT keeps it in float
        data = node.input[0]
        if data in index.constants or index.producer_op(data) == "Resize":
            return []
        return [data]
    if node.op_type == "Add":
        live = [t for t in node.input if t and t not in index.constants]
        if len(live) < 2:  # a bias add, not a residual
            return []
        fused_by_trt = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
        if not any(index.producer_op(t) in fused_by_trt for t in live):
            # no convolution on either side (HRNet's Add -> Add chains): TensorRT has no Conv + Add to fuse, so
            # a Q/DQ here would only round (ModelOpt's build_non_residual_input_map requires one, too)
            return []
        residual = [t for t in live if index.producer_op(t) not in fused_by_trt]
        if not residual:  # two conv outputs: TensorRT fuses one, the other is the residual
            residual = live[1:]
        return [t for t in residual if index.producer_op(t) != "Resize"]
    return []


def effective_amax(graph: Any, ranges: Ranges) -> dict[str, float]:
    """Each tensor's own amax, except that a Concat output spans its inputs' ranges: it *is* their values,
    and an entropy threshold computed on it follows the majority input and clips the others away (a
    resized ASPP branch beside a low-level projection). Inputs keep their own ranges. Works on the float
    graph and on the Q/DQ one (a Concat there reads ``X_dequantized``, which is ``X``)."""
    return {name: r.amax for name, r in concat_spanning_ranges(graph, ranges).items()}


def _concat_groups(graph, index: _Graph, ranges: Ranges) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Union-find over float Concat inputs/outputs: tensor -> group representative."""
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        parent.setdefault(name, name)
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for node in graph.node:
        if node.op_type != "Concat":
            continue
        members = [t for t in (*node.input, *node.output) if t in ranges.tensors]
        for member in members[1:]:
            parent[find(member)] = find(members[0])
    return {name: find(name) for name in parent}


def concat_shared_ranges(model, ranges: Ranges) -> dict[str, TensorRange]:  # type: ignore[no-untyped-def]
    """Ranges where every Concat input/output group spans the union of its members' ranges.

    Entropy thresholds of a Concat output follow its most common values; when one input
    has a much wider range than the others (a resized ASPP branch beside a low-level
    projection) the output's threshold would clip that input away. The union keeps it.
    """
    groups = _concat_groups(model.graph, _Graph.of(model.graph), ranges)
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for tensor, root in groups.items():
        low[root] = min(low.get(root, 0.0), ranges.tensors[tensor].min)
        high[root] = max(high.get(root, 0.0), ranges.tensors[tensor].max)
    shared = dict(ranges.tensors)
    for tensor, root in groups.items():
        shared[tensor] = TensorRange(low[root], high[root], max(abs(low[root]), abs(high[root])))
    return shared


def concat_spanning_ranges(graph: Any, ranges: Ranges) -> dict[str, TensorRange]:
    """Every tensor's own range, except that a Concat output spans its inputs' (min, max and amax; see
    ``effective_amax``). Works on the float graph and on the Q/DQ one."""
    spanning = dict(ranges.tensors)
    quantized_from = {}  # a DequantizeLinear's output -> the float tensor its QuantizeLinear read
    quantize_input = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    for n in graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in quantize_input:
            quantized_from[n.output[0]] = quantize_input[n.input[0]]
    for node in graph.node:  # graph order: a Concat of Concats sees its inputs' widened ranges
        out = node.output[0] if node.op_type == "Concat" else None
        if out in spanning:
            names = [quantized_from.get(name, name[:-len(DEQUANTIZED)] if name.endswith(DEQUANTIZED) else name)
                     for name in node.input]
            members = [spanning[name] for name in (*names, out) if name in spanning]
            spanning[out] = TensorRange(min(r.min for r in members), max(r.max for r in members),
                                        max(r.amax for r in members))
    return spanning


def _weight_dequantize(weight, axis: int | None, onnx,  # type: ignore[no-untyped-def]
                       bits: int = 8) -> tuple[list[object], list[object]]:
    """int8 weights and their DequantizeLinear: one scale per channel on ``axis``, or one per tensor (None);
    symmetric in ``bits`` bits (8: [-127, 127]; 7: [-63, 63], still stored as int8)."""
    numpy_helper = onnx.numpy_helper
    values = numpy_helper.to_array(weight).astype(np.float32)
    qmax = np.float32(2 ** (bits - 1) - 1)
    if axis is None:
        amax_all = np.float32(np.abs(values).max()) if values.size else np.float32(0.0)
        scale = np.array(amax_all / qmax if amax_all > 0 else np.float32(1.0), np.float32)
        quantized = np.clip(np.round(values / scale), -qmax, qmax).astype(np.int8)
        axis_attr: dict[str, int] = {}
    else:
        moved = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
        amax = np.abs(moved).max(axis=1)
        scale = np.where(amax > 0, amax / qmax, np.float32(1.0)).astype(np.float32)
        shape = [1] * values.ndim
        shape[axis] = -1
        quantized = np.clip(np.round(values / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
        axis_attr = {"axis": axis}
    name = weight.name
    inits = [
        numpy_helper.from_array(quantized, f"{name}_quantized"),
        numpy_helper.from_array(scale, f"{name}_scale"),
        numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_zero_point"),
    ]
    node = onnx.helper.make_node(
        "DequantizeLinear", [f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"], [f"{name}{DEQUANTIZED}"],
        name=f"{name}_DequantizeLinear", **axis_attr,
    )
    return inits, [node]


def quantize_for_tensorrt(
    model,  # onnx.ModelProto (float, as exported)
    ranges: Ranges,
    *,
    keep_fp_layers: Sequence[str] = (),
    concat_scales: str = "separate",
    trt_version: str | None = None,
    weight_bits: int = 8,
    scales: Mapping[str, float] | None = None,
):  # -> onnx.ModelProto
    """Insert Q/DQ nodes for TensorRT explicit quantization; returns a new model. ``trt_version`` (default
    DEFAULT_TRT_VERSION) picks what the placement may rely on: on 8.x no Q/DQ around Resize and per-tensor
    ConvTranspose weights; on >= 10 Resize inputs fed by convolutions are quantized (see ``_fusion_placement``).
    ``weight_bits``: 8 for TensorRT; 7 writes the same placement and activation scales with weights in
    [-63, 63] (OpenVINO's file on a CPU without VNNI: ``qdq_ov``). ``scales``: activation scale initializer
    name -> value, in place of the calibrated one (the scales QAT trained; every name must be one this placement
    writes, so a QAT model and this writer cannot drift apart unnoticed)."""
    if weight_bits not in WEIGHT_BITS:
        raise ConfigError("unsupported weight bit width", expected=" | ".join(map(str, WEIGHT_BITS)),
                          found=repr(weight_bits))
    if concat_scales not in CONCAT_SCALES:
        raise ConfigError("unknown Concat scale policy", expected=" | ".join(CONCAT_SCALES), found=repr(concat_scales))
    onnx = require("onnx", purpose="writing Q/DQ models")
    trained = dict(scales or {})
    if opset_of(model) < MIN_QDQ_OPSET:
        raise ArtifactError(
            "the ONNX model's opset is too old for per-channel Q/DQ",
            expected=f"opset >= {MIN_QDQ_OPSET}",
            found=f"opset {opset_of(model)}",
            fix="re-export with edgeseg export (opset 17)",
        )
    from .trt_cache import DEFAULT_TRT_VERSION  # trt_cache imports this module

    version = TrtVersion.parse(trt_version or DEFAULT_TRT_VERSION)
    model = onnx.ModelProto.FromString(model.SerializeToString())  # never modify the caller's model
    index = _Graph.of(model.graph)
    keep = set(resolve_keep_fp_layers(model, keep_fp_layers))
    activations, weights = _quantized_tensors(model.graph, index, keep, ranges)
    amax = effective_amax(model.graph, ranges)
    placement = _fusion_placement(model.graph, index, keep, activations, version, concat_scales, amax)
    activations = activations + [t for t in placement.activations if t not in activations]
    if version.major < 10:  # TensorRT 8.x: no per-output-channel deconvolution weights (TensorRT#2380)
        for node in model.graph.node:
            if node.op_type == "ConvTranspose" and node.input[1] in weights:
                weights[node.input[1]] = None
    _check_covered(activations + [source for _, _, source in placement.edges], ranges)
    scales = _activation_scales(model.graph, index, ranges, activations, concat_scales, placement.scale_of)
    edges = [(tensor, consumer, activation_scale(amax[source])) for tensor, consumer, source in placement.edges]
    _insert_qdq(model.graph, index, keep, activations, weights, scales, onnx, edges=edges,
                resize_inputs=placement.resize_inputs, weight_bits=weight_bits, scale_overrides=trained)
    set_metadata(model, {QDQ_METADATA_KEY: json.dumps({
        "format": "qdq-tensorrt", "method": ranges.method, "keep_fp_layers": sorted(keep),
        "concat_scales": concat_scales, "trt_version": str(version),
        "deconv_weights": "per-tensor" if version.major < 10 else "per-channel",
        "activations": len(activations), "edges": len(edges), "weights": len(weights),
        **({"weight_bits": weight_bits} if weight_bits != 8 else {}),
        **({"trained_scales": len(trained)} if trained else {})}, sort_keys=True)})
    return model


@dataclass
class _Placement:
    """What TensorRT-fusion placement adds on top of the per-layer rules (``_fusion_placement``)."""

    activations: list[str]  # more tensors read through Q/DQ by every consumer
    scale_of: dict[str, str]  # tensor -> the tensor whose range sets its scale (default: its own)
    edges: list[tuple[str, str, str]]  # (tensor, consumer node, scale source): Q/DQ on that one edge only
    resize_inputs: set[str]  # Resize inputs read through their Q/DQ (TensorRT >= 10)


def _fusion_placement(graph: Any, index: _Graph, keep: set[str], activations: Sequence[str], version: TrtVersion,
                      concat_scales: str, amax: dict[str, float] | None = None) -> _Placement:
    """Q/DQ that let TensorRT fuse around the layers that have no weights (issue #29; sources in trt_fusion.py):

    - AveragePool: Q/DQ on its input and output (a quantizable layer: it fuses its input DQ and output Q);
    - MaxPool: Q/DQ on its input at its output's scale (max commutes with quantization at one scale, so the
      numbers do not change; the producer, the stem conv, then writes int8);
    - TensorRT >= 10: Q/DQ on Resize inputs fed by a convolution (+ ReLU), as ModelOpt places them; 8.x's parser
      runs Resize in FP32/FP16 only, so nothing goes around it there;
    - Concat read only through data movement (ShuffleNet's channel shuffle and split): one scale, the Concat
      output's, on its input edges and the quantized tensors the movement leads to (``_shuffle_groups``);
    - Concat followed by a ReLU whose output is quantized (the MDSPP decoder): Q/DQ on each input edge at that
      tensor's scale, the inputs' own Q/DQ into other layers kept. Q commutes with Concat and ReLU at zero point 0, so
      the values are those the output's Q/DQ already gives; TensorRT gets equal-scale inputs and an INT8 Concat.
    """
    quantized = set(activations)
    added: list[str] = []
    scale_of: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    resize_inputs: set[str] = set()

    def add(tensor: str) -> None:
        if tensor not in quantized and tensor not in index.constants:
            quantized.add(tensor)
            added.append(tensor)

    def readers_take_dq(tensor: str) -> bool:
        """Every reader of ``tensor`` would read the dequantized copy (so its values are the quantized ones)."""
        readers = index.consumers.get(tensor, [])
        return bool(readers) and tensor not in index.outputs and all(
            r.name not in keep and (r.op_type != "Resize" or version.major >= 10) for r in readers)

    for node in graph.node:
        if node.name in keep:
            continue
        if node.op_type == "AveragePool":
            data, out = node.input[0], node.output[0]
            if index.producer_op(data) != "Resize" or version.major >= 10:
                add(data)
            if readers_take_dq(out):
                add(out)
        elif node.op_type == "Resize" and version.major >= 10:
            data = node.input[0]
            producer = index.producers.get(data)
            if producer is not None and producer.op_type in ("Relu", "Clip"):
                producer = index.producers.get(producer.input[0])
            feeds_output = node.output[0] in index.outputs  # never round the logits before the final upsampling
            if producer is not None and producer.op_type in WEIGHT_OPS and len(index.consumers.get(data, [])) == 1 \
                    and not feeds_output:
                add(data)
                resize_inputs.add(data)
    for node in graph.node:  # MaxPool after the others: its output may have just been quantized
        if node.op_type == "MaxPool" and node.name not in keep:
            data, out = node.input[0], node.output[0]
            if out in quantized and data not in quantized and len(index.consumers.get(data, [])) == 1 \
                    and index.producer_op(data) != "Resize":
                add(data)
                scale_of[data] = out
    if concat_scales == "separate":
        for node in graph.node:
            if node.op_type != "Concat" or node.name in keep:
                continue
            after = node.output[0]
            readers = index.consumers.get(after, [])
            if len(readers) == 1 and readers[0].op_type == "Relu" and readers[0].name not in keep \
                    and after not in index.outputs:
                after = readers[0].output[0]
            else:
                # a Q right after the Concat: TensorRT moves it onto the inputs itself (and ONNX Runtime would fuse
                # DQ -> Concat -> Q into a QLinearConcat, which takes no float16 scales: the FP16-region file)
                continue
            if after not in quantized or not readers_take_dq(after):
                continue
            inputs = [(i, t) for i, t in enumerate(node.input) if t and t not in index.constants]
            if version.major < 10 and any(index.producer_op(t) == "Resize" for _, t in inputs):
                continue  # no Q right after a Resize on 8.x: the Concat stays as it is
            edges += [(t, node.name, after) for _, t in inputs]
        if amax is not None:
            edges += _shuffle_groups(graph, index, keep, quantized, amax, scale_of)
    return _Placement(added, scale_of, edges, resize_inputs)


MOVEMENT_OPS = ("Reshape", "Transpose", "Slice", "Split", "Flatten", "Squeeze", "Unsqueeze")


def _shuffle_groups(graph: Any, index: _Graph, keep: set[str], quantized: set[str], amax: dict[str, float],
                    scale_of: dict[str, str]) -> list[tuple[str, str, str]]:
    """A Concat read only through data movement (ShuffleNet's concat -> channel shuffle -> channel split): one
    scale, the Concat output's, on its input edges and on every quantized tensor the movement leads to, so that
    TensorRT moves the DQ forward over the Concat and the shuffle (equal scales) and the split halves reach the
    next convolutions as int8, with no Q kernel of their own. Applied only where no such tensor's own range is
    less than half the Concat's (its scale at most 2x coarser: the lint's limit)."""
    edges: list[tuple[str, str, str]] = []
    for node in graph.node:
        out = node.output[0] if node.op_type == "Concat" else None
        if out is None or node.name in keep or out in index.outputs or out not in amax:
            continue
        readers = index.consumers.get(out, [])
        if not readers or any(r.op_type not in MOVEMENT_OPS or r.name in keep for r in readers):
            continue
        reached: list[str] = []
        frontier = [out]
        while frontier:
            tensor = frontier.pop()
            for reader in index.consumers.get(tensor, []):
                if reader.op_type in MOVEMENT_OPS and reader.name not in keep:
                    frontier += [o for o in reader.output if o not in index.outputs]
                    reached += [o for o in reader.output if o in quantized]
        if not reached or any(t in scale_of or amax.get(t, 0.0) * COARSE_LIMIT < amax[out] for t in reached):
            continue
        inputs = [t for t in node.input if t and t not in index.constants]
        if any(index.producer_op(t) == "Resize" for t in inputs):
            continue
        for tensor in reached:
            scale_of[tensor] = out
        edges += [(t, node.name, out) for t in inputs]
    return edges


def _check_covered(tensors: Sequence[str], ranges: Ranges) -> None:
    missing = [t for t in dict.fromkeys(tensors) if t not in ranges.tensors]
    if missing:
        raise ArtifactError(
            "the ranges do not cover every tensor that needs a scale",
            found=f"{len(missing)} missing, e.g. {', '.join(missing[:3])}",
            fix="the ranges come from another model: recalibrate with edgeseg calibrate",
        )


def _quantized_tensors(graph: Any, index: _Graph, keep: set[str], ranges: Ranges
                       ) -> tuple[list[str], dict[str, int | None]]:
    """The activations that get Q/DQ (in graph order) and the weights, each with its channel axis."""
    activations: list[str] = []
    weights: dict[str, int | None] = {}
    for node in graph.node:
        if node.name in keep:
            continue
        for tensor in _activation_inputs(node, index):
            if tensor not in activations:
                activations.append(tensor)
        weight = _quantizable_weight(node, index)
        if weight is not None and node.input[0] in activations:
            axis = weight_axis(node, len(index.initializers[weight].dims))
            if weights.setdefault(weight, axis) != axis:
                raise ArtifactError(f"weight {weight} is shared by ops that need different quantization axes")
    _check_covered(activations, ranges)
    return activations, weights


def _activation_scales(graph: Any, index: _Graph, ranges: Ranges, activations: Sequence[str],
                       concat_scales: str, scale_of: dict[str, str] | None = None) -> dict[str, np.float32]:
    """One scale per quantized tensor: its own amax (or that of ``scale_of[tensor]``), or with ``shared`` its
    Concat group's pooled amax."""
    scale_of = scale_of or {}
    if concat_scales == "separate":
        amax = effective_amax(graph, ranges)
        return {tensor: activation_scale(amax[scale_of.get(tensor, tensor)]) for tensor in activations}
    groups = _concat_groups(graph, index, ranges)
    members: dict[str, list[float]] = {}
    for tensor, root in groups.items():
        members.setdefault(root, []).append(ranges.amax(tensor))
    pooled = {root: float(np.median(values)) for root, values in members.items()}
    return {tensor: activation_scale(pooled[groups[tensor]] if tensor in groups
                                     else ranges.amax(scale_of.get(tensor, tensor)))
            for tensor in activations}


def _insert_qdq(graph: Any, index: _Graph, keep: set[str], activations: Sequence[str],
                weights: dict[str, int | None], scales: dict[str, np.float32], onnx: Any, *,
                edges: Sequence[tuple[str, str, np.float32]] = (), resize_inputs: Iterable[str] = (),
                weight_bits: int = 8, scale_overrides: Mapping[str, float] | None = None) -> None:
    """Q/DQ right after each producer (graph inputs: first); consumers read the dequantized tensor. ``edges``:
    (tensor, consumer node, scale): a Q/DQ of its own on that one edge (``{tensor}_to_{consumer}``)."""
    new_inits: list[object] = []
    prologue: list[object] = []
    qdq_after: dict[int, list[object]] = {}
    dequantized: dict[str, str] = {}
    edge_reads: dict[tuple[str, str], str] = {}
    resize_reads = set(resize_inputs)
    pairs = [(tensor, tensor, scales[tensor]) for tensor in activations]
    for tensor, consumer, scale in edges:
        base = f"{tensor}_to_{consumer.strip('/').replace('/', '_')}"
        pairs.append((tensor, base, scale))
        edge_reads[(consumer, tensor)] = f"{base}{DEQUANTIZED}"
    overrides = dict(scale_overrides or {})
    unknown = sorted(set(overrides) - {f"{base}_scale" for _, base, _ in pairs})
    if unknown:
        raise ArtifactError("the given activation scales name Q/DQ pairs this placement does not write",
                            found=f"{len(unknown)}, e.g. {', '.join(unknown[:3])}",
                            fix="the scales come from another model or placement: fine-tune again with "
                                "edgeseg qat")
    for tensor, base, scale in pairs:
        scale_name, zero_name = f"{base}_scale", f"{base}_zero_point"
        scale = np.float32(overrides.get(scale_name, scale))
        new_inits += [onnx.numpy_helper.from_array(np.array(scale, np.float32), scale_name),
                      onnx.numpy_helper.from_array(np.array(0, np.int8), zero_name)]
        nodes = [
            onnx.helper.make_node("QuantizeLinear", [tensor, scale_name, zero_name], [f"{base}_quantized"],
                                  name=f"{base}_QuantizeLinear"),
            onnx.helper.make_node("DequantizeLinear", [f"{base}_quantized", scale_name, zero_name],
                                  [f"{base}{DEQUANTIZED}"], name=f"{base}_DequantizeLinear"),
        ]
        position = index.positions.get(tensor)
        if position is None:
            prologue += nodes
        else:
            qdq_after.setdefault(position, []).extend(nodes)
        if base == tensor:
            dequantized[tensor] = f"{tensor}{DEQUANTIZED}"
    for weight, axis in weights.items():
        inits, nodes = _weight_dequantize(index.initializers[weight], axis, onnx, weight_bits)
        new_inits += inits
        prologue += nodes
        dequantized[weight] = f"{weight}{DEQUANTIZED}"
    rewired = []
    for position, original in enumerate(graph.node):
        node = onnx.NodeProto()
        node.CopyFrom(original)  # the originals are cleared from the graph below
        if node.name not in keep and (node.op_type != "Resize" or node.input[0] in resize_reads):
            for i, name in enumerate(node.input):
                if (node.name, name) in edge_reads:
                    node.input[i] = edge_reads[(node.name, name)]
                elif node.op_type == "Resize" and i > 0:
                    continue  # roi / scales / sizes stay as they are
                elif name in dequantized and (name not in weights or node.op_type in WEIGHT_OPS):
                    node.input[i] = dequantized[name]
        rewired.append(node)
        rewired.extend(qdq_after.get(position, []))
    del graph.node[:]
    graph.node.extend(prologue + rewired)
    drop_unused_initializers(graph)
    graph.initializer.extend(new_inits)  # type: ignore[arg-type]


def drop_unused_initializers(graph: Any) -> None:
    """Remove the initializers no node of ``graph`` reads any more (after a rewrite of its nodes)."""
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    copies = []
    for init in kept:  # protobuf repeated fields: copy before clearing the container
        copies.append(type(init)())
        copies[-1].CopyFrom(init)
    del graph.initializer[:]
    graph.initializer.extend(copies)
