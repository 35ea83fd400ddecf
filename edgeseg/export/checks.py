"""Checks on exported ONNX graphs and on logits (onnx, onnxruntime, numpy; never torch).

``check_graph_for_tensorrt`` lists what would make a graph fragile for TensorRT or
break the preprocessing/resize contract; ``compare_logits`` measures parity between a
reference (PyTorch) and a candidate (ONNX Runtime, TensorRT) on the same inputs. Both
are torch-free so ``validate`` can use them on the robot.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import AccuracyError, ArtifactError, require

# Inputs that carry shapes/sizes rather than data: after simplification they must be constants.
_SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Expand": (1,),
    "ConstantOfShape": (0,),
    "Tile": (1,),
    "Range": (0, 1, 2),
    "Slice": (1, 2, 3, 4),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "Pad": (1, 2),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "TopK": (1,),
}
# Ops whose result depends on data or on runtime shapes: a static graph has none left.
_DYNAMIC_OPS = {"Shape", "Size", "NonZero", "Loop", "If", "Scan", "Unique", "NonMaxSuppression"}
# PyTorch's bilinear with align_corners=False; nearest is PyTorch's 'nearest' (asymmetric, floor).
_RESIZE_OK = {
    "linear": {"half_pixel", "pytorch_half_pixel"},
    "nearest": {"asymmetric"},
}


def _attributes(node: Any) -> dict[str, Any]:
    onnx = require("onnx", purpose="checking ONNX graphs")
    values = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        values[attribute.name] = value.decode() if isinstance(value, bytes) else value
    return values


def _static_dims(value_info: Any) -> list[int | str] | None:
    """The dims of a graph input/output (a str for a symbolic dim), None if not a tensor."""
    if not value_info.type.HasField("tensor_type"):
        return None
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def check_graph_for_tensorrt(model: Any) -> list[str]:
    """Problems that make ``model`` (an onnx.ModelProto) unfit for a static TensorRT build."""
    graph = model.graph
    problems: list[str] = []
    initializers = {init.name for init in graph.initializer}
    constants = set(initializers) | {""}
    for node in graph.node:
        if node.op_type == "Constant":
            constants.update(node.output)

    for kind, values in (("input", [v for v in graph.input if v.name not in initializers]),
                         ("output", list(graph.output))):
        for value in values:
            dims = _static_dims(value)
            if dims is None:
                problems.append(f"graph {kind} {value.name!r} is not a tensor")
            elif not dims or any(not isinstance(d, int) or d <= 0 for d in dims):
                problems.append(f"graph {kind} {value.name!r} has a non-static shape {dims}")

    for node in graph.node:
        label = f"{node.op_type} node {node.name or '(unnamed)'}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{label} is in domain {node.domain!r}: TensorRT only parses standard ONNX ops")
            continue
        if node.op_type in _DYNAMIC_OPS:
            problems.append(f"{label}: dynamic-shape/data-dependent op left in the graph")
            continue
        for index in _SHAPE_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] not in constants:
                problems.append(f"{label}: shape input {index} ({node.input[index]!r}) is computed at run time")
                break
        if node.op_type == "Resize":
            attrs = _attributes(node)
            mode = attrs.get("mode", "nearest")
            coords = attrs.get("coordinate_transformation_mode", "half_pixel")
            if coords not in _RESIZE_OK.get(mode, set()):
                problems.append(f"{label}: mode={mode} coordinate_transformation_mode={coords} does not match "
                                "PyTorch's bilinear(align_corners=False) (expected linear with half_pixel)")
            if mode == "nearest" and attrs.get("nearest_mode", "round_prefer_floor") != "floor":
                problems.append(f"{label}: nearest_mode={attrs.get('nearest_mode')} differs from PyTorch (floor)")
            if attrs.get("antialias", 0):
                problems.append(f"{label}: antialiased resize is not supported by TensorRT 8.5")
        if node.op_type in ("AveragePool", "MaxPool") and _attributes(node).get("ceil_mode", 0):
            problems.append(f"{label}: ceil_mode=1 pooling (use kernels that divide the feature size)")
    return problems


def require_clean_graph(model: Any, *, what: str = "exported graph") -> None:
    """Raise an ArtifactError listing every problem ``check_graph_for_tensorrt`` finds."""
    problems = check_graph_for_tensorrt(model)
    if problems:
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise ArtifactError(
            f"the {what} is not fit for TensorRT ({len(problems)} problem(s))",
            expected="static shapes, standard ops, half-pixel bilinear Resize, no AdaptiveAvgPool(k>1)",
            found="\n    " + "\n    ".join(shown),
            fix="export with simplification on (drop --no-simplify); replace the listed ops in the model",
        )


def run_onnxruntime(model_bytes: bytes, inputs: np.ndarray, *, input_name: str, output_name: str) -> np.ndarray:
    """Run an ONNX model on CPU over N samples, in chunks of the model's fixed batch size."""
    ort = require("onnxruntime", purpose="checking ONNX parity")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    batch = session.get_inputs()[0].shape[0]
    batch = batch if isinstance(batch, int) and batch > 0 else 1
    outputs = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        count = len(chunk)
        if count < batch:  # pad the last chunk by repeating its last sample; the extra outputs are dropped
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - count, axis=0)])
        result = session.run([output_name], {input_name: np.ascontiguousarray(chunk, dtype=np.float32)})[0]
        outputs.append(result[:count])
    return np.concatenate(outputs, axis=0)


