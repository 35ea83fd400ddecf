"""The TensorRT fusion predictor (quant/trt_fusion.py): one small hand-built Q/DQ graph per rule."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgeseg.quant.lint import qdq_warnings  # noqa: E402
from edgeseg.quant.trt_fusion import predict_fusion  # noqa: E402

C, H, W = 4, 8, 8  # every activation is 1 x C x H x W float32 (1 KiB) unless a layer changes it


class _Net:
    """A tiny graph builder: activations flow through named tensors; Q/DQ pairs and int8 weights on request."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0

    def _name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def qdq(self, x: str, scale: float = 0.1) -> str:
        s, z = self._name("s"), self._name("z")
        self.inits += [numpy_helper.from_array(np.array(scale, np.float32), s),
                       numpy_helper.from_array(np.array(0, np.int8), z)]
        q, dq = self._name("q"), self._name("dq")
        self.nodes += [helper.make_node("QuantizeLinear", [x, s, z], [q], name=f"Q_{x}"),
                       helper.make_node("DequantizeLinear", [q, s, z], [dq], name=f"DQ_{x}")]
        return dq

    def weight(self, shape: tuple[int, ...], axis: int | None) -> str:
        w, s, z, out = self._name("w"), self._name("ws"), self._name("wz"), self._name("wdq")
        channels = 1 if axis is None else shape[axis]
        scale = np.full(() if axis is None else (channels,), 0.01, np.float32)
        self.inits += [numpy_helper.from_array(np.ones(shape, np.int8), w), numpy_helper.from_array(scale, s),
                       numpy_helper.from_array(np.zeros(scale.shape, np.int8), z)]
        attrs = {} if axis is None else {"axis": axis}
        self.nodes.append(helper.make_node("DequantizeLinear", [w, s, z], [out], name=f"DQ_{w}", **attrs))
        return out

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{op_type}_{out}", **attrs))
        return out

    def conv(self, x: str) -> str:
        return self.op("Conv", [x, self.weight((C, C, 1, 1), 0)])

    def deconv(self, x: str, axis: int | None) -> str:
        return self.op("ConvTranspose", [x, self.weight((C, C, 1, 1), axis)])

    def model(self, output: str, out_shape: tuple[int, ...] = (1, C, H, W)) -> Any:
        graph = helper.make_graph(
            self.nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, H, W])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, list(out_shape))], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_conv_relu_q_fuses_and_the_input_q_is_a_boundary() -> None:
    # [QDQ] Conv + ReLU + Q is one INT8 kernel; the image's Q has no INT8 producer: a boundary
    net = _Net()
    y = net.op("Relu", [net.conv(net.qdq("x"))])
    out = net.conv(net.qdq(y))
    p = predict_fusion(net.model(out), "10.3")
    assert (p.precision_boundaries, p.standalone_quantize, p.standalone_dequantize) == (1, 1, 0)
    assert (p.int8_weighted_layers, p.int8_in_float_out) == (2, 1)  # the last conv writes the float output
    assert p.round_trips == []
    # bytes written: int8 Q of x + int8 relu output (256 B each), float logits (1024 B)
    assert (p.activation_bytes, p.float_activation_bytes) == (256 + 256 + 1024, 1024)


@pytest.mark.parametrize("placed_on_input", [False, True])
def test_maxpool_in_the_stem(placed_on_input: bool) -> None:
    # item 1: Q/DQ on MaxPool's input lets the stem conv write int8 ([QDQ] MaxPool commutes with Q/DQ)
    net = _Net()
    stem = net.op("Relu", [net.conv(net.qdq("x"))])
    pooled = net.op("MaxPool", [net.qdq(stem) if placed_on_input else stem], kernel_shape=[1, 1])
    out = net.conv(net.qdq(pooled))
    p = predict_fusion(net.model(out), "10.3")
    assert p.standalone_quantize == (1 if placed_on_input else 2)
    assert p.int8_in_float_out == (1 if placed_on_input else 2)


def test_residual_add_fuses_into_the_conv_and_an_add_add_round_trip_is_found() -> None:
    # [QDQ] Conv + Add fusion needs the residual through a DQ; item 2: a Q/DQ that only an Add reads is rounding
    net = _Net()
    a = net.op("Relu", [net.conv(net.qdq("x"))])
    fused = net.op("Relu", [net.op("Add", [net.conv(net.qdq(a)), net.qdq(a)])])
    chain = net.op("Add", [fused, "x"])  # float Add, no conv: its Q/DQ output feeds another float Add only
    out = net.op("Add", [net.qdq(chain), "x"])
    model = net.model(out)
    p = predict_fusion(model, "10.3")
    assert p.int8_weighted_layers == 2 and p.round_trips == [chain]
    assert [i.rule for i in qdq_warnings(model, trt_version="10.3")] == ["round-trip"]


@pytest.mark.parametrize("quantized", [False, True])
def test_averagepool_with_qdq_around_it(quantized: bool) -> None:
    # item 3: [QDQ] a quantized AveragePool fuses its input DQ and output Q (no standalone Q after it)
    net = _Net()
    a = net.op("Relu", [net.conv(net.qdq("x"))])
    pooled = net.op("AveragePool", [net.qdq(a) if quantized else a], kernel_shape=[1, 1])
    out = net.conv(net.qdq(pooled))
    p = predict_fusion(net.model(out), "10.3")
    assert p.standalone_quantize == (1 if quantized else 2)


