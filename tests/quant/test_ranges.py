"""Activation ranges through onnxruntime's calibrators; ranges.json determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers.tiny_models import build_tiny_net
from helpers.tiny_onnx import write_images

from edgeseg.errors import ArtifactError, ConfigError
from edgeseg.onnx_model import input_spec_of
from edgeseg.quant.calib_data import CalibrationFeed
from edgeseg.quant.ranges import Ranges, compute_ranges, derived_tensors, load_ranges, save_ranges


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ranges")
    model = build_tiny_net(root / "model.onnx")
    write_images(root / "images", 6)
    return model, root / "images"


def _feed(setup: tuple[Path, Path], count: int = 4) -> CalibrationFeed:
    model, images = setup
    return CalibrationFeed(images, input_spec_of(onnx.load(str(model))), count=count)


def _activations(model: Path, feed: CalibrationFeed) -> dict[str, np.ndarray]:
    """Every intermediate tensor, by running the model with all of them as outputs (test oracle)."""
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(model)))
    floats = {v.name for v in proto.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    names = [o for n in proto.graph.node for o in n.output if o in floats]
    proto.graph.output.extend(v for v in proto.graph.value_info if v.name in names)
    session = ort.InferenceSession(proto.SerializeToString())
    outputs: dict[str, list[np.ndarray]] = {}
    for batch in feed:
        for name, value in zip([o.name for o in session.get_outputs()], session.run(None, batch), strict=True):
            outputs.setdefault(name, []).append(value)
    return {k: np.concatenate(v) for k, v in outputs.items()}


def test_minmax_matches_the_observed_extremes(setup: tuple[Path, Path]) -> None:
    ranges = compute_ranges(setup[0], _feed(setup), method="minmax")
    observed = _activations(setup[0], _feed(setup))
    derived = derived_tensors(onnx.load(str(setup[0])))
    checked = 0
    for name, values in observed.items():
        if name in derived:
            continue
        r = ranges[name]
        assert r.min == pytest.approx(min(float(values.min()), 0.0), rel=1e-6, abs=1e-7), name
        assert r.max == pytest.approx(max(float(values.max()), 0.0), rel=1e-6, abs=1e-7), name
        assert r.amax == max(abs(r.min), abs(r.max))
        checked += 1
    assert checked >= 15
    assert "images" in ranges  # the input is calibrated too (TensorRT's cache needs it)


def test_derived_ranges_are_copied_from_their_source(setup: tuple[Path, Path]) -> None:
    model = onnx.load(str(setup[0]))
    derived = derived_tensors(model)
    ops = {o: n.op_type for n in model.graph.node for o in n.output}
    assert any(ops[k] == "Transpose" for k in derived) and any(ops[k] == "Conv" for k in derived)
    ranges = compute_ranges(setup[0], _feed(setup), method="minmax")
    for name, source in derived.items():
        if name in ranges:
            while source in derived and source not in ranges:
                source = derived[source]
            assert ranges[name] == ranges[source]
    observed = _activations(setup[0], _feed(setup))
    transposed = next(k for k in derived if ops[k] == "Transpose")
    assert ranges[transposed].max == pytest.approx(float(observed[transposed].max()), rel=1e-6)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_stay_inside_minmax(setup: tuple[Path, Path], method: str) -> None:
    minmax = compute_ranges(setup[0], _feed(setup), method="minmax")
    ranges = compute_ranges(setup[0], _feed(setup), method=method, percentile=99.0)
    assert set(ranges) == set(minmax)
    assert all(0 < ranges[k].amax <= minmax[k].amax * (1 + 1e-5) for k in ranges if minmax[k].amax > 0)
    assert any(ranges[k].amax < minmax[k].amax * 0.999 for k in ranges)  # they do clip outliers


def test_progress_callback_and_determinism(setup: tuple[Path, Path], tmp_path: Path) -> None:
    calls: list[int] = []
    first = compute_ranges(setup[0], _feed(setup, 3), on_batch=calls.append)
    second = compute_ranges(setup[0], _feed(setup, 3))
    assert calls == [1, 2, 3]
    a = save_ranges(Ranges("entropy", first, num_images=3), tmp_path / "a.json")
    b = save_ranges(Ranges("entropy", second, num_images=3), tmp_path / "b.json")
    assert a.read_bytes() == b.read_bytes()
    assert load_ranges(a).tensors == first


def test_bad_method_and_bad_files(setup: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown calibration method"):
        compute_ranges(setup[0], _feed(setup), method="kl")
    with pytest.raises(ConfigError, match="percentile"):
        compute_ranges(setup[0], _feed(setup), method="percentile", percentile=0)
    (tmp_path / "r.json").write_text('{"format": 99}')
    with pytest.raises(ArtifactError, match="not an edgeseg ranges file"):
        load_ranges(tmp_path / "r.json")
    with pytest.raises(ArtifactError, match="not found"):
        load_ranges(tmp_path / "missing.json")
