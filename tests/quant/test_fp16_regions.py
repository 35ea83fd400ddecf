"""FP16 float regions in model.int8.onnx (quant/fp16_regions.py): types, scales, I/O, overflow, ONNX Runtime."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers.tiny_models import build_tiny_net
from helpers.tiny_onnx import write_images
from onnx import numpy_helper

from edgeseg.onnx_model import has_fp16, input_spec_of, metadata_of, opset_of
from edgeseg.quant.calib_data import CalibrationFeed
from edgeseg.quant.calibrate import TRT_INT8_NAME, CalibrateConfig, write_trt_int8
from edgeseg.quant.fp16_regions import (
    FP16_LIMIT,
    convert_float_regions,
    float_regions_of,
    fp16_regions_wanted,
)
from edgeseg.quant.lint import lint_qdq
from edgeseg.quant.qdq_trt import DEQUANTIZED, QDQ_METADATA_KEY, quantize_for_tensorrt
from edgeseg.quant.ranges import Ranges, TensorRange, compute_ranges

FLOAT, FLOAT16, INT8 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8


@pytest.fixture(scope="module")
def float_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_net(tmp_path_factory.mktemp("fp16") / "model.onnx")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("fp16_images"), 6)[0].parent


@pytest.fixture(scope="module")
def ranges(float_model: Path, images: Path) -> Ranges:
    feed = CalibrationFeed(images, input_spec_of(onnx.load(str(float_model))), count=6)
    return Ranges("minmax", compute_ranges(float_model, feed, method="minmax"))


@pytest.fixture(scope="module")
def fp32_regions(float_model: Path, ranges: Ranges) -> onnx.ModelProto:
    return quantize_for_tensorrt(onnx.load(str(float_model)), ranges)


@pytest.fixture(scope="module")
def converted(fp32_regions: onnx.ModelProto, ranges: Ranges) -> tuple[onnx.ModelProto, object]:
    return convert_float_regions(fp32_regions, ranges)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {i.name: i.data_type for i in graph.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]})
    return types


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _inputs(float_model: Path, images: Path, count: int = 4) -> list[np.ndarray]:
    spec = input_spec_of(onnx.load(str(float_model)))
    return [batch[spec.input_name] for batch in CalibrationFeed(images, spec, count=count, seed=5)]


def _run(model: onnx.ModelProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [session.run(None, {name: x})[0] for x in inputs]


def test_float_ops_and_dequantize_outputs_are_float16(converted: tuple[onnx.ModelProto, object],
                                                      fp32_regions: onnx.ModelProto) -> None:
    model, report = converted
    assert opset_of(model) == 19 and has_fp16(model)
    types, before = _types(model), _types(fp32_regions)
    nodes = list(model.graph.node)
    dequantize = [n for n in nodes if n.op_type == "DequantizeLinear"]
    assert dequantize and all(types[n.output[0]] == FLOAT16 for n in dequantize)
    for node in nodes:
        if node.op_type not in ("Cast", "QuantizeLinear") and before.get(node.output[0]) == FLOAT:
            assert types[node.output[0]] == FLOAT16, node.name  # every float op, Resize and Concat included
    assert report.fp16_nodes > 0 and report.fp32_nodes == [] and report.fp32_tensors == {}  # type: ignore[attr-defined]
    # only the graph input and output are cast: a DequantizeLinear feeds every quantized op directly
    casts = [n for n in nodes if n.op_type == "Cast"]
    assert len(casts) == 2 and report.casts == 2  # type: ignore[attr-defined]


def test_io_stays_float32(converted: tuple[onnx.ModelProto, object], fp32_regions: onnx.ModelProto) -> None:
    model, _ = converted
    assert [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input] == \
        [(i.name, FLOAT) for i in fp32_regions.graph.input]
    assert [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output] == \
        [(o.name, FLOAT) for o in fp32_regions.graph.output]
    first, last = model.graph.node[0], model.graph.node[-1]
    assert first.op_type == "Cast" and first.input[0] == model.graph.input[0].name
    assert last.op_type == "Cast" and last.output[0] == model.graph.output[0].name


def test_quantization_is_the_float32_files(converted: tuple[onnx.ModelProto, object],
                                          fp32_regions: onnx.ModelProto) -> None:
    """Same Q/DQ nodes on the same tensors, int8 weights and zero points bit-identical, every scale the float32
    file's scale rounded to float16 (bit-exact)."""
    model, _ = converted
    before, after = _inits(fp32_regions), _inits(model)
    qdq_ops = ("QuantizeLinear", "DequantizeLinear")
    qdq = {n.name: list(n.input) for n in fp32_regions.graph.node if n.op_type in qdq_ops}
    # the same nodes reading the same names, except a Q on the graph input, which reads its float16 Cast
    assert qdq.keys() == {n.name for n in model.graph.node if n.op_type in qdq_ops}
    assert {k: v[1:] for k, v in qdq.items()} == {n.name: list(n.input)[1:] for n in model.graph.node
                                                 if n.op_type in qdq_ops}
    scales = zero_points = weights = 0
    for node in fp32_regions.graph.node:
        if node.op_type not in qdq_ops:
            continue
        scale, zero = node.input[1], node.input[2]
        assert before[scale].dtype == np.float32 and after[scale].dtype == np.float16
        assert after[scale].tobytes() == before[scale].astype(np.float16).tobytes()
        assert np.allclose(after[scale].astype(np.float32), before[scale], rtol=2.0 ** -11, atol=0)
        assert after[zero].dtype == np.int8 and after[zero].tobytes() == before[zero].tobytes()
        scales, zero_points = scales + 1, zero_points + 1
        if node.input[0] in before:  # a weight: the int8 values are untouched
            assert after[node.input[0]].tobytes() == before[node.input[0]].tobytes()
            weights += 1
    assert scales and zero_points and weights
    consumers = {n.name: n.op_type for n in model.graph.node}
    for node in model.graph.node:  # the ops a DequantizeLinear fed still read it directly
        for name in node.input:
            if name.endswith(DEQUANTIZED):
                assert consumers[node.name] != "Cast"


