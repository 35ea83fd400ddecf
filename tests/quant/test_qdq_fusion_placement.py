"""Issue #29's placement on small graphs: the Q/DQ it adds for TensorRT's fusion changes no value where it
claims not to (MaxPool input at the output's scale, Concat input edges at the scale after Concat + ReLU), the
HRNet Add -> Add chain gets none, Resize inputs only for TensorRT >= 10, ConvTranspose weights per tensor on 8.x."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgeseg.quant.lint import lint_qdq, qdq_warnings  # noqa: E402
from edgeseg.quant.qdq_trt import quantize_for_tensorrt  # noqa: E402
from edgeseg.quant.ranges import Ranges, TensorRange  # noqa: E402
from edgeseg.quant.trt_fusion import predict_fusion  # noqa: E402

C, H, W = 4, 8, 8


def _model(nodes: list[Any], inits: list[Any], out_channels: int = C, out_hw: tuple[int, int] = (H, W)) -> Any:
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, H, W])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_channels, *out_hw])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _conv(name: str, x: str, out: str, rng: np.random.Generator, inits: list[Any], cin: int = C) -> Any:
    inits.append(numpy_helper.from_array(rng.standard_normal((C, cin, 3, 3)).astype(np.float32), f"{name}.w"))
    return helper.make_node("Conv", [x, f"{name}.w"], [out], name=name, pads=[1, 1, 1, 1])


def _ranges(model: Any, x: np.ndarray) -> Ranges:
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    names = [o for n in probe.graph.node for o in n.output if o != "y"]
    probe.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names])
    values = ort.InferenceSession(probe.SerializeToString()).run(["y", *names], {"x": x})
    tensors = {"x": x, **dict(zip(["y", *names], values, strict=True))}
    return Ranges("minmax", {n: TensorRange(float(v.min()), float(v.max()), float(np.abs(v).max()))
                             for n, v in tensors.items()})


def _run(model: Any, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the Q/DQ arithmetic as written
    return ort.InferenceSession(model.SerializeToString(), options).run(None, {"x": x})[0]


def _without(model: Any, rewire: dict[str, str]) -> Any:
    """``model`` with the inputs named in ``rewire`` read from another tensor (an added Q/DQ bypassed)."""
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    for node in copy.graph.node:
        for i, name in enumerate(node.input):
            if name in rewire and node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                node.input[i] = rewire[name]
    return copy


def _stem_and_decoder() -> tuple[Any, np.ndarray]:
    """conv -> relu -> maxpool -> conv -> relu -> concat(with the pooled skip) -> relu -> conv."""
    rng = np.random.default_rng(0)
    inits: list[Any] = []
    nodes = [
        _conv("c1", "x", "c1o", rng, inits), helper.make_node("Relu", ["c1o"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        _conv("c2", "p", "c2o", rng, inits), helper.make_node("Relu", ["c2o"], ["r2"], name="relu2"),
        helper.make_node("Concat", ["r2", "p"], ["cat"], name="cat", axis=1),
        helper.make_node("Relu", ["cat"], ["r3"], name="relu3"),
        _conv("c3", "r3", "y", rng, inits, cin=2 * C),
    ]
    return _model(nodes, inits), rng.standard_normal((1, C, H, W)).astype(np.float32)


@pytest.mark.parametrize("version", ["8.5.2", "10.3"])
def test_maxpool_and_concat_qdq_change_no_value(version: str) -> None:
    model, x = _stem_and_decoder()
    ranges = _ranges(model, x)
    quantized = quantize_for_tensorrt(model, ranges, trt_version=version)
    assert lint_qdq(quantized, ranges=ranges) == []
    pool = next(n for n in quantized.graph.node if n.op_type == "MaxPool")
    cat = next(n for n in quantized.graph.node if n.op_type == "Concat")
    assert pool.input[0] == "r1_dequantized"  # item 1: the stem's ReLU output quantized ...
    scales = {i.name: float(numpy_helper.to_array(i)) for i in quantized.graph.initializer if i.name.endswith("_scale")
              and not i.dims}
    assert scales["r1_scale"] == scales["p_scale"]  # ... at the MaxPool output's scale
    assert list(cat.input) == ["r2_to_cat_dequantized", "p_to_cat_dequantized"]  # item 4: per-edge Q/DQ ...
    assert scales["r2_to_cat_scale"] == scales["p_to_cat_scale"] == scales["r3_scale"]  # ... at the ReLU's scale
    bypassed = _without(quantized, {"r1_dequantized": "r1", "r2_to_cat_dequantized": "r2",
                                    "p_to_cat_dequantized": "p_dequantized"})
    assert np.array_equal(_run(quantized, x), _run(bypassed, x))  # numerically identical
    before = predict_fusion(bypassed, version)
    after = predict_fusion(quantized, version)
    assert after.precision_boundaries < before.precision_boundaries
    assert after.int8_in_float_out < before.int8_in_float_out


def test_add_chain_without_a_conv_gets_no_qdq_and_no_round_trip() -> None:
    # item 2: y = relu(conv(x) + x) + relu(x) + x: the second and third Adds have no conv on either side
    rng = np.random.default_rng(1)
    inits: list[Any] = []
    nodes = [
        helper.make_node("Relu", ["x"], ["rx"], name="rx"),
        _conv("c1", "rx", "c1o", rng, inits),
        helper.make_node("Add", ["c1o", "rx"], ["a1"], name="add1"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
        helper.make_node("Add", ["r1", "rx"], ["a2"], name="add2"),
        helper.make_node("Add", ["a2", "x"], ["y"], name="add3"),
    ]
    model = _model(nodes, inits)
    x = rng.standard_normal((1, C, H, W)).astype(np.float32)
    quantized = quantize_for_tensorrt(model, _ranges(model, x))
    quantized_tensors = {n.input[0] for n in quantized.graph.node if n.op_type == "QuantizeLinear"}
    assert quantized_tensors == {"rx"}  # the conv's input, also add1's residual; never r1 or a2
    assert qdq_warnings(quantized) == []
    assert predict_fusion(quantized, "10.3").round_trips == []


@pytest.mark.parametrize("version,quantized_input", [("8.5.2", False), ("10.3", True)])
def test_resize_input_from_a_conv(version: str, quantized_input: bool) -> None:
    # item 6: Q/DQ on a Resize input fed by a conv (+ ReLU) on TensorRT 10 only; never before the final one
    rng = np.random.default_rng(2)
    inits: list[Any] = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up")]
    nodes = [
        _conv("c1", "x", "c1o", rng, inits), helper.make_node("Relu", ["c1o"], ["r1"], name="relu1"),
        helper.make_node("Resize", ["r1", "", "up"], ["u"], name="resize", mode="nearest"),
        _conv("c2", "u", "c2o", rng, inits),
        helper.make_node("Resize", ["c2o", "", "up"], ["y"], name="final", mode="nearest"),
    ]
    model = _model(nodes, inits, out_hw=(4 * H, 4 * W))
    x = rng.standard_normal((1, C, H, W)).astype(np.float32)
    ranges = _ranges(model, x)
    quantized = quantize_for_tensorrt(model, ranges, trt_version=version)
    resizes = {n.name: n for n in quantized.graph.node if n.op_type == "Resize"}
    assert (resizes["resize"].input[0] == "r1_dequantized") == quantized_input
    assert resizes["final"].input[0] == "c2o"  # the logits are never rounded before the last upsampling
    assert lint_qdq(quantized, ranges=ranges) == []


@pytest.mark.parametrize("version,per_tensor", [("8.5.2", True), ("10.3", False)])
def test_convtranspose_weights_follow_the_tensorrt_version(version: str, per_tensor: bool) -> None:
    # item 5: TensorRT 8.x has no per-output-channel deconvolution weights (TensorRT#2380)
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((C, C, 2, 2)).astype(np.float32), "up.w")]
    nodes = [helper.make_node("ConvTranspose", ["x", "up.w"], ["y"], name="up", strides=[2, 2])]
    model = _model(nodes, inits, out_hw=(2 * H, 2 * W))
    x = rng.standard_normal((1, C, H, W)).astype(np.float32)
    quantized = quantize_for_tensorrt(model, _ranges(model, x), trt_version=version)
    scale = next(i for i in quantized.graph.initializer if i.name == "up.w_scale")
    assert (list(scale.dims) == []) == per_tensor
    assert lint_qdq(quantized) == []
    reference = _run(model, x)
    assert np.abs(_run(quantized, x) - reference).max() < 0.05 * np.abs(reference).max()
    prediction = predict_fusion(quantized, version)
    assert prediction.int8_weighted_layers == 1
    # item 5 is recorded: the file's metadata, and the prediction (hence the build's manifest) carry the choice
    assert prediction.to_dict(brief=True)["placement"] == {
        "trt_version": "8.5.2" if per_tensor else "10.3.0", "deconv_weights": "per-tensor" if per_tensor
        else "per-channel"}


def _shuffle_unit() -> tuple[Any, np.ndarray]:
    """ShuffleNet's unit: split channels, conv one half, concat, shuffle (reshape-transpose-reshape), split, conv."""
    rng = np.random.default_rng(4)
    half = C // 2
    inits: list[Any] = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (
        ("s0", [0]), ("sh", [half]), ("sc", [C]), ("ax", [1]), ("g", [1, 2, half, H, W]), ("flat", [1, C, H, W]))]
    inits.append(numpy_helper.from_array(rng.standard_normal((half, half, 3, 3)).astype(np.float32), "b.w"))
    inits.append(numpy_helper.from_array(rng.standard_normal((C, half, 3, 3)).astype(np.float32), "n.w"))
    nodes = [
        helper.make_node("Relu", ["x"], ["rx"], name="rx"),
        helper.make_node("Slice", ["rx", "s0", "sh", "ax"], ["left"], name="split0"),
        helper.make_node("Slice", ["rx", "sh", "sc", "ax"], ["right"], name="split1"),
        helper.make_node("Conv", ["right", "b.w"], ["bc"], name="branch", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["bc"], ["br"], name="branch_relu"),
        helper.make_node("Concat", ["left", "br"], ["cat"], name="cat", axis=1),
        helper.make_node("Reshape", ["cat", "g"], ["g5"], name="group"),
        helper.make_node("Transpose", ["g5"], ["t5"], name="shuffle", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t5", "flat"], ["mixed"], name="ungroup"),
        helper.make_node("Slice", ["mixed", "sh", "sc", "ax"], ["next"], name="next_split"),
        helper.make_node("Conv", ["next", "n.w"], ["y"], name="next_conv", pads=[1, 1, 1, 1]),
    ]
    return _model(nodes, inits), rng.standard_normal((1, C, H, W)).astype(np.float32)


def test_shuffle_unit_shares_the_concat_scale_and_runs_in_onnxruntime_with_fp16_regions() -> None:
    from edgeseg.quant.fp16_regions import convert_float_regions

    model, x = _shuffle_unit()
    ranges = _ranges(model, x)
    quantized = quantize_for_tensorrt(model, ranges, trt_version="10.3")
    assert lint_qdq(quantized, ranges=ranges) == []
    cat = next(n for n in quantized.graph.node if n.op_type == "Concat")
    assert list(cat.input) == ["left_to_cat_dequantized", "br_to_cat_dequantized"]
    scales = {i.name: float(numpy_helper.to_array(i)) for i in quantized.graph.initializer if i.name.endswith("_scale")
              and not i.dims}
    assert scales["left_to_cat_scale"] == scales["br_to_cat_scale"] == scales["next_scale"]  # one scale: cat's
    prediction = predict_fusion(quantized, "10.3")
    assert prediction.int8_in_float_out == 1 and prediction.standalone_quantize == 2  # x's Relu and the left half
    fp16, _ = convert_float_regions(quantized, ranges)
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(fp16).graph.value_info}
    assert types["cat"] == TensorProto.FLOAT  # ONNX Runtime's QLinearConcat takes no float16 scales
    reference = _run(model, x)
    for candidate in (quantized, fp16):  # with ONNX Runtime's own Q/DQ fusions (its CPU simulation)
        out = ort.InferenceSession(candidate.SerializeToString()).run(None, {"x": x})[0]
        assert np.abs(out.astype(np.float32) - reference).max() < 0.1 * np.abs(reference).max()
