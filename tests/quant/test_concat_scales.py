"""Concat scales in the Q/DQ model for TensorRT: separate by default, a pooled shared scale on request,
and the lint's coarse-scale rule that catches a scale far wider than the tensor's own range."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgeseg.errors import ArtifactError, ConfigError  # noqa: E402
from edgeseg.quant.lint import check_qdq, lint_qdq  # noqa: E402
from edgeseg.quant.qdq_trt import activation_scale, quantize_for_tensorrt  # noqa: E402
from edgeseg.quant.ranges import Ranges, TensorRange  # noqa: E402

# skip (amax 1) also feeds the next conv; up (amax 30) is the wide decoder branch: the failure case
AMAX = {"images": 2.0, "skip": 1.0, "up": 30.0, "cat": 30.0}


def skip_and_decoder() -> onnx.ModelProto:
    """images -> conv -> skip; images -> conv -> up; concat(skip, up) -> conv; skip -> conv (backbone)."""
    rng = np.random.default_rng(0)
    weights = {name: numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
               for name, shape in (("w_skip", (4, 3, 1, 1)), ("w_up", (4, 3, 1, 1)), ("w_head", (2, 8, 1, 1)),
                                   ("w_next", (4, 4, 1, 1)))}
    nodes = [helper.make_node("Conv", ["images", "w_skip"], ["skip"], name="conv_skip"),
             helper.make_node("Conv", ["images", "w_up"], ["up"], name="conv_up"),
             helper.make_node("Concat", ["skip", "up"], ["cat"], name="concat", axis=1),
             helper.make_node("Conv", ["cat", "w_head"], ["logits"], name="conv_head"),
             helper.make_node("Conv", ["skip", "w_next"], ["next"], name="conv_next")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 4, 4]),
                               helper.make_tensor_value_info("next", TensorProto.FLOAT, [1, 4, 4, 4])],
                              list(weights.values()))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ranges() -> Ranges:
    return Ranges("minmax", {k: TensorRange(-v, v, v) for k, v in AMAX.items()})


def scale_of(model: onnx.ModelProto, tensor: str) -> float:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return float(inits[f"{tensor}_scale"])


def test_separate_scales_keep_each_tensors_own_range() -> None:
    quantized = quantize_for_tensorrt(skip_and_decoder(), ranges())
    for tensor in ("skip", "cat"):
        assert scale_of(quantized, tensor) == pytest.approx(float(activation_scale(AMAX[tensor])))
    assert lint_qdq(quantized, ranges=ranges()) == []  # unequal scales around a Concat are fine
    check_qdq(quantized, ranges=ranges())


def test_shared_scales_pool_the_group_and_the_lint_refuses_a_coarse_one() -> None:
    quantized = quantize_for_tensorrt(skip_and_decoder(), ranges(), concat_scales="shared")
    pooled = float(np.median([AMAX["skip"], AMAX["up"], AMAX["cat"]]))  # the median, not the maximum
    assert scale_of(quantized, "skip") == scale_of(quantized, "cat") == pytest.approx(
        float(activation_scale(pooled)))
    issues = lint_qdq(quantized, ranges=ranges())
    assert [i.rule for i in issues] == ["coarse-scale"] and "skip" in issues[0].message
    assert "30.0x coarser" in issues[0].message
    with pytest.raises(ArtifactError, match="coarse-scale") as info:
        check_qdq(quantized, ranges=ranges())
    assert "--concat-scales separate" in str(info.value)
    assert lint_qdq(quantized) == []  # without ranges the rule cannot tell


def test_shared_scales_pass_where_the_group_is_alike() -> None:
    alike = Ranges("minmax", {k: TensorRange(-1.0, 1.0, 1.0) for k in AMAX})
    quantized = quantize_for_tensorrt(skip_and_decoder(), alike, concat_scales="shared")
    assert lint_qdq(quantized, ranges=alike) == []


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown Concat scale policy"):
        quantize_for_tensorrt(skip_and_decoder(), ranges(), concat_scales="max")


def _scale_of(model: onnx.ModelProto, tensor: str) -> float:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    return float(inits[node.input[1]])


def test_cpu_int8_keeps_concat_in_float_and_each_input_at_its_own_range(tmp_path) -> None:
    """The ORT CPU model: with Concat in float (the default op set) the skip tensor, which also feeds the
    backbone conv, keeps its own range; quantizing Concat too brings back the shared union."""
    from edgeseg.quant.qdq_ort import CPU_INT8_OPS, OrtInt8Options, quantize_for_onnxruntime

    path = tmp_path / "model.onnx"
    onnx.save(skip_and_decoder(), str(path))
    full = Ranges("minmax", {**ranges().tensors, "logits": TensorRange(-5, 5, 5), "next": TensorRange(-3, 3, 3)})
    default = onnx.load(str(quantize_for_onnxruntime(path, full, tmp_path / "cpu.onnx")))
    assert "Concat" not in CPU_INT8_OPS
    assert _scale_of(default, "skip") == pytest.approx(2 * AMAX["skip"] / 255, rel=1e-3)  # uint8 over [-1, 1]
    with_concat = OrtInt8Options(op_types=(*CPU_INT8_OPS, "Concat"))
    shared = onnx.load(str(quantize_for_onnxruntime(path, full, tmp_path / "shared.onnx", with_concat)))
    assert _scale_of(shared, "skip") == pytest.approx(2 * AMAX["up"] / 255, rel=1e-3)


def test_an_onnxruntime_without_saved_ranges_is_a_clear_dependency_error() -> None:
    from types import SimpleNamespace

    from edgeseg.errors import DependencyError
    from edgeseg.quant.qdq_ort import check_saved_ranges_support

    with pytest.raises(DependencyError, match="onnxruntime >= 1.27"):
        check_saved_ranges_support(SimpleNamespace())  # onnxruntime 1.19's calibrate module has no such function
    check_saved_ranges_support(SimpleNamespace(save_tensors_data=lambda *a: None))