def test_lint_passes_and_metadata_records_the_regions(converted: tuple[onnx.ModelProto, object],
                                                      ranges: Ranges) -> None:
    model, report = converted
    assert lint_qdq(model, ranges=ranges) == []
    record = json.loads(metadata_of(model)[QDQ_METADATA_KEY])
    assert record["format"] == "qdq-tensorrt" and record["float_regions"]["high_precision"] == "fp16"
    assert float_regions_of(model) == report.to_dict()  # type: ignore[attr-defined]
    assert float_regions_of(onnx.ModelProto()) == {"high_precision": "fp32"}


def test_onnxruntime_runs_it_and_agrees_with_the_float32_regions(converted: tuple[onnx.ModelProto, object],
                                                               fp32_regions: onnx.ModelProto, float_model: Path,
                                                               images: Path) -> None:
    model, _ = converted
    inputs = _inputs(float_model, images)
    fp16 = _run(model, inputs)
    fp32 = _run(fp32_regions, inputs)
    for a, b in zip(fp16, fp32, strict=True):
        assert a.dtype == np.float32 and a.shape == b.shape
        spread = float(np.std(b))
        # float16 storage moves a few values across int8 rounding steps: small on average, never wild
        assert float(np.mean(np.abs(a - b))) < 0.05 * spread
        assert float(np.max(np.abs(a - b))) < 0.5 * spread
        assert float(np.mean(a.argmax(1) == b.argmax(1))) > 0.97


