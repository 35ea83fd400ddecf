"""FP16 float regions in the Q/DQ model for TensorRT (layer 2: onnx, lazily).

TensorRT 10 builds a Q/DQ network strongly typed and TensorRT 11 always does: every layer outside a Q/DQ
pair (Resize, Concat, pooling, the classifier) runs in the type its ONNX tensors carry. Written as
exported, those regions are float32 and run FP32. NVIDIA's own tools write them in FP16 (ModelOpt's
``--high_precision_dtype fp16``), and so does ``convert_float_regions``:

- every float op outside the Q/DQ arithmetic computes in float16: its float initializers become float16
  copies and its float outputs are float16;
- QuantizeLinear reads float16 and DequantizeLinear writes float16, so their scale is float16 (opset 19
  allows float16 scales; ONNX ties Q's scale type to its input and DQ's output type to its scale). Each
  scale is the float32 file's scale rounded to the nearest float16 (a relative change below 2**-11), the
  only change to the quantization: the int8 weights, zero points, axes and placement are the float32
  file's, and a DequantizeLinear still feeds each quantized op directly (no Cast in between), so
  TensorRT fuses the same Q/DQ pairs;
- the graph input and output stay float32 (what the runtime feeds and reads): a Cast to float16 after
  the input and a Cast to float32 before the output;
- a tensor whose calibrated range (ranges.json's observed min/max, not the clipped amax) exceeds
  ``FP16_LIMIT`` stays float32, and so do the ops that read or write it (its Q/DQ too), with Casts
  where float16 and float32 regions meet; ``Fp16Report.fp32_tensors`` names them. A DequantizeLinear
  writes the type its readers compute in (a float32 twin serves the float32 readers when both kinds read
  it), so a Cast never separates it from the op it quantizes;
- inputs an op's schema types as float32 whatever the data type (Resize's scales) stay float32.

The model's opset is raised to 19 (``onnx.version_converter``) for the float16 scales. TensorRT 8.5's
parser stops at opset 17 and 8.5 builds are not strongly typed, so the TensorRT 8.5 target keeps float32
regions and the builder sets FP16 beside INT8 instead (``engine/versions.py``). ONNX Runtime's CPU
provider runs the float16 file (it casts ops without a float16 kernel to float32 and back), which is how
the build scores it against PyTorch; that TensorRT accepts it is not yet verified on hardware.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.config import HIGH_PRECISIONS  # --high-precision: the type of the float regions of model.int8.onnx
from ..errors import ArtifactError, ConfigError, require
from ..onnx_model import metadata_of, opset_of, set_metadata
from ..trt_version import TrtVersion
from .qdq_trt import DEQUANTIZED, QDQ_METADATA_KEY, drop_unused_initializers, quantization_record
from .ranges import Ranges

DEFAULT_HIGH_PRECISION = "fp16"
FP16_LIMIT = 60000.0  # |x| above this stays float32 (float16's largest finite value is 65504)
FP16_QDQ_OPSET = 19  # float16 scales in QuantizeLinear/DequantizeLinear
FP16_IR_VERSION = 9  # the IR version of opset 19

_FLOAT, _FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT, FLOAT16
_NAMES = {_FLOAT: "fp32", _FLOAT16: "fp16"}


def check_high_precision(value: str) -> None:
    if value not in HIGH_PRECISIONS:
        raise ConfigError("unknown --high-precision", expected=" | ".join(HIGH_PRECISIONS), found=repr(value))


def fp16_regions_wanted(high_precision: str, trt_version: str | TrtVersion) -> bool:
    """Whether model.int8.onnx carries float16 regions: asked for, and a strongly typed TensorRT (>= 10).

    TensorRT 8.5 (JetPack 5) parses opset <= 17 and is not strongly typed: its file keeps float32 regions
    and its builder sets the FP16 flag beside INT8 (``engine.versions.plan_build``)."""
    check_high_precision(high_precision)
    version = TrtVersion.parse(trt_version)
    return high_precision == "fp16" and (version.has_strongly_typed_flag or version.always_strongly_typed)


@dataclass
class Fp16Report:
    """What ``convert_float_regions`` did: ops per type, the tensors kept float32 and why."""

    fp16_nodes: int = 0
    fp32_nodes: list[str] = field(default_factory=list)  # float ops kept float32 (range overflow)
    fp32_tensors: dict[str, float] = field(default_factory=dict)  # tensor -> observed |x| max > limit
    casts: int = 0
    limit: float = FP16_LIMIT
    opset: int = FP16_QDQ_OPSET

    def to_dict(self) -> dict[str, Any]:
        return {"high_precision": "fp16", "fp16_nodes": self.fp16_nodes, "fp32_nodes": list(self.fp32_nodes),
                "fp32_tensors": {k: round(v, 1) for k, v in sorted(self.fp32_tensors.items())},
                "casts": self.casts, "limit": self.limit, "opset": self.opset}

    def summary(self) -> str:
        kept = (f"; {len(self.fp32_tensors)} tensor(s) over +/-{self.limit:g} kept FP32: "
                + ", ".join(f"{k} (|x| up to {v:.4g})" for k, v in sorted(self.fp32_tensors.items())[:5])
                + (" ..." if len(self.fp32_tensors) > 5 else "")) if self.fp32_tensors else ""
        return f"FP16 float regions: {self.fp16_nodes} ops FP16, {len(self.fp32_nodes)} FP32, {self.casts} casts{kept}"


def float_regions_of(model: Any) -> dict[str, Any]:
    """The float-region record a Q/DQ model carries in its metadata ({"high_precision": "fp32"} when none)."""
    regions = quantization_record(model).get("float_regions")
    return dict(regions) if isinstance(regions, dict) else {"high_precision": "fp32"}


@dataclass
class _Op:
    """One node's typing: the type constraint its float data follows, and whether it runs float16."""

    node: Any
    constraint: str | None  # e.g. "T" (Conv), "T2" (DequantizeLinear's scale and output); None: agnostic
    formal_inputs: list[str]  # type_str of each actual input
    formal_outputs: list[str]
    fp16_inputs: list[bool]  # whether each input's formal type admits float16
    fp16: bool = True

    def tied_inputs(self, dtypes: dict[str, int]) -> list[tuple[int, str]]:
        return [(i, name) for i, name in enumerate(self.node.input)
                if name and self.constraint is not None and self.formal_inputs[i] == self.constraint
                and dtypes.get(name) == _FLOAT]

    def tied_outputs(self, dtypes: dict[str, int]) -> list[str]:
        return [name for i, name in enumerate(self.node.output)
                if name and self.constraint is not None and self.formal_outputs[i] == self.constraint
                and dtypes.get(name) == _FLOAT]


