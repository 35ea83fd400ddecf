"""The Q/DQ lint: the produced model passes, each hand-broken model fails with the right rule."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.tiny_models import build_tiny_net
from helpers.tiny_onnx import write_images

from edgeseg.errors import ArtifactError
from edgeseg.onnx_model import input_spec_of
from edgeseg.quant.calib_data import CalibrationFeed
from edgeseg.quant.lint import check_qdq, lint_qdq
from edgeseg.quant.qdq_ort import OrtInt8Options, quantize_for_onnxruntime
from edgeseg.quant.qdq_trt import quantize_for_tensorrt
from edgeseg.quant.ranges import Ranges, compute_ranges


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ranges, bytes]:
    root = tmp_path_factory.mktemp("lint")
    model = build_tiny_net(root / "model.onnx")
    write_images(root / "images", 3)
    feed = CalibrationFeed(root / "images", input_spec_of(onnx.load(str(model))), count=3)
    ranges = Ranges("minmax", compute_ranges(model, feed, method="minmax"))
    return model, ranges, quantize_for_tensorrt(onnx.load(str(model)), ranges).SerializeToString()


def _fresh(built: tuple[Path, Ranges, bytes]) -> onnx.ModelProto:
    return onnx.ModelProto.FromString(built[2])


def _node(model: onnx.ModelProto, predicate: Callable[[onnx.NodeProto], bool]) -> onnx.NodeProto:
    return next(n for n in model.graph.node if predicate(n))


def _set_init(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for i, init in enumerate(model.graph.initializer):
        if init.name == name:
            model.graph.initializer[i].CopyFrom(onnx.numpy_helper.from_array(value, name))
            return
    model.graph.initializer.append(onnx.numpy_helper.from_array(value, name))


def _rules(model: onnx.ModelProto) -> set[str]:
    return {issue.rule for issue in lint_qdq(model)}


def test_clean_model_passes(built: tuple[Path, Ranges, bytes]) -> None:
    assert lint_qdq(_fresh(built)) == []
    check_qdq(_fresh(built))  # does not raise


def test_float_model_has_no_qdq(built: tuple[Path, Ranges, bytes]) -> None:
    assert {"no-qdq", "missing-qdq"} <= _rules(onnx.load(str(built[0])))


def test_nonzero_zero_point(built: tuple[Path, Ranges, bytes]) -> None:
    model = _fresh(built)
    _set_init(model, "/Relu_output_0_zero_point", np.array(3, np.int8))
    issues = lint_qdq(model)
    assert {i.rule for i in issues} == {"zero-point"}
    assert all("Relu_output_0" in i.node for i in issues)


def test_uint8_zero_point(built: tuple[Path, Ranges, bytes]) -> None:
    model = _fresh(built)
    _set_init(model, "images_zero_point", np.array(0, np.uint8))
    assert _rules(model) == {"int8-type"}


def test_qoperator_model_from_onnxruntime_is_refused(built: tuple[Path, Ranges, bytes], tmp_path: Path) -> None:
    out = quantize_for_onnxruntime(built[0], built[1], tmp_path / "qop.onnx", OrtInt8Options(quant_format="qoperator"))
    rules = _rules(onnx.load(str(out)))
    assert "unsupported-op" in rules  # QLinearConv / QLinearMatMul ...
    assert "int8-type" in rules  # uint8 activations


def test_qlinearconv_node(built: tuple[Path, Ranges, bytes]) -> None:
    model = _fresh(built)
    conv = _node(model, lambda n: n.op_type == "Conv")
    conv.op_type = "QLinearConv"
    assert "unsupported-op" in _rules(model)


def _for_trt(built: tuple[Path, Ranges, bytes], version: str) -> onnx.ModelProto:
    return quantize_for_tensorrt(onnx.load(str(built[0])), built[1], trt_version=version)


@pytest.mark.parametrize("version", ["8.5.2", "10.3"])
def test_dequantize_feeding_a_resize(built: tuple[Path, Ranges, bytes], version: str) -> None:
    model = _for_trt(built, version)
    assert _rules(model) == set()
    resize = _node(model, lambda n: n.op_type == "Resize")
    resize.input[0] = resize.input[0] + "_dequantized"  # its input is quantized for the ConvTranspose
    # TensorRT 8.5's parser runs Resize in FP32/FP16 only; 10 runs it on int8 (the file records its target)
    assert _rules(model) == ({"resize"} if version.startswith("8.") else set())


@pytest.mark.parametrize("version", ["8.5.2", "10.3"])
def test_quantize_after_a_resize(built: tuple[Path, Ranges, bytes], version: str) -> None:
    model = _for_trt(built, version)
    q = _node(model, lambda n: n.op_type == "QuantizeLinear" and n.input[0] == "/Concat_1_output_0")
    q.input[0] = "/Resize_output_0"
    assert ("resize" in _rules(model)) == version.startswith("8.")


def test_a_file_without_edgeseg_metadata_gets_the_8x_resize_rule(built: tuple[Path, Ranges, bytes]) -> None:
    model = _for_trt(built, "10.3")
    del model.metadata_props[:]  # another quantizer's file: no TensorRT target recorded
    resize = _node(model, lambda n: n.op_type == "Resize")
    resize.input[0] = resize.input[0] + "_dequantized"
    assert "resize" in _rules(model)


def test_deconvolution_weights_per_tensor_for_tensorrt_8(built: tuple[Path, Ranges, bytes]) -> None:
    model = _for_trt(built, "8.5.2")
    assert _rules(model) == set()
    deconv = _node(model, lambda n: n.op_type == "ConvTranspose")
    dq = _node(model, lambda n: n.output[0] == deconv.input[1])
    scale = next(i for i in model.graph.initializer if i.name == dq.input[1])
    assert list(scale.dims) == [] and not any(a.name == "axis" for a in dq.attribute)  # one scale per tensor
    per_channel = _for_trt(built, "10.3")  # axis 1, one scale per output channel: refused for 8.x
    for prop in per_channel.metadata_props:
        if prop.key == "edgeseg_quantization":
            prop.value = prop.value.replace('"trt_version": "10.3.0"', '"trt_version": "8.5.2"')
    issues = lint_qdq(per_channel)
    assert [i.rule for i in issues] == ["weight-axis"] and "TensorRT#2380" in issues[0].message


def test_concat_with_two_scales_is_allowed_but_a_coarse_scale_is_not(built: tuple[Path, Ranges, bytes]) -> None:
    _, ranges, _ = built
    model = _fresh(built)
    assert lint_qdq(model, ranges=ranges) == []  # as quantized: separate scales, none coarse
    own = ranges.amax("/Relu_output_0")
    _set_init(model, "/Relu_output_0_scale", np.array(own * 3 / 127, np.float32))  # feeds Concat_1 through a DQ
    assert lint_qdq(model) == []  # unequal Concat scales are fine for TensorRT
    issues = lint_qdq(model, ranges=ranges)
    assert [i.rule for i in issues] == ["coarse-scale"] and "3.0x coarser" in issues[0].message


def test_missing_weight_qdq(built: tuple[Path, Ranges, bytes]) -> None:
    model = _fresh(built)
    conv = _node(model, lambda n: n.op_type == "Conv" and n.name == "/down/down.0/Conv")
    _set_init(model, "down_weight_float", np.zeros((16, 8, 3, 3), np.float32))
    conv.input[1] = "down_weight_float"
    issues = lint_qdq(model)
    assert [(i.rule, i.node) for i in issues] == [("missing-qdq", "/down/down.0/Conv")]


def test_missing_activation_qdq(built: tuple[Path, Ranges, bytes]) -> None:
    model = _fresh(built)
    conv = _node(model, lambda n: n.name == "/res/res.0/Conv")
    conv.input[0] = "/stem/stem.2/Relu_output_0"
    assert [(i.rule, i.node) for i in lint_qdq(model)] == [("missing-qdq", "/res/res.0/Conv")]


def test_per_tensor_or_wrong_axis_weights(built: tuple[Path, Ranges, bytes]) -> None:
    model = _fresh(built)
    dq = _node(model, lambda n: n.name == "res.0.weight_DequantizeLinear")
    dq.attribute[0].i = 1
    assert _rules(model) == {"weight-axis"}
    model = _fresh(built)
    dq = _node(model, lambda n: n.name == "up.weight_DequantizeLinear")  # ConvTranspose: axis 1 expected
    dq.attribute[0].i = 0
    _set_init(model, "up.weight_scale", np.full(16, 0.01, np.float32))
    _set_init(model, "up.weight_zero_point", np.zeros(16, np.int8))
    assert _rules(model) == {"weight-axis"}


def test_per_channel_activation_scale(built: tuple[Path, Ranges, bytes]) -> None:
    model = _fresh(built)
    _set_init(model, "images_scale", np.full(3, 0.02, np.float32))
    assert "per-tensor" in _rules(model)


def test_check_qdq_lists_the_issues(built: tuple[Path, Ranges, bytes]) -> None:
    model = _fresh(built)
    _set_init(model, "images_zero_point", np.array(5, np.int8))
    with pytest.raises(ArtifactError, match="zero-point") as info:
        check_qdq(model, source="x.onnx")
    assert "x.onnx" in str(info.value) and "2 issue" in str(info.value)  # its Q and its DQ