def test_a_range_beyond_float16_stays_float32_and_is_reported(fp32_regions: onnx.ModelProto, ranges: Ranges,
                                                              float_model: Path, images: Path) -> None:
    graph = fp32_regions.graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    hot = convs[1].output[0]  # an inner activation: pretend calibration saw 1e5 in it
    big = dict(ranges.tensors)
    big[hot] = TensorRange(-1.0e5, 1.0e5, 1.0e5)
    model, report = convert_float_regions(fp32_regions, replace(ranges, tensors=big))
    assert list(report.fp32_tensors) == [hot] and report.fp32_tensors[hot] == pytest.approx(1.0e5)
    assert convs[1].name in report.fp32_nodes
    types = _types(model)
    assert types[hot] == FLOAT  # written float32 by its producer...
    for node in model.graph.node:  # ...and read as float32 by every consumer
        if hot in node.input:
            assert node.op_type == "Cast" or all(types[o] != FLOAT16 for o in node.output if o in types) \
                or node.op_type == "QuantizeLinear"
            if node.op_type == "QuantizeLinear":
                assert numpy_helper.to_array(next(i for i in model.graph.initializer
                                                  if i.name == node.input[1])).dtype == np.float32
    assert any(n.op_type == "Cast" and n.input[0] == hot for n in model.graph.node) or all(
        types.get(o) == FLOAT for n in model.graph.node if hot in n.input for o in n.output)
    assert lint_qdq(model, ranges=ranges) == []
    # no DequantizeLinear output goes through a Cast: a float32 twin feeds the float32 readers
    assert not [n.name for n in model.graph.node if n.op_type == "Cast" and n.input[0].endswith(DEQUANTIZED)]
    twins = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.name.endswith("_fp32")]
    assert twins and all(types[t.output[0]] == FLOAT for t in twins)
    assert float_regions_of(model)["fp32_tensors"] == {hot: 100000.0}
    assert "kept FP32" in report.summary() and hot in report.summary()
    (out,) = _run(model, _inputs(float_model, images, 1))
    assert np.isfinite(out).all()


def test_the_limit_is_conservative() -> None:
    assert 60000.0 <= FP16_LIMIT < float(np.finfo(np.float16).max)


@pytest.mark.parametrize(("high_precision", "version", "wanted"), [
    ("fp16", "10.3.0", True), ("fp16", "10.13.0", True), ("fp16", "11.0.0", True),
    ("fp16", "8.5.2", False), ("fp16", "8.6.1", False), ("fp32", "10.3.0", False), ("fp32", "8.5.2", False),
])
def test_which_target_gets_float16_regions(high_precision: str, version: str, wanted: bool) -> None:
    assert fp16_regions_wanted(high_precision, version) is wanted


def test_write_trt_int8_follows_the_config(float_model: Path, ranges: Ranges, tmp_path: Path) -> None:
    model = onnx.load(str(float_model))
    written = {}
    for label, config in {"default": CalibrateConfig(), "fp32": CalibrateConfig(high_precision="fp32"),
                          "trt85": CalibrateConfig(trt_version="8.5.2")}.items():
        path = write_trt_int8(model, ranges, tmp_path / label, config)
        assert path.name == TRT_INT8_NAME
        written[label] = onnx.load(str(path))
    assert has_fp16(written["default"]) and opset_of(written["default"]) == 19
    assert float_regions_of(written["default"])["high_precision"] == "fp16"
    for label in ("fp32", "trt85"):  # float32 regions, opset as exported
        assert not has_fp16(written[label]) and opset_of(written[label]) == opset_of(model)
        assert float_regions_of(written[label]) == {"high_precision": "fp32"}
    # the placement follows the TensorRT target (issue #29): per-tensor ConvTranspose weights for 8.x
    targets = {label: json.loads(metadata_of(written[label])[QDQ_METADATA_KEY]) for label in ("fp32", "trt85")}
    assert (targets["fp32"]["trt_version"], targets["fp32"]["deconv_weights"]) == ("10.3.0", "per-channel")
    assert (targets["trt85"]["trt_version"], targets["trt85"]["deconv_weights"]) == ("8.5.2", "per-tensor")


def test_unknown_high_precision_is_refused() -> None:
    from edgeseg.errors import ConfigError

    with pytest.raises(ConfigError, match="high-precision"):
        CalibrateConfig(high_precision="bf16").check()
