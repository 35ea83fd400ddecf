"""An edgeseg ONNX graph as a trainable torch module: the base of quantization-aware training (layer 3, torch).

``OnnxGraphModule`` runs ``model.onnx``, or the Q/DQ ``model.int8.onnx`` that ``quant.qdq_trt.quantize_for_tensorrt``
writes, op by op in PyTorch. The Q/DQ file *is* the placement description: every QuantizeLinear ->
DequantizeLinear pair on an activation becomes a fake quantizer at the file's scale (a buffer, or an LSQ-trained
parameter), and every weight DequantizeLinear becomes a float parameter quantized symmetrically per channel with
the scale recomputed from the current weight each forward, exactly as ``qdq_trt._weight_dequantize`` computes it.
So the fake-quant graph that trains and the graph TensorRT builds cannot drift apart: writing the trained weights
and scales back into the same file reproduces what was trained. Untrained, a forward reproduces the file.

Gradients use the straight-through estimator (identity where a value is not clipped); learned activation scales
get LSQ's gradient (Esser et al., 2020) with gradient scale 1/sqrt(numel * 127). The graph is parsed once, in
``__init__``, into a topologically ordered list of callables (ops: ``onnx_ops``); intermediates are freed after
their last reader. Constant shapes exported at batch 1 apply to the batch actually fed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError, require
from ..onnx_model import opset_of
from ..quant.qdq_trt import WEIGHT_OPS, quantization_record
from .onnx_ops import OpContext, OpFn, build

QMIN, QMAX = -128, 127  # activation int8 range (zero point 0)
MIN_SCALE = 1e-8
FLOAT16 = 10
FP32_ONLY = "QAT runs on the FP32-region Q/DQ graph: model.int8.onnx as quantize_for_tensorrt writes it, or model.onnx"


@dataclass(frozen=True)
class ActivationQuantizer:
    """A QuantizeLinear -> DequantizeLinear pair on ``tensor`` (the float tensor the QuantizeLinear reads)."""

    tensor: str
    scale_name: str
    scale: float  # the file's scale


@dataclass(frozen=True)
class WeightQuantizer:
    """A weight DequantizeLinear: the float initializer ``weight``, per channel on ``axis`` (None: per tensor)."""

    weight: str
    axis: int | None
    bits: int = 8


class _ActivationFakeQuant(torch.autograd.Function):
    """clamp(round(x / s), -128, 127) * s; STE for x, LSQ's gradient for s (scaled by ``grad_factor``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, grad_factor: float) -> torch.Tensor:
        s = scale.clamp_min(MIN_SCALE)
        y = x / s
        q = torch.clamp(torch.round(y), QMIN, QMAX)
        inside = (y >= QMIN) & (y <= QMAX)
        if ctx.needs_input_grad[1]:
            ctx.save_for_backward(inside, torch.where(inside, q - y, q), scale)
        else:
            ctx.save_for_backward(inside)
        ctx.grad_factor = grad_factor
        return q * s

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        inside = ctx.saved_tensors[0]
        grad_x = grad * inside if ctx.needs_input_grad[0] else None
        grad_s = None
        if ctx.needs_input_grad[1]:
            _, step, scale = ctx.saved_tensors
            grad_s = ((grad * step).sum() * ctx.grad_factor * (scale >= MIN_SCALE)).reshape(scale.shape)
        return grad_x, grad_s, None


class _WeightFakeQuant(torch.autograd.Function):
    """clip(round(w / scale), -qmax, qmax) * dequant_scale with the scales given (detached; ``dequant_scale`` is
    ``scale`` rounded to float16 for a file with FP16 regions, whose int8 weights are unchanged); STE inside the
    clip range."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, scale: torch.Tensor, qmax: float, dequant_scale: torch.Tensor
                ) -> torch.Tensor:
        y = w / scale
        ctx.save_for_backward(y.abs() <= qmax + 0.5)  # what rounds into [-qmax, qmax] is not clipped
        return torch.clamp(torch.round(y), -qmax, qmax) * dequant_scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        return grad * ctx.saved_tensors[0], None, None, None


def weight_scale(w: torch.Tensor, axis: int | None, qmax: float) -> torch.Tensor:
    """qdq_trt._weight_dequantize's scale: amax (per channel on ``axis``, or of the tensor) / qmax, 1 where 0."""
    with torch.no_grad():
        if axis is None:
            amax = w.abs().max()
        else:
            amax = w.abs().movedim(axis, 0).reshape(w.shape[axis], -1).amax(dim=1)
        scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
        if axis is not None:
            shape = [1] * w.dim()
            shape[axis] = -1
            scale = scale.reshape(shape)
    return scale


