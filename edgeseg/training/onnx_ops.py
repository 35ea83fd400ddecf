"""The ONNX ops of edgeseg's exports as torch callables, for ``onnx_graph.OnnxGraphModule`` (layer 3, torch).

Each builder reads one node's attributes (and the constant inputs it can resolve once, such as shapes and
axes) and returns a callable over the node's inputs at run time. Only the attributes that edgeseg's exports
use are implemented; any other value is refused with an ArtifactError naming the op and the attribute, so a
new export fails loudly here rather than training a different network. Shapes baked in at batch 1 (Reshape
targets, Resize sizes) apply to the batch actually fed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ArtifactError

OpFn = Callable[..., Any]  # (*inputs: Tensor | None) -> Tensor | tuple[Tensor, ...]
INT64_MAX = 2 ** 63 - 1
ONNX_DTYPES = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool, 11: torch.float64}


@dataclass
class OpContext:
    """What a builder may know beyond its node: the graph's constant values (by name) and the opset."""

    constants: dict[str, np.ndarray]
    opset: int

    def const(self, name: str) -> np.ndarray | None:
        return self.constants.get(name) if name else None


def attributes(node: Any) -> dict[str, Any]:
    import onnx

    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def unsupported(node: Any, what: str, found: object) -> ArtifactError:
    return ArtifactError(f"{node.op_type} node {node.name!r}: {what} is not supported by the QAT graph runner",
                         expected="the ops and attributes edgeseg's exports use (training/onnx_ops.py)",
                         found=f"{what}={found!r}", fix="export the model with edgeseg export")


def _check(node: Any, attrs: dict[str, Any], allowed: dict[str, Callable[[Any], bool]]) -> None:
    for name, value in attrs.items():
        if name not in allowed or not allowed[name](value):
            raise unsupported(node, f"attribute {name}", value)


BUILDERS: dict[str, Callable[[Any, OpContext], OpFn]] = {}


def op(*names: str) -> Callable[[Callable[[Any, OpContext], OpFn]], Callable[[Any, OpContext], OpFn]]:
    def register(builder: Callable[[Any, OpContext], OpFn]) -> Callable[[Any, OpContext], OpFn]:
        for name in names:
            BUILDERS[name] = builder
        return builder
    return register


def build(node: Any, ctx: OpContext) -> OpFn:
    builder = BUILDERS.get(node.op_type)
    if builder is None or node.domain not in ("", "ai.onnx"):
        raise ArtifactError(f"ONNX op {node.domain + '.' if node.domain else ''}{node.op_type} (node {node.name!r}) "
                            "is not supported by the QAT graph runner",
                            expected=", ".join(sorted(BUILDERS)), found=node.op_type,
                            fix="export the model with edgeseg export, or add the op to training/onnx_ops.py")
    return builder(node, ctx)


def _ints(value: Any) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _any(_: Any) -> bool:
    return True


def _spatial_pads(node: Any, attrs: dict[str, Any], rank: int) -> tuple[list[int], list[int]]:
    """ONNX pads [x1_begin, x2_begin, ..., x1_end, ...] as (begins, ends) over the spatial dims."""
    if attrs.get("auto_pad", "NOTSET") != "NOTSET":
        raise unsupported(node, "attribute auto_pad", attrs["auto_pad"])
    pads = attrs.get("pads", [0] * (2 * rank))
    return list(pads[:rank]), list(pads[rank:])


def _torch_pad(begins: list[int], ends: list[int]) -> list[int]:
    """F.pad's order: last dim first, (begin, end) each."""
    return [p for b, e in zip(reversed(begins), reversed(ends), strict=True) for p in (b, e)]


@op("Conv")
def _conv(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"auto_pad": lambda v: v == "NOTSET", "dilations": _any, "group": _any,
                         "kernel_shape": _any, "pads": _any, "strides": _any})
    group = attrs.get("group", 1)

    def conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        rank = w.dim() - 2
        begins, ends = _spatial_pads(node, attrs, rank)
        strides, dilations = attrs.get("strides", [1] * rank), attrs.get("dilations", [1] * rank)
        fn = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
        if begins != ends:
            return fn(F.pad(x, _torch_pad(begins, ends)), w, b, strides, 0, dilations, group)  # type: ignore[operator]
        return fn(x, w, b, strides, begins, dilations, group)  # type: ignore[operator]
    return conv