def _formals(params: Any, count: int) -> list[str]:
    """type_str per actual argument (a variadic last parameter repeats)."""
    if not params:
        return [""] * count
    return [params[min(i, len(params) - 1)].type_str for i in range(count)]


def _ops(model: Any, dtypes: dict[str, int], onnx: Any) -> list[_Op]:
    opset = opset_of(model)
    ops = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ArtifactError(f"FP16 float regions: node {node.name or node.op_type} is in domain {node.domain!r}",
                                fix="calibrate with --high-precision fp32")
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        inputs = _formals(schema.inputs, len(node.input))
        outputs = _formals(schema.outputs, len(node.output))
        allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
        constraint = next((formal for name, formal in zip(node.output, outputs)
                           if dtypes.get(name) == _FLOAT and "tensor(float16)" in allowed.get(formal, set())), None)
        if constraint is None:  # QuantizeLinear: no float output, but its input and scale share one type
            floats = [formal for name, formal in zip(node.input, inputs)
                      if name and dtypes.get(name) == _FLOAT and "tensor(float16)" in allowed.get(formal, set())]
            constraint = next((f for f in floats if floats.count(f) > 1), None)
        if node.op_type == "Constant":
            constraint = None  # constants stay as written; a float16 consumer reads a folded Cast
        fp16_inputs = [formal == constraint or "tensor(float16)" in allowed.get(formal, {formal}) for formal in inputs]
        ops.append(_Op(node, constraint, inputs, outputs, fp16_inputs))
    return ops


def _observed(ranges: Ranges, name: str) -> float | None:
    """The largest |x| calibration saw in ``name`` (a DequantizeLinear output is its tensor's values)."""
    base = name[:-len(DEQUANTIZED)] if name.endswith(DEQUANTIZED) else name
    found = ranges.tensors.get(base)
    return None if found is None else max(abs(found.min), abs(found.max), found.amax)


