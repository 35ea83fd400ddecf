"""model.int8.onnx follows TensorRT's Q/DQ rules and stays close to the float model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers.tiny_models import build_tiny_net
from helpers.tiny_onnx import write_images

from edgeseg.errors import ArtifactError, ConfigError
from edgeseg.onnx_model import input_spec_of, metadata_of
from edgeseg.quant.calib_data import CalibrationFeed
from edgeseg.quant.lint import lint_qdq
from edgeseg.quant.qdq_trt import QDQ_METADATA_KEY, activation_scale, concat_shared_ranges, quantize_for_tensorrt
from edgeseg.quant.ranges import Ranges, TensorRange, compute_ranges


@pytest.fixture(scope="module")
def float_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_net(tmp_path_factory.mktemp("qdq") / "model.onnx")


@pytest.fixture(scope="module")
def ranges(float_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Ranges:
    images = write_images(tmp_path_factory.mktemp("qdq_images"), 4)[0].parent
    feed = CalibrationFeed(images, input_spec_of(onnx.load(str(float_model))), count=4)
    return Ranges("minmax", compute_ranges(float_model, feed, method="minmax"))


@pytest.fixture(scope="module")
def quantized(float_model: Path, ranges: Ranges) -> onnx.ModelProto:
    return quantize_for_tensorrt(onnx.load(str(float_model)), ranges)


def _by_op(model: onnx.ModelProto, op: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op]


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


def test_the_produced_model_passes_the_lint_and_the_checker(quantized: onnx.ModelProto) -> None:
    onnx.checker.check_model(quantized, full_check=True)
    assert lint_qdq(quantized) == []
    info = json.loads(metadata_of(quantized)[QDQ_METADATA_KEY])
    assert info["format"] == "qdq-tensorrt" and info["weights"] == 9  # 6 Conv, Gemm, MatMul, ConvTranspose
    assert "input_spec" in metadata_of(quantized)  # the exporter's metadata is kept


def test_every_weight_op_reads_int8_per_channel_weights_on_its_axis(quantized: onnx.ModelProto) -> None:
    producers = _producers(quantized)
    expected_axis = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0, "MatMul": 1}  # Gemm: torch Linear has transB=1
    for op, axis in expected_axis.items():
        for node in _by_op(quantized, op):
            dq = producers[node.input[1]]
            assert dq.op_type == "DequantizeLinear"
            weight = _init(quantized, dq.input[0])
            scale = _init(quantized, dq.input[1])
            assert weight.dtype == np.int8 and np.abs(weight).max() == 127
            assert next(a.i for a in dq.attribute if a.name == "axis") == axis
            assert scale.shape == (weight.shape[axis],)
            assert not _init(quantized, dq.input[2]).any()
            data = producers[node.input[0]]
            assert data.op_type == "DequantizeLinear" and _init(quantized, data.input[1]).shape == ()


def test_weights_dequantize_close_to_the_float_weights(float_model: Path, quantized: onnx.ModelProto) -> None:
    original = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(float_model)).graph.initializer}
    for dq in _by_op(quantized, "DequantizeLinear"):
        name = dq.input[0].removesuffix("_quantized")
        if name in original and original[name].ndim >= 2:
            axis = next(a.i for a in dq.attribute if a.name == "axis")
            shape = [1] * original[name].ndim
            shape[axis] = -1
            scale = _init(quantized, dq.input[1]).reshape(shape)
            restored = _init(quantized, dq.input[0]).astype(np.float32) * scale
            assert np.all(np.abs(restored - original[name]) <= scale / 2 + 1e-7)


def test_placement_rules(quantized: onnx.ModelProto, ranges: Ranges) -> None:
    producers = _producers(quantized)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in quantized.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for resize in _by_op(quantized, "Resize"):  # nothing around Resize
        assert producers[resize.input[0]].op_type != "DequantizeLinear"
        assert all(c.op_type != "QuantizeLinear" for c in consumers.get(resize.output[0], []))
    add = _by_op(quantized, "Add")[0]  # residual input quantized, the conv output is not
    kinds = sorted(producers[t].op_type for t in add.input)
    assert kinds == ["Conv", "DequantizeLinear"]
    for q in _by_op(quantized, "QuantizeLinear"):  # no Q on a Conv output
        assert producers.get(q.input[0]) is None or producers[q.input[0]].op_type not in ("Conv", "Gemm")
    # separate scales: each Concat input keeps its own range; the output spans its inputs' ranges
    concat = next(n for n in _by_op(quantized, "Concat") if n.output[0] in ranges.tensors)
    for tensor in concat.input:
        if producers[tensor].op_type == "DequantizeLinear":
            own = producers[tensor].input[0].removesuffix("_quantized")
            assert float(_init(quantized, producers[tensor].input[1])) == float(activation_scale(ranges.amax(own)))
    inputs = [ranges.amax(t.removesuffix("_dequantized")) for t in concat.input]
    for q in consumers[concat.output[0]]:
        if q.op_type == "QuantizeLinear":
            widest = max([ranges.amax(concat.output[0]), *inputs])
            assert float(_init(quantized, q.input[1])) == float(activation_scale(widest))


def test_quantized_model_tracks_the_float_model(float_model: Path, quantized: onnx.ModelProto) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)
    reference = ort.InferenceSession(str(float_model)).run(None, {"images": x})[0]
    fake_quant = ort.InferenceSession(quantized.SerializeToString()).run(None, {"images": x})[0]
    assert reference.shape == fake_quant.shape
    assert np.abs(reference - fake_quant).max() < 0.1 * np.abs(reference).max()
    assert (reference.argmax(1) == fake_quant.argmax(1)).mean() > 0.9


def test_concat_shared_ranges_span_the_group(float_model: Path, ranges: Ranges) -> None:
    model = onnx.load(str(float_model))
    shared = concat_shared_ranges(model, ranges)
    concat = next(n for n in model.graph.node if n.op_type == "Concat" and n.output[0] in ranges.tensors)
    members = [t for t in (*concat.input, concat.output[0]) if t in ranges.tensors]
    assert len(members) == 4
    assert {shared[t] for t in members} == {TensorRange(min(min(ranges.tensors[t].min for t in members), 0.0),
                                                        max(ranges.tensors[t].max for t in members),
                                                        max(ranges.amax(t) for t in members))}
    assert all(shared[t] == ranges.tensors[t] for t in ranges.tensors if t not in members)  # one Concat only


def test_keep_fp_layers(float_model: Path, ranges: Ranges) -> None:
    model = onnx.load(str(float_model))
    kept = quantize_for_tensorrt(model, ranges, keep_fp_layers=["first_conv", "classifier"])
    producers = _producers(kept)
    first, last = _by_op(kept, "Conv")[0], _by_op(kept, "Conv")[-1]
    assert first.input[0] == "images" and last.input[1] == "classifier.weight"
    assert producers[_by_op(kept, "Conv")[1].input[1]].op_type == "DequantizeLinear"
    assert lint_qdq(kept) == []  # kept nodes are recorded in the metadata and exempt
    assert {i.rule for i in lint_qdq(kept, keep_fp_layers=set())} == {"missing-qdq"}
    with pytest.raises(ConfigError, match="not in the model"):
        quantize_for_tensorrt(model, ranges, keep_fp_layers=["/no/such/Conv"])


def test_caller_model_untouched_and_ranges_must_match(float_model: Path, ranges: Ranges) -> None:
    model = onnx.load(str(float_model))
    before = model.SerializeToString()
    quantize_for_tensorrt(model, ranges)
    assert model.SerializeToString() == before
    partial = Ranges("minmax", {k: v for k, v in ranges.tensors.items() if k != "images"})
    with pytest.raises(ArtifactError, match="do not cover"):
        quantize_for_tensorrt(model, partial)


def test_trained_scales_replace_the_calibrated_ones_and_must_name_this_placement(
        float_model: Path, ranges: Ranges, quantized: onnx.ModelProto) -> None:
    """QAT's scales go in by scale-initializer name; a name this placement does not write is refused (the QAT
    graph and the writer drifted apart)."""
    model = onnx.load(str(float_model))
    names = sorted(n.input[1] for n in _by_op(quantized, "QuantizeLinear"))
    trained = {names[0]: 0.125, names[-1]: 0.5}
    written = quantize_for_tensorrt(model, ranges, scales=trained)
    values = {i.name: float(onnx.numpy_helper.to_array(i)) for i in written.graph.initializer if i.name in names}
    before = {i.name: float(onnx.numpy_helper.to_array(i)) for i in quantized.graph.initializer if i.name in names}
    assert values[names[0]] == 0.125 and values[names[-1]] == 0.5
    assert all(values[n] == before[n] for n in names[1:-1])
    assert json.loads(metadata_of(written)[QDQ_METADATA_KEY])["trained_scales"] == 2
    with pytest.raises(ArtifactError, match="does not write"):
        quantize_for_tensorrt(model, ranges, scales={"not_a_tensor_scale": 1.0})
