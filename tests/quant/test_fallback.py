"""--fallback auto: the greedy logic against fake evaluations, then once on a tiny real model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.tiny_onnx import two_conv_model

from edgeseg.errors import UsageError
from edgeseg.quant.fallback import Trial, check_fallback, greedy_fallback
from edgeseg.quant.qdq_trt import quantize_for_tensorrt, quantized_layers
from edgeseg.quant.ranges import Ranges, TensorRange
from edgeseg.quant.sensitivity import measure_sensitivity, score_predictions


def fake_evaluator(harm: dict[str, float], budget: float, calls: list[list[str]]):  # type: ignore[no-untyped-def]
    """Agreement = 1 - the harm of the layers still quantized; passes when that harm is within ``budget``."""
    def evaluate(kept: Sequence[str]) -> Trial:
        calls.append(list(kept))
        left = sum(v for k, v in harm.items() if k not in kept)
        return Trial(list(kept), left <= budget, 1 - left, left * 100)
    return evaluate


def test_all_int8_passing_keeps_nothing_and_never_ranks() -> None:
    calls: list[list[str]] = []

    def ranking() -> list[str]:
        raise AssertionError("the ranking is only needed when the all-INT8 candidate fails")

    result = greedy_fallback(fake_evaluator({"a": 0.001}, 0.01, calls), ranking)
    assert result.passed and result.kept == [] and calls == [[]]


def test_keeps_ranked_layers_one_by_one_until_the_gates_pass() -> None:
    calls: list[list[str]] = []
    harm = {"a": 0.02, "b": 0.015, "c": 0.001, "d": 0.001}
    result = greedy_fallback(fake_evaluator(harm, 0.005, calls), lambda: ["a", "b", "c", "d"], cap=3)
    assert result.passed and result.kept == ["a", "b"]
    assert calls == [[], ["a"], ["a", "b"]]
    assert result.to_dict()["kept"] == ["a", "b"] and len(result.to_dict()["trials"]) == 3


def test_the_cap_fails_and_names_the_next_layers() -> None:
    calls: list[list[str]] = []
    harm = {name: 0.01 for name in "abcdefg"}
    result = greedy_fallback(fake_evaluator(harm, 0.0, calls), lambda: list("abcdefg"), cap=2)
    assert not result.passed and result.kept == [] and calls == [[], ["a"], ["a", "b"]]
    assert result.next_layers == ["c", "d", "e", "f", "g"]


def test_bad_options() -> None:
    with pytest.raises(UsageError, match="--fallback"):
        check_fallback("manual", 4)
    with pytest.raises(UsageError, match="--fallback-cap"):
        check_fallback("auto", 0)


def test_score_predictions_counts_agreement_and_miou() -> None:
    labels = [np.array([[0, 0, 1, 1]])]
    score = score_predictions(labels, [np.array([[0, 0, 1, 0]])], num_classes=2)
    assert score.agreement == 0.75 and score.miou == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_sensitivity_ranks_the_layer_whose_scale_is_broken_first(tmp_path: Path) -> None:
    """Two convs; the second one's input scale is made 50x too coarse: keeping it in float must buy back
    the most, and every quantized layer is measured."""
    path = two_conv_model(tmp_path / "model.onnx")
    model = onnx.load(str(path))
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(4)]
    from edgeseg.quant.ranges import compute_ranges

    tensors = compute_ranges(path, [{model.graph.input[0].name: x} for x in inputs], method="minmax")
    layers = quantized_layers(model)
    assert len(layers) == 2
    second_input = next(n.input[0] for n in model.graph.node if n.name == layers[1])
    broken = dict(tensors)
    r = broken[second_input]
    broken[second_input] = TensorRange(r.min * 50, r.max * 50, r.amax * 50)
    result = measure_sensitivity(path, Ranges("minmax", broken), inputs)
    assert result.ranked()[0] == layers[1] and len(result.layers) == 2
    assert result.layers[0].score.agreement > result.baseline.agreement
    kept = quantize_for_tensorrt(model, Ranges("minmax", broken), keep_fp_layers=[layers[1]])
    conv1 = next(n for n in kept.graph.node if n.name == layers[1])
    assert list(conv1.input)[:2] == list(next(n for n in model.graph.node if n.name == layers[1]).input)[:2]