def to_half_grid(scale: torch.Tensor) -> torch.Tensor:
    """``scale`` rounded to the nearest float16 (what fp16_regions writes), the gradient passed straight through."""
    return scale + (scale.half().float() - scale).detach()


def fake_quantize_weight(w: torch.Tensor, axis: int | None, bits: int = 8, half_scales: bool = False) -> torch.Tensor:
    qmax = float(2 ** (bits - 1) - 1)
    scale = weight_scale(w, axis, qmax)
    dequant = scale.half().float() if half_scales else scale
    return _WeightFakeQuant.apply(w, scale, qmax, dequant)  # type: ignore[no-any-return]


def fake_quantize_activation(x: torch.Tensor, scale: torch.Tensor, half_scales: bool = False) -> torch.Tensor:
    if half_scales:
        scale = to_half_grid(scale)
    return _ActivationFakeQuant.apply(x, scale, 1.0 / math.sqrt(max(x.numel(), 1) * QMAX))  # type: ignore[no-any-return]


@dataclass
class _Step:
    fn: OpFn
    inputs: list[tuple[str, Any] | None]  # ("env", tensor) | ("param", key) | ("const", key) | ("scale", index)
    outputs: list[str]
    free: tuple[str, ...] = ()  # tensors no later step reads


def _refuse(problem: str, found: str) -> ArtifactError:
    return ArtifactError(problem, expected=FP32_ONLY, found=found,
                         fix="train on the float32 model.int8.onnx (no --high-precision fp16), or on model.onnx")


def _refuse_float16(model: Any) -> None:
    graph = model.graph
    typed = [*graph.input, *graph.output, *graph.value_info]
    fp16 = [i.name for i in graph.initializer if i.data_type == FLOAT16]
    fp16 += [v.name for v in typed if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type == FLOAT16]
    fp16 += [n.name for n in graph.node if (n.op_type == "Cast" and any(a.name == "to" and a.i == FLOAT16
                                                                        for a in n.attribute))
             or (n.op_type == "Constant" and any(a.t.data_type == FLOAT16 for a in n.attribute))]
    if fp16:
        raise _refuse("the ONNX graph has float16 tensors (the FP16-region Q/DQ file)",
                      f"{len(fp16)} float16 tensors or casts, e.g. {fp16[0]}")


def _int8_zero(value: np.ndarray | None, what: str) -> None:
    if value is None or value.dtype != np.int8:
        raise _refuse(f"{what}: only int8 zero points are supported", "uint8 (or no zero point)" if value is None
                      or value.dtype == np.uint8 else str(value.dtype))
    if np.any(value != 0):
        raise _refuse(f"{what}: asymmetric quantization (a zero point other than 0)", str(value.reshape(-1)[:4]))


def _key(name: str, taken: Sequence[str]) -> str:
    """A ParameterDict / buffer key for an ONNX name ('.' and '/' are not allowed there)."""
    base = "t_" + re.sub(r"\W", "_", name)
    key, n = base, 1
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    return key


def _topological(nodes: Sequence[Any], available: set[str]) -> list[Any]:
    """``nodes`` with every node after the producers of its inputs: the file's order where it already is one (the
    exporter's depth-first order keeps few intermediates alive), a producer moved up where it is not."""
    producer = {o: n for n in nodes for o in n.output}
    done: set[int] = set()
    order: list[Any] = []
    for node in nodes:
        stack = [(node, False)]
        while stack:
            current, expanded = stack.pop()
            if id(current) in done:
                continue
            if expanded:
                done.add(id(current))
                order.append(current)
                continue
            stack.append((current, True))
            for name in current.input:
                if name and name not in available and name not in producer:
                    raise ArtifactError("the ONNX graph reads a tensor that no node produces", found=name)
                if name in producer and id(producer[name]) not in done:
                    if any(c is producer[name] for c, e in stack if e):
                        raise ArtifactError("the ONNX graph has a cycle", found=name)
                    stack.append((producer[name], False))
    return order