def _classify(ops: list[_Op], dtypes: dict[str, int], inits: dict[str, Any], ranges: Ranges, limit: float,
              onnx: Any) -> dict[str, float]:
    """Mark ops float32 where a tied tensor's range (or a float initializer) exceeds ``limit``."""
    over: dict[str, float] = {}
    for op in ops:
        for name in [n for _, n in op.tied_inputs(dtypes)] + op.tied_outputs(dtypes):
            if name in inits:
                peak = float(np.max(np.abs(onnx.numpy_helper.to_array(inits[name])), initial=0.0))
            else:
                observed = _observed(ranges, name)
                peak = 0.0 if observed is None else observed
            if peak > limit:
                over[name[:-len(DEQUANTIZED)] if name.endswith(DEQUANTIZED) else name] = peak
                op.fp16 = False
    return over


MOVEMENT_OPS = ("Reshape", "Transpose", "Slice", "Split", "Flatten", "Squeeze", "Unsqueeze")


def _int8_concats_float32(ops: list[_Op]) -> None:
    """A Concat whose every input is a DequantizeLinear output, and the data movement after it up to the next
    QuantizeLinear, stay float32: ONNX Runtime fuses DQ -> Concat (-> movement) -> Q into a QLinearConcat, which
    takes no float16 scales. TensorRT runs that chain on int8 data anyway (Q/DQ propagation), so no FP16 is
    lost there."""
    producers = {name: op for op in ops for name in op.node.output}
    consumers: dict[str, list[_Op]] = {}
    for op in ops:
        for name in op.node.input:
            consumers.setdefault(name, []).append(op)
    for op in ops:
        if op.node.op_type != "Concat":
            continue
        sources = [producers.get(name) for name in op.node.input if name]
        if not sources or any(s is None or s.node.op_type != "DequantizeLinear" for s in sources):
            continue
        chain = [op]
        while chain:
            current = chain.pop()
            current.fp16 = False
            for name in current.node.output:
                chain += [c for c in consumers.get(name, []) if c.node.op_type in MOVEMENT_OPS and c.fp16]
                for reader in consumers.get(name, []):
                    if reader.node.op_type == "QuantizeLinear":
                        reader.fp16 = False


def _dequantize_per_consumer(ops: list[_Op], dtypes: dict[str, int], onnx: Any) -> list[_Op]:
    """A DequantizeLinear writes the type its readers compute in, so that it feeds each of them directly (a Cast
    between them would stop TensorRT fusing the pair): float32 when they all run float32, and a float32 twin
    (``<output>_fp32``, same input and scale) for the float32 readers when float16 and float32 ops share it."""
    consumers: dict[str, list[_Op]] = {}
    for op in ops:
        for _, name in op.tied_inputs(dtypes):
            consumers.setdefault(name, []).append(op)
    result: list[_Op] = []
    for op in ops:
        result.append(op)
        node = op.node
        if node.op_type != "DequantizeLinear":
            continue
        readers = consumers.get(node.output[0], [])
        if readers and all(not r.fp16 for r in readers):
            op.fp16 = False
        elif op.fp16 and any(not r.fp16 for r in readers):
            twin = onnx.helper.make_node("DequantizeLinear", list(node.input), [f"{node.output[0]}_fp32"],
                                         name=f"{node.name}_fp32")
            twin.attribute.extend(node.attribute)
            dtypes[twin.output[0]] = _FLOAT
            for reader in readers:
                if not reader.fp16:
                    for i, name in enumerate(reader.node.input):
                        if name == node.output[0]:
                            reader.node.input[i] = twin.output[0]
            result.append(_Op(twin, op.constraint, list(op.formal_inputs), list(op.formal_outputs),
                              list(op.fp16_inputs), fp16=False))
    return result


def _tensor_types(model: Any, onnx: Any) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {init.name: int(init.data_type) for init in graph.initializer}
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        types[value.name] = int(value.type.tensor_type.elem_type)
    return types


