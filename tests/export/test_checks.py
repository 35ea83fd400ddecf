"""Graph hygiene for TensorRT and logit parity, on hand-built ONNX graphs and arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseg.errors import AccuracyError, ArtifactError
from edgeseg.export.checks import (
    check_graph_for_tensorrt,
    compare_logits,
    require_clean_graph,
    require_parity,
    run_onnxruntime,
)


def graph_model(nodes: list[onnx.NodeProto], *, input_shape: Sequence[int | str] = (1, 3, 8, 8),
                output_shape: Sequence[int | str] = (1, 3, 16, 16),
                initializers: Sequence[onnx.TensorProto] = ()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(output_shape))],
        initializer=list(initializers),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


SCALES = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")


def resize(**attributes: Any) -> onnx.NodeProto:
    return helper.make_node("Resize", ["images", "", "scales"], ["logits"], name="up", **attributes)


def test_clean_resize_graph_has_no_problems() -> None:
    model = graph_model([resize(mode="linear", coordinate_transformation_mode="half_pixel")], initializers=[SCALES])
    onnx.checker.check_model(model)
    assert check_graph_for_tensorrt(model) == []
    require_clean_graph(model)


@pytest.mark.parametrize(("attributes", "expected"), [
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, "align_corners"),
    ({"mode": "cubic", "coordinate_transformation_mode": "half_pixel"}, "mode=cubic"),
    ({"mode": "linear"}, None),  # ONNX default coordinate mode is half_pixel: fine
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, None),
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric"}, "nearest_mode"),
])
def test_resize_modes(attributes: dict[str, Any], expected: str | None) -> None:
    problems = check_graph_for_tensorrt(graph_model([resize(**attributes)], initializers=[SCALES]))
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and expected in problems[0]


def test_dynamic_shape_ops_are_problems() -> None:
    nodes = [
        helper.make_node("Shape", ["images"], ["shape"], name="s"),
        helper.make_node("Reshape", ["images", "shape"], ["logits"], name="r"),
    ]
    problems = check_graph_for_tensorrt(graph_model(nodes, output_shape=[1, 3, 8, 8]))
    assert any("Shape node s" in p for p in problems)
    assert any("Reshape node r: shape input 1 ('shape') is computed at run time" in p for p in problems)


def test_constant_shape_inputs_are_fine() -> None:
    shape = helper.make_node("Constant", [], ["shape"], name="c",
                             value=numpy_helper.from_array(np.array([1, 3, 64], dtype=np.int64)))
    nodes = [shape, helper.make_node("Reshape", ["images", "shape"], ["logits"], name="r")]
    assert check_graph_for_tensorrt(graph_model(nodes, output_shape=[1, 3, 64])) == []


def test_symbolic_input_and_custom_ops_are_problems() -> None:
    nodes = [helper.make_node("Relu", ["images"], ["x"], name="relu"),
             helper.make_node("ATen", ["x"], ["logits"], name="aten", domain="org.pytorch.aten")]
    problems = check_graph_for_tensorrt(graph_model(nodes, input_shape=["batch", 3, 8, 8],
                                                    output_shape=["batch", 3, 8, 8]))
    assert any("graph input 'images' has a non-static shape" in p for p in problems)
    assert any("graph output 'logits' has a non-static shape" in p for p in problems)
    assert any("domain 'org.pytorch.aten'" in p for p in problems)
    with pytest.raises(ArtifactError, match=r"not fit for TensorRT \(3 problem"):
        require_clean_graph(graph_model(nodes, input_shape=["batch", 3, 8, 8], output_shape=["batch", 3, 8, 8]))


def test_run_onnxruntime_pads_the_last_batch() -> None:
    model = graph_model([helper.make_node("Relu", ["images"], ["logits"])], input_shape=[2, 3, 4, 4],
                        output_shape=[2, 3, 4, 4])
    inputs = np.random.default_rng(0).normal(size=(3, 3, 4, 4)).astype(np.float32)
    outputs = run_onnxruntime(model.SerializeToString(), inputs, input_name="images", output_name="logits")
    np.testing.assert_array_equal(outputs, np.maximum(inputs, 0))


def logits(seed: int = 0, shape: tuple[int, ...] = (2, 4, 8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_identical_logits_pass() -> None:
    reference = logits()
    result = compare_logits(reference, reference.copy())
    assert result.passed and result.max_abs_diff == 0 and result.argmax_agreement == 1.0
    require_parity(result)


def test_flipped_argmax_is_counted_and_fails() -> None:
    reference = logits()
    candidate = reference.copy()
    winner = reference[0, :, 3, 3].argmax()
    candidate[0, winner, 3, 3] -= 10.0
    result = compare_logits(reference, candidate)
    assert result.num_disagree == 1 and not result.passed
    assert result.argmax_agreement == pytest.approx(1 - 1 / (2 * 8 * 8))
    with pytest.raises(AccuracyError, match="1 disagree"):
        require_parity(result)


def test_ties_are_excluded_from_agreement() -> None:
    reference = np.zeros((1, 3, 2, 2), dtype=np.float32)
    reference[0, 0] = 1.0
    reference[0, 1, 0, 0] = 1.0 + 5e-5  # top-2 gap below 1e-4: a tie
    candidate = reference.copy()
    candidate[0, 0, 0, 0] += 6e-5  # flips the tied pixel only
    result = compare_logits(reference, candidate)
    assert result.num_ties == 1 and result.num_disagree == 0 and result.passed


def test_tolerance_scales_with_the_logit_range() -> None:
    reference = logits() * 100  # max |logit| ~ 300: tolerance ~ 0.3
    candidate = reference + 0.01
    result = compare_logits(reference, candidate)
    assert result.tolerance == pytest.approx(1e-3 * np.abs(reference).max())
    assert result.passed
    small = compare_logits(logits() * 0.1, logits() * 0.1 + 0.01)  # |logit| < 1: tolerance 1e-3
    assert small.tolerance == pytest.approx(1e-3) and not small.passed


def test_non_finite_candidate_fails() -> None:
    reference = logits()
    candidate = reference.copy()
    candidate[0, 0, 0, 0] = np.nan
    assert not compare_logits(reference, candidate).passed


def test_shape_mismatch_is_an_artifact_error() -> None:
    with pytest.raises(ArtifactError, match="different shapes"):
        compare_logits(logits(), logits(shape=(2, 5, 8, 8)))