@op("ConvTranspose")
def _conv_transpose(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"auto_pad": lambda v: v == "NOTSET", "dilations": _any, "group": _any,
                         "kernel_shape": _any, "pads": _any, "strides": _any, "output_padding": _any})
    group = attrs.get("group", 1)

    def conv_transpose(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        rank = w.dim() - 2
        begins, ends = _spatial_pads(node, attrs, rank)
        strides, dilations = attrs.get("strides", [1] * rank), attrs.get("dilations", [1] * rank)
        extra = attrs.get("output_padding", [0] * rank)
        fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[rank - 1]
        if begins == ends:
            return fn(x, w, b, strides, begins, extra, group, dilations)  # type: ignore[operator]
        y = fn(x, w, b, strides, 0, extra, group, dilations)  # type: ignore[operator]
        crop = [slice(s, y.shape[2 + i] - e) for i, (s, e) in enumerate(zip(begins, ends, strict=True))]
        return y[(slice(None), slice(None), *crop)]
    return conv_transpose


@op("Gemm")
def _gemm(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"alpha": _any, "beta": _any, "transA": _any, "transB": _any})
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)

    def gemm(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        a = a.t() if attrs.get("transA", 0) else a
        b = b.t() if attrs.get("transB", 0) else b
        y = a @ b if alpha == 1.0 else alpha * (a @ b)
        return y if c is None else y + (c if beta == 1.0 else beta * c)
    return gemm


def _simple(fn: OpFn) -> Callable[[Any, OpContext], OpFn]:
    def builder(node: Any, ctx: OpContext) -> OpFn:
        if node.attribute:
            raise unsupported(node, f"attribute {node.attribute[0].name}", "set")
        return fn
    return builder


def _divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


_ELEMENTWISE: dict[str, OpFn] = {"Relu": F.relu, "Sigmoid": torch.sigmoid, "Add": torch.add, "Sub": torch.sub,
                                  "Mul": torch.mul, "Div": _divide, "MatMul": torch.matmul, "Identity": lambda x: x}
for _name, _fn in _ELEMENTWISE.items():
    BUILDERS[_name] = _simple(_fn)


@op("Clip")
def _clip(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {})
    inputs = list(node.input) + ["", ""]
    low, high = ctx.const(inputs[1]), ctx.const(inputs[2])
    if (inputs[1] and low is None) or (inputs[2] and high is None):
        raise unsupported(node, "min/max", "computed at run time")
    lo = None if low is None else float(low)
    hi = None if high is None else float(high)
    return lambda x, *_: torch.clamp(x, lo, hi)


@op("HardSigmoid", "HardSwish")
def _hard(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"alpha": _any, "beta": _any} if node.op_type == "HardSigmoid" else {})
    alpha, beta = attrs.get("alpha", 0.2 if node.op_type == "HardSigmoid" else 1 / 6), attrs.get("beta", 0.5)
    if node.op_type == "HardSwish":
        return lambda x: x * torch.clamp(alpha * x + beta, 0.0, 1.0)
    return lambda x: torch.clamp(alpha * x + beta, 0.0, 1.0)


@op("Softmax")
def _softmax(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"axis": _any})
    if ctx.opset < 13:
        raise unsupported(node, "opset", ctx.opset)
    axis = attrs.get("axis", -1)
    return lambda x: torch.softmax(x, axis)


@op("Concat")
def _concat(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"axis": _any})
    return lambda *xs: torch.cat([x for x in xs if x is not None], attrs["axis"])


@op("Constant")
def _constant(node: Any, ctx: OpContext) -> OpFn:
    raise unsupported(node, "a Constant that was not folded", "at run time")  # Constants are folded in __init__


def _shape_values(value: torch.Tensor | None, known: np.ndarray | None) -> list[int]:
    return _ints(known) if known is not None else [int(v) for v in value.tolist()]  # type: ignore[union-attr]


@op("Reshape")
def _reshape(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"allowzero": lambda v: v == 0})
    known = ctx.const(node.input[1])
    batched = ctx.const(node.input[0]) is None  # a constant (a weight reshaped to broadcast) has no batch dim

    def reshape(x: torch.Tensor, shape: torch.Tensor | None) -> torch.Tensor:
        target = _shape_values(shape, known)
        target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
        if batched and target and target[0] == 1 and x.dim() and x.shape[0] != 1 and x.is_floating_point() and (
                -1 in target or int(np.prod(target)) != x.numel()):
            target[0] = x.shape[0]  # exported at batch 1: the leading dim is the batch
        return x.reshape(target)
    return reshape


@op("Transpose")
def _transpose(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"perm": _any})
    return lambda x: x.permute(attrs.get("perm", list(range(x.dim()))[::-1]))