def convert_float_regions(model: Any, ranges: Ranges, *, limit: float = FP16_LIMIT) -> tuple[Any, Fp16Report]:
    """A float16-region copy of the float32-region Q/DQ ``model`` (see the module docstring)."""
    onnx = require("onnx", purpose="writing FP16 float regions")
    if opset_of(model) < FP16_QDQ_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, FP16_QDQ_OPSET)
        except Exception as exc:  # onnx raises several types here; the user's way out is the same
            raise ArtifactError(f"FP16 float regions need opset {FP16_QDQ_OPSET}, and onnx cannot convert this model",
                                found=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                                fix="calibrate with --high-precision fp32 (float32 regions, the opset as exported)",
                                ) from exc
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString())
    model.ir_version = max(int(model.ir_version), FP16_IR_VERSION)
    graph = model.graph
    dtypes = _tensor_types(model, onnx)
    inits = {init.name: init for init in graph.initializer}
    ops = _ops(model, dtypes, onnx)
    over = _classify(ops, dtypes, inits, ranges, limit, onnx)
    _int8_concats_float32(ops)
    ops = _dequantize_per_consumer(ops, dtypes, onnx)
    report = Fp16Report(limit=limit, fp32_tensors=over)

    def wanted(op: _Op) -> int:
        return _FLOAT16 if op.fp16 else _FLOAT

    # which type each float initializer is read as: converted in place, kept, or both (a float16 copy)
    init_uses: dict[str, set[int]] = {}
    for op in ops:
        for _, name in op.tied_inputs(dtypes):
            if name in inits:
                init_uses.setdefault(name, set()).add(wanted(op))
    init_names: dict[tuple[str, int], str] = {}
    new_inits: list[Any] = []
    for name, uses in init_uses.items():
        if _FLOAT16 not in uses:
            continue
        values = onnx.numpy_helper.to_array(inits[name]).astype(np.float16)
        target = name if uses == {_FLOAT16} else f"{name}_fp16"
        converted = onnx.numpy_helper.from_array(values, target)
        if target == name:
            inits[name].CopyFrom(converted)
        else:
            new_inits.append(converted)
        init_names[(name, _FLOAT16)] = target
    graph_outputs = {o.name for o in graph.output}
    actual: dict[str, int] = {i.name: int(i.type.tensor_type.elem_type) for i in graph.input}
    renamed: dict[str, str] = {}  # a float16 graph output is written under another name, then cast back
    casts: dict[tuple[str, int], str] = {}
    nodes: list[Any] = []

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            casts[key] = f"{name}_to_{_NAMES[to]}"
            nodes.append(onnx.helper.make_node("Cast", [name], [casts[key]], name=f"{name}_Cast_{_NAMES[to]}", to=to))
        return casts[key]

    def read_as(name: str, to: int) -> str:
        if name in inits:
            return init_names.get((name, to), name)
        source = renamed.get(name, name)
        have = actual.get(source, dtypes.get(name, _FLOAT))
        return source if have == to else cast(source, to)

    for op in ops:
        node = onnx.NodeProto()
        node.CopyFrom(op.node)  # the originals are cleared from the graph below
        tied = dict(op.tied_inputs(dtypes))
        for i, name in enumerate(node.input):
            if not name:
                continue
            if i in tied:
                node.input[i] = read_as(name, wanted(op))
            elif dtypes.get(name) == _FLOAT and not op.fp16_inputs[i]:  # e.g. Resize's scales: float32 always
                node.input[i] = read_as(name, _FLOAT)
            elif name not in inits:
                node.input[i] = renamed.get(name, name)
        tied_out = set(op.tied_outputs(dtypes))
        for i, name in enumerate(node.output):
            if name in tied_out:
                actual[name] = wanted(op)
                if name in graph_outputs and op.fp16:
                    renamed[name] = f"{name}_fp16"
                    node.output[i] = renamed[name]
                    actual[renamed[name]] = _FLOAT16
            elif name:
                actual[name] = dtypes.get(name, 0)
        nodes.append(node)
        if tied_out or tied:
            if op.fp16:
                report.fp16_nodes += 1
            else:
                report.fp32_nodes.append(node.name or node.output[0])
    for output in graph.output:
        if output.name in renamed:
            nodes.append(onnx.helper.make_node("Cast", [renamed[output.name]], [output.name],
                                               name=f"{output.name}_Cast_fp32", to=_FLOAT))
    report.casts = sum(1 for n in nodes if n.op_type == "Cast")
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    drop_unused_initializers(graph)
    del graph.value_info[:]  # types changed; re-inferred below
    try:  # every tensor's type checked against its ops' schemas: a model that would not load is never written
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, check_type=True)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ArtifactError("the FP16 float-region model does not type-check",
                            found=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                            fix="calibrate with --high-precision fp32 (float32 regions) and report the model") from exc
    _record(model, report)
    return model, report


def _record(model: Any, report: Fp16Report) -> None:
    raw = metadata_of(model).get(QDQ_METADATA_KEY)
    record = json.loads(raw) if raw else {}
    record["float_regions"] = report.to_dict()
    set_metadata(model, {QDQ_METADATA_KEY: json.dumps(record, sort_keys=True)})