@pytest.mark.parametrize("scales,dq_kernels", [((0.1, 0.1), 0), ((0.1, 0.2), 2)])
def test_concat_of_dq_inputs_is_int8_only_at_equal_scales(scales: tuple[float, float], dq_kernels: int) -> None:
    # item 4: [QDQ] DQ moves forward over a Concat only when the scales are equal; otherwise the Concat is float
    net = _Net()
    a = net.op("Relu", [net.conv(net.qdq("x"))])
    b = net.op("Relu", [net.conv(net.qdq("x"))])
    joined = net.op("Concat", [net.qdq(a, scales[0]), net.qdq(b, scales[1])], axis=1)
    out = net.op("Relu", [joined])
    p = predict_fusion(net.model(out, (1, 2 * C, H, W)), "10.3")
    assert p.standalone_dequantize == dq_kernels + (1 if dq_kernels == 0 else 0)  # int8 output read as float
    assert p.int8_in_float_out == 0


def test_q_after_a_concat_moves_onto_its_inputs() -> None:
    # [QDQ] a Q after a Concat is cloned onto each input: conv inputs take it fused, a DQ at another scale requantizes
    net = _Net()
    a = net.op("Relu", [net.conv(net.qdq("x"))])
    b = net.conv(net.qdq("x", 0.3))
    joined = net.op("Concat", [a, net.qdq(b, 0.2)], axis=1)
    out = net.op("Conv", [net.qdq(joined), net.weight((C, 2 * C, 1, 1), 0)])
    p = predict_fusion(net.model(out), "10.3")
    assert p.requantize == 1  # b's DQ at 0.2 -> the Concat's Q at 0.1: one int8 -> int8 kernel
    assert p.standalone_quantize == 2  # the image's two Qs; a's conv takes the moved Q fused
    assert p.int8_in_float_out == 1  # only the last conv (graph output) writes float


@pytest.mark.parametrize("version,axis,int8", [("8.5.2", 1, False), ("8.5.2", None, True), ("10.3", 1, True)])
def test_deconvolution_weights_on_tensorrt_8(version: str, axis: int | None, int8: bool) -> None:
    # item 5: [DECONV] 8.x has no per-output-channel deconvolution weights: such a layer is not INT8
    net = _Net()
    out = net.deconv(net.qdq("x"), axis)
    p = predict_fusion(net.model(out), version)
    assert p.weighted_layers == 1 and p.int8_weighted_layers == (1 if int8 else 0)
    assert p.standalone_dequantize == (0 if int8 else 1)


def test_no_q_is_fused_after_a_deconvolution() -> None:
    net = _Net()
    up = net.deconv(net.qdq("x"), 1)
    out = net.conv(net.qdq(up))
    p = predict_fusion(net.model(out), "10.3")
    assert p.standalone_quantize == 2 and p.float_out_layers[0].startswith("ConvTranspose")


@pytest.mark.parametrize("version,boundaries", [("8.5.2", 2), ("10.3", 1)])
def test_resize_reads_int8_on_tensorrt_10_only(version: str, boundaries: int) -> None:
    # item 6: [RESIZE8] 8.5 runs Resize in FP32/FP16 (a DQ kernel before it); [MODELOPT] 10 reads int8
    net = _Net()
    scales = "rs"
    net.inits.append(numpy_helper.from_array(np.array([1, 1, 1, 1], np.float32), scales))
    a = net.conv(net.qdq("x"))
    out = net.op("Resize", [net.qdq(a), "", scales], mode="nearest")
    p = predict_fusion(net.model(out), version)
    assert p.precision_boundaries == boundaries
    assert p.standalone_dequantize == (1 if version.startswith("8.") else 0)


def test_float16_regions_count_two_bytes() -> None:
    net = _Net()
    out = net.op("Relu", [net.op("Sigmoid", ["x"])])  # no Q/DQ: all float, Sigmoid + Relu one fused kernel
    model = net.model(out)
    assert predict_fusion(model, "10.3").float_activation_bytes == C * H * W * 4
    result = predict_fusion(model, "10.3").to_dict(brief=True)
    assert result["prediction"] is True and "boundaries_at" not in result
    for info in (*model.graph.input, *model.graph.output):
        info.type.tensor_type.elem_type = TensorProto.FLOAT16
    assert predict_fusion(model, "10.3").float_activation_bytes == C * H * W * 2


def test_fake_quantized_weights_and_constant_scales_are_read_as_weights() -> None:
    # other quantizers (ModelOpt) write float weights -> Q -> DQ, and scales as Constant nodes
    net = _Net()
    w, s, z = "wf", "wscale", "wzero"
    net.inits.append(numpy_helper.from_array(np.ones((C, C, 1, 1), np.float32), w))
    net.nodes += [
        helper.make_node("Constant", [], [s], value=numpy_helper.from_array(np.full((C,), 0.01, np.float32))),
        helper.make_node("Constant", [], [z], value=numpy_helper.from_array(np.zeros((C,), np.int8))),
        helper.make_node("QuantizeLinear", [w, s, z], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", s, z], ["wdq"], axis=0),
    ]
    out = net.op("Conv", [net.qdq("x"), "wdq"])
    p = predict_fusion(net.model(out), "10.3")
    assert (p.int8_weighted_layers, p.standalone_quantize, p.precision_boundaries) == (1, 1, 1)