@op("Flatten")
def _flatten(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"axis": _any})
    axis = attrs.get("axis", 1)
    return lambda x: x.reshape(int(np.prod(x.shape[:axis if axis >= 0 else axis + x.dim()])), -1)


def _axes_of(node: Any, attrs: dict[str, Any], ctx: OpContext, index: int) -> list[int] | None:
    if "axes" in attrs:
        return list(attrs["axes"])
    if len(node.input) > index and node.input[index]:
        known = ctx.const(node.input[index])
        if known is None:
            raise unsupported(node, "axes", "computed at run time")
        return _ints(known)
    return None


@op("Unsqueeze", "Squeeze")
def _unsqueeze(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"axes": _any})
    axes = _axes_of(node, attrs, ctx, 1)
    if node.op_type == "Squeeze":
        return lambda x, *_: x.squeeze() if axes is None else x.squeeze(tuple(axes))

    def unsqueeze(x: torch.Tensor, *_: Any) -> torch.Tensor:
        rank = x.dim() + len(axes)  # type: ignore[arg-type]
        for axis in sorted(a % rank for a in axes):  # type: ignore[union-attr]
            x = x.unsqueeze(axis)
        return x
    return unsqueeze


@op("Slice")
def _slice(node: Any, ctx: OpContext) -> OpFn:
    _check(node, attributes(node), {})
    known = [ctx.const(name) for name in list(node.input[1:]) + [""] * (5 - len(node.input))]

    def slice_(x: torch.Tensor, *args: torch.Tensor | None) -> torch.Tensor:
        starts, ends = _shape_values(args[0], known[0]), _shape_values(args[1], known[1])
        axes = _shape_values(args[2], known[2]) if node.input[3:4] and node.input[3] else list(range(len(starts)))
        steps = _shape_values(args[3], known[3]) if node.input[4:5] and node.input[4] else [1] * len(starts)
        index = [slice(None)] * x.dim()
        for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
            if step <= 0:
                raise unsupported(node, "steps", step)
            size = x.shape[axis]
            index[axis] = slice(max(-size, min(start, size)), max(-size, min(end, size)), step)
        return x[tuple(index)]
    return slice_


@op("Split")
def _split(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"axis": _any, "split": _any, "num_outputs": _any})
    axis = attrs.get("axis", 0)
    sizes = attrs.get("split") or (_ints(ctx.const(node.input[1])) if len(node.input) > 1 and node.input[1] else None)
    count = len(node.output)

    def split(x: torch.Tensor, *_: Any) -> tuple[torch.Tensor, ...]:
        if sizes is not None:
            return tuple(torch.split(x, list(sizes), axis))
        return tuple(torch.split(x, -(-x.shape[axis] // count), axis))
    return split


@op("Shape")
def _shape(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"start": _any, "end": _any})
    return lambda x: torch.tensor(x.shape[attrs.get("start", 0):attrs.get("end", None)], dtype=torch.int64,
                                  device=x.device)  # on the device of the constants it is concatenated with


@op("Gather")
def _gather(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"axis": _any})
    axis = attrs.get("axis", 0)

    def gather(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        dim = axis % x.dim()
        flat = indices.reshape(-1).long() % x.shape[dim]
        picked = x.index_select(dim, flat.to(x.device))
        return picked.reshape(*x.shape[:dim], *indices.shape, *x.shape[dim + 1:])
    return gather


@op("Cast")
def _cast(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"to": lambda v: v in ONNX_DTYPES, "saturate": _any})
    dtype = ONNX_DTYPES[attrs["to"]]
    return lambda x: x.to(dtype)


@op("ConstantOfShape")
def _constant_of_shape(node: Any, ctx: OpContext) -> OpFn:
    import onnx

    attrs = attributes(node)
    _check(node, attrs, {"value": _any})
    value = onnx.numpy_helper.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
    return lambda shape: torch.full([int(v) for v in shape.tolist()], value.item(),
                                    dtype=torch.from_numpy(value).dtype, device=shape.device)


@op("Expand")
def _expand(node: Any, ctx: OpContext) -> OpFn:
    _check(node, attributes(node), {})
    known = ctx.const(node.input[1])

    def expand(x: torch.Tensor, shape: torch.Tensor | None) -> torch.Tensor:
        return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(_shape_values(shape, known))))
    return expand