class OnnxGraphModule(nn.Module):
    """``model`` (float or Q/DQ ONNX) as a trainable module; see the module docstring."""

    def __init__(self, model: Any, *, float_model: Any | None = None, learn_scales: bool = False,
                 half_scales: bool = False) -> None:
        """``half_scales``: compute with every Q/DQ scale rounded to float16, as the file with FP16 float regions
        (quant/fp16_regions.py) will hold them: train what will run."""
        super().__init__()
        onnx = require("onnx", purpose="quantization-aware training")
        _refuse_float16(model)
        self.half_scales = half_scales
        graph = model.graph
        to_array = onnx.numpy_helper.to_array
        self._inits = {i.name: to_array(i) for i in graph.initializer}
        constants = dict(self._inits)
        for node in graph.node:
            if node.op_type == "Constant":
                constants[node.output[0]] = _constant_value(node, onnx)
        self._constants_np = constants
        self._float = {i.name: to_array(i) for i in float_model.graph.initializer} if float_model is not None else {}
        self._bits = int(quantization_record(model).get("weight_bits", 8))
        self._quantize = {n.output[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
        self.weight_quantizers: list[WeightQuantizer] = []
        self.activation_quantizers: list[ActivationQuantizer] = []
        self._scale_index: dict[str, int] = {}
        self.params = nn.ParameterDict()
        self.constants = nn.Module()
        self._param_keys: dict[str, str] = {}
        self._const_keys: dict[str, str] = {}
        self._check_quantize_readers(graph)
        inputs = [i.name for i in graph.input if i.name not in constants]
        self._input, self._output = inputs[0], graph.output[0].name
        self._steps = self._compile(graph, OpContext(constants, opset_of(model)), inputs)
        scales = [q.scale for q in self._unique_scales()]
        initial = torch.tensor(scales, dtype=torch.float32)
        if learn_scales:
            self.act_scale = nn.Parameter(initial)
        else:
            self.register_buffer("act_scale", initial)
        self._constants_np, self._inits, self._float = {}, {}, {}  # only __init__ reads them

    # ---- parsing -----------------------------------------------------------------------------------------------

    def _check_quantize_readers(self, graph: Any) -> None:
        for node in graph.node:
            for name in node.input:
                if name in self._quantize and node.op_type != "DequantizeLinear":
                    raise _refuse(f"the QuantizeLinear output {name} is read by {node.op_type} {node.name!r}, not "
                                  "only by its DequantizeLinear", node.op_type)
        outputs = {o.name for o in graph.output}
        if outputs & set(self._quantize):
            raise _refuse("a QuantizeLinear output is a graph output", ", ".join(outputs & set(self._quantize)))

    def _trainable(self, graph: Any) -> list[str]:
        """Float initializers that become parameters: weights and biases of Conv/ConvTranspose/Gemm/MatMul (and the
        bias Add after a MatMul)."""
        names: list[str] = []
        producer = {o: n for n in graph.node for o in n.output}
        for node in graph.node:
            if node.op_type in WEIGHT_OPS:
                names += [i for i in node.input[1:3] if i in self._inits]
            elif node.op_type == "Add" and any(producer.get(i) is not None and producer[i].op_type == "MatMul"
                                               for i in node.input):
                names += [i for i in node.input if i in self._inits]
        return [n for n in dict.fromkeys(names) if self._inits[n].dtype == np.float32]

    def _add_param(self, name: str, value: np.ndarray) -> tuple[str, str]:
        if name not in self._param_keys:
            if self._float and name not in self._float:
                raise ArtifactError(f"the float model has no initializer {name}, which the Q/DQ file trains",
                                    fix="pass the model.onnx the Q/DQ file was written from")
            if name in self._float:
                if self._float[name].shape != value.shape:
                    raise ArtifactError(f"float model initializer {name} has another shape than the Q/DQ file's",
                                        expected=str(value.shape), found=str(self._float[name].shape))
                value = self._float[name]
            key = _key(name, list(self.params.keys()))
            self.params[key] = nn.Parameter(torch.from_numpy(np.array(value, np.float32)))
            self._param_keys[name] = key
        return ("param", self._param_keys[name])

    def _ref(self, name: str) -> tuple[str, Any] | None:
        if not name:
            return None
        if name in self._param_keys:
            return ("param", self._param_keys[name])
        if name in self._constants_np:
            if name not in self._const_keys:
                key = _key(name, list(self._const_keys.values()))
                self.constants.register_buffer(key, torch.from_numpy(np.array(self._constants_np[name])),
                                               persistent=False)
                self._const_keys[name] = key
            return ("const", self._const_keys[name])
        return ("env", name)

    def _weight_step(self, node: Any) -> _Step:
        quantized = node.input[0]
        weight = quantized[:-len("_quantized")] if quantized.endswith("_quantized") else quantized
        scale = self._inits.get(node.input[1]) if len(node.input) > 1 else None
        if scale is None or scale.dtype != np.float32:
            raise _refuse(f"weight DequantizeLinear {node.name!r}: the scale must be a float32 initializer",
                          str(None if scale is None else scale.dtype))
        _int8_zero(self._inits.get(node.input[2]) if len(node.input) > 2 else None, f"weight {weight}")
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) if scale.size > 1 else None
        if any(a.name == "block_size" and a.i for a in node.attribute):
            raise _refuse("blocked weight quantization", node.name)
        q = self._inits[quantized].astype(np.float32)
        if axis is not None:
            axis %= q.ndim
            shape = [1] * q.ndim
            shape[axis] = -1
            dequantized = q * scale.reshape(shape)
        else:
            dequantized = q * scale
        ref = self._add_param(weight, dequantized.astype(np.float32))
        self.weight_quantizers.append(WeightQuantizer(weight, axis, self._bits))
        bits, half = self._bits, self.half_scales
        return _Step(lambda w: fake_quantize_weight(w, axis, bits, half), [ref], [node.output[0]])

    def _activation_step(self, node: Any) -> _Step:
        quantize = self._quantize[node.input[0]]
        tensor = quantize.input[0]
        if tensor in self._constants_np:
            raise _refuse(f"QuantizeLinear {quantize.name!r} quantizes a constant", tensor)
        scale_name = quantize.input[1]
        scale = self._inits.get(scale_name)
        if scale is None or scale.dtype != np.float32 or scale.size != 1:
            raise _refuse(f"QuantizeLinear {quantize.name!r}: only one float32 scale per activation tensor",
                          str(None if scale is None else (scale.dtype, scale.shape)))
        for q_dq in (quantize, node):
            _int8_zero(self._inits.get(q_dq.input[2]) if len(q_dq.input) > 2 else None, f"activation {tensor}")
        dq_scale = self._inits.get(node.input[1])
        if dq_scale is None or not np.array_equal(dq_scale, scale):
            raise _refuse(f"DequantizeLinear {node.name!r} has another scale than its QuantizeLinear", node.input[1])
        index = self._scale_index.setdefault(scale_name, len(self._scale_index))
        self.activation_quantizers.append(ActivationQuantizer(tensor, scale_name, float(scale)))
        half = self.half_scales
        return _Step(lambda x, s: fake_quantize_activation(x, s, half), [self._ref(tensor), ("scale", index)],
                     [node.output[0]])

    def _step(self, node: Any, ctx: OpContext) -> _Step | None:
        if node.op_type in ("Constant", "QuantizeLinear"):
            return None
        if node.op_type == "DequantizeLinear":
            if node.input[0] in self._quantize:
                return self._activation_step(node)
            value = self._inits.get(node.input[0])
            if value is None or value.dtype != np.int8:
                raise _refuse(f"DequantizeLinear {node.name!r} reads neither a QuantizeLinear nor an int8 weight",
                              str(None if value is None else value.dtype))
            return self._weight_step(node)
        return _Step(build(node, ctx), [self._ref(i) for i in node.input], list(node.output))

    def _compile(self, graph: Any, ctx: OpContext, inputs: list[str]) -> list[_Step]:
        for name in self._trainable(graph):
            self._add_param(name, self._inits[name])
        order = _topological(list(graph.node), set(inputs) | set(self._constants_np))
        steps = [step for step in (self._step(node, ctx) for node in order) if step is not None]
        last: dict[str, int] = {}
        for position, step in enumerate(steps):
            for ref in step.inputs:
                if ref is not None and ref[0] == "env":
                    last[ref[1]] = position
        keep = {o.name for o in graph.output}
        for position, step in enumerate(steps):
            step.free = tuple(n for n in [*(r[1] for r in step.inputs if r and r[0] == "env"), *step.outputs]
                              if last.get(n, -1) <= position and n not in keep)
            step.free = tuple(dict.fromkeys(step.free))
        return steps

    def _unique_scales(self) -> list[ActivationQuantizer]:
        first: dict[str, ActivationQuantizer] = {}
        for q in self.activation_quantizers:
            first.setdefault(q.scale_name, q)
        return sorted(first.values(), key=lambda q: self._scale_index[q.scale_name])

    # ---- running -----------------------------------------------------------------------------------------------

    def _resolve(self, ref: tuple[str, Any] | None, env: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if ref is None:
            return None
        kind, key = ref
        if kind == "env":
            return env[key]
        if kind == "param":
            return self.params[key]
        if kind == "const":
            return getattr(self.constants, key)  # type: ignore[no-any-return]
        return self.act_scale[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = {self._input: x}
        for step in self._steps:
            out = step.fn(*[self._resolve(ref, env) for ref in step.inputs])
            if len(step.outputs) == 1:
                env[step.outputs[0]] = out
            else:
                env.update(zip(step.outputs, out, strict=True))
            for name in step.free:
                env.pop(name, None)
        return env[self._output]  # type: ignore[no-any-return]

    def step_outputs(self, values: dict[str, torch.Tensor]) -> Iterator[tuple[str, Any]]:
        """Each op's outputs computed from ``values`` of its inputs (tensor name -> value, e.g. onnxruntime's
        intermediates), for the ops whose inputs are all there: checks ops one at a time, where comparing whole
        graphs carries one rounding flip (a float sum in another order at a rounding boundary) on to the logits."""
        for step in self._steps:
            if all(r is None or r[0] != "env" or r[1] in values for r in step.inputs):
                out = step.fn(*[self._resolve(r, values) for r in step.inputs])
                yield from zip(step.outputs, out if len(step.outputs) > 1 else (out,), strict=True)

    # ---- reading back ------------------------------------------------------------------------------------------

    def parameter(self, name: str) -> nn.Parameter:
        """The parameter of the float initializer ``name`` (its ONNX name in the float model)."""
        return self.params[self._param_keys[name]]

    def float_initializers(self) -> dict[str, np.ndarray]:
        """Every trainable float initializer's current value, by its name in the float model."""
        return {name: self.params[key].detach().cpu().numpy().copy() for name, key in self._param_keys.items()}

    def activation_scales(self) -> dict[str, float]:
        """Scale-initializer name of each activation Q/DQ pair -> its current scale."""
        values = self.act_scale.detach().clamp_min(MIN_SCALE).cpu().tolist()
        return {name: float(values[index]) for name, index in self._scale_index.items()}


def _constant_value(node: Any, onnx: Any) -> np.ndarray:
    attr = node.attribute[0]
    if attr.name == "value":
        return onnx.numpy_helper.to_array(attr.t)  # type: ignore[no-any-return]
    value = onnx.helper.get_attribute_value(attr)
    dtype = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
             "value_ints": np.int64}.get(attr.name)
    if dtype is None:
        raise ArtifactError(f"Constant {node.name!r}: attribute {attr.name} is not supported", found=attr.name)
    return np.array(value, dtype)