@dataclass
class ParityResult:
    max_abs_diff: float
    tolerance: float
    max_abs_logit: float
    argmax_agreement: float  # fraction of non-tie pixels whose argmax agrees
    num_pixels: int
    num_ties: int  # pixels whose top-2 reference logits are closer than tie_eps (excluded)
    num_disagree: int
    tie_eps: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.num_disagree == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def describe(self) -> str:
        return (f"max |diff| {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}), argmax agreement "
                f"{100 * self.argmax_agreement:.4f}% of {self.num_pixels - self.num_ties} pixels "
                f"({self.num_ties} ties excluded, {self.num_disagree} disagree)")


def compare_logits(reference: np.ndarray, candidate: np.ndarray, *, rel_tol: float = 1e-3,
                   tie_eps: float = 1e-4) -> ParityResult:
    """Parity of N x C x H x W logits; tolerances scale with max(1, max |reference logit|)."""
    if reference.shape != candidate.shape:
        raise ArtifactError("logits have different shapes", expected=str(reference.shape), found=str(candidate.shape))
    reference = reference.astype(np.float32, copy=False)
    candidate = candidate.astype(np.float32, copy=False)
    scale = max(1.0, float(np.max(np.abs(reference))))
    max_diff = float(np.max(np.abs(reference - candidate)))
    if not np.isfinite(candidate).all():
        max_diff = float("inf")
    ref_arg = reference.argmax(axis=1)
    cand_arg = candidate.argmax(axis=1)
    if reference.shape[1] > 1:
        top2 = np.partition(reference, -2, axis=1)[:, -2:]
        ties = (top2[:, 1] - top2[:, 0]) < tie_eps * scale
    else:
        ties = np.zeros(ref_arg.shape, dtype=bool)
    disagree = int(np.count_nonzero((ref_arg != cand_arg) & ~ties))
    counted = ref_arg.size - int(ties.sum())
    return ParityResult(
        max_abs_diff=max_diff,
        tolerance=rel_tol * scale,
        max_abs_logit=float(np.max(np.abs(reference))),
        argmax_agreement=1.0 if counted == 0 else 1.0 - disagree / counted,
        num_pixels=int(ref_arg.size),
        num_ties=int(ties.sum()),
        num_disagree=disagree,
        tie_eps=tie_eps * scale,
    )


def require_parity(result: ParityResult, *, what: str = "ONNX model vs PyTorch") -> None:
    if not result.passed:
        raise AccuracyError(
            f"parity check failed: {what}",
            expected=f"max |diff| <= {result.tolerance:.3g} and 100% argmax agreement outside ties",
            found=result.describe(),
            fix="look for ops that behave differently after export (resize modes, pooling, custom ops)",
        )