@op("ReduceMean")
def _reduce_mean(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"axes": _any, "keepdims": _any, "noop_with_empty_axes": lambda v: v == 0})
    axes = _axes_of(node, attrs, ctx, 1)
    keep = bool(attrs.get("keepdims", 1))
    return lambda x, *_: x.mean(dim=tuple(axes) if axes else tuple(range(x.dim())), keepdim=keep)


@op("GlobalAveragePool")
def _global_average_pool(node: Any, ctx: OpContext) -> OpFn:
    _check(node, attributes(node), {})
    return lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@op("MaxPool", "AveragePool")
def _pool(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    allowed = {"auto_pad": lambda v: v == "NOTSET", "kernel_shape": _any, "pads": _any, "strides": _any,
               "ceil_mode": _any}
    allowed.update({"dilations": lambda v: set(v) == {1}, "storage_order": lambda v: v == 0}
                   if node.op_type == "MaxPool" else {"count_include_pad": _any})
    _check(node, attrs, allowed)
    kernel = list(attrs["kernel_shape"])
    rank = len(kernel)
    begins, ends = _spatial_pads(node, attrs, rank)
    strides, ceil = attrs.get("strides", [1] * rank), bool(attrs.get("ceil_mode", 0))
    symmetric = begins == ends and all(2 * p <= k for p, k in zip(begins, kernel, strict=True))
    if node.op_type == "MaxPool":
        fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[rank - 1]
        if symmetric:
            return lambda x: fn(x, kernel, strides, begins, ceil_mode=ceil)  # type: ignore[operator]
        pad = _torch_pad(begins, ends)
        return lambda x: fn(F.pad(x, pad, value=float("-inf")), kernel, strides, 0, ceil_mode=ceil)  # type: ignore[operator]
    include = bool(attrs.get("count_include_pad", 0))
    avg = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1]
    if symmetric:
        return lambda x: avg(x, kernel, strides, begins, ceil_mode=ceil, count_include_pad=include)  # type: ignore[operator]
    if not include or ceil:
        raise unsupported(node, "asymmetric pads with count_include_pad=0 or ceil_mode", attrs.get("pads"))
    pad = _torch_pad(begins, ends)
    return lambda x: avg(F.pad(x, pad), kernel, strides, 0)  # type: ignore[operator]


RESIZE_MODES = {  # (mode, coordinate_transformation_mode, nearest_mode) -> (F.interpolate mode, align_corners)
    ("linear", "half_pixel", None): ("linear", False),
    ("linear", "pytorch_half_pixel", None): ("linear", False),
    ("linear", "align_corners", None): ("linear", True),
    ("nearest", "asymmetric", "floor"): ("nearest", None),
    ("nearest", "half_pixel", "round_prefer_ceil"): ("nearest-exact", None),
}


@op("Resize")
def _resize(node: Any, ctx: OpContext) -> OpFn:
    attrs = attributes(node)
    _check(node, attrs, {"mode": _any, "coordinate_transformation_mode": _any, "nearest_mode": _any,
                         "cubic_coeff_a": _any, "exclude_outside": lambda v: v == 0, "antialias": lambda v: v == 0,
                         "keep_aspect_ratio_policy": lambda v: v == "stretch"})
    mode = attrs.get("mode", "nearest")
    key = (mode, attrs.get("coordinate_transformation_mode", "half_pixel"),
           attrs.get("nearest_mode", "round_prefer_floor") if mode == "nearest" else None)
    if key not in RESIZE_MODES:
        raise unsupported(node, "mode/coordinate_transformation_mode/nearest_mode", key)
    torch_mode, align = RESIZE_MODES[key]
    inputs = list(node.input) + [""] * 4
    known_scales, known_sizes = ctx.const(inputs[2]), ctx.const(inputs[3])

    def resize(x: torch.Tensor, roi: Any = None, scales: Any = None, sizes: Any = None) -> torch.Tensor:
        spatial = x.dim() - 2
        interp = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial] if torch_mode == "linear" else torch_mode
        if inputs[3]:
            size = _shape_values(sizes, known_sizes)
            if size[1] != x.shape[1]:
                raise unsupported(node, "sizes on the channel dim", size)
            return F.interpolate(x, size=size[2:], mode=interp, align_corners=align)
        factors = [float(v) for v in (known_scales if known_scales is not None else scales.tolist())]
        if factors[:2] != [1.0, 1.0]:
            raise unsupported(node, "scales on the batch or channel dim", factors)
        return F.interpolate(x, scale_factor=factors[2:], mode=interp, align_corners=align,
                             recompute_scale_factor=False)
    return resize
