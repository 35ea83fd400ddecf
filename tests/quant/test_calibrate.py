"""calibrate_model end to end on a tiny net: every artifact, determinism, the CPU INT8 model."""

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
from edgeseg.fileio import sha256_file
from edgeseg.quant.calibrate import CalibrateConfig, calibrate_model
from edgeseg.quant.lint import lint_qdq
from edgeseg.quant.qdq_ort import OrtInt8Options, quantize_for_onnxruntime
from edgeseg.quant.ranges import load_ranges
from edgeseg.trt_cache_format import read_calibration_cache


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    model = build_tiny_net(root / "export" / "model.onnx")
    write_images(root / "images", 7)
    return model, root / "images"


def test_all_artifacts_written_next_to_the_onnx(inputs: tuple[Path, Path]) -> None:
    model, images = inputs
    steps: list[tuple[int, int]] = []
    result = calibrate_model(model, images, CalibrateConfig(calib_images=5, trt_version="8.6.1"),
                             on_progress=lambda done, total: steps.append((done, total)))
    assert steps == [(i, 5) for i in range(6)]
    assert result.out_dir == model.parent
    assert {p.name for p in result.artifacts.values()} == {
        "ranges.json", "model.int8.onnx", "model.int8.ort.onnx", "calibration.cache"}
    assert all(p.parent == model.parent and p.stat().st_size > 0 for p in result.artifacts.values())
    assert not list(model.parent.glob(".*.tmp"))  # atomic writes left nothing behind

    ranges = load_ranges(result.ranges_path)
    assert ranges.method == "percentile" and ranges.num_images == 5 and len(ranges.images) == 5
    assert ranges.onnx_sha256 == sha256_file(model)
    assert ranges.calibration_sha256 == result.images.sha256()
    assert lint_qdq(onnx.load(str(result.trt_int8_path))) == []
    version, _, scales = read_calibration_cache(result.trt_cache_path)
    assert version == 8601 and set(scales) == set(ranges.tensors)
    assert all(scales[k] == np.float32(v.amax) / np.float32(127) for k, v in ranges.tensors.items())
    first_line = result.trt_cache_path.read_text().splitlines()[1]
    assert first_line.startswith("images: ")  # graph order: the input first


def test_same_inputs_give_the_same_bytes(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    model, images = inputs
    config = CalibrateConfig(calib_images=4, method="minmax", seed=5)
    a = calibrate_model(model, images, config, out_dir=tmp_path / "a")
    b = calibrate_model(model, images, config, out_dir=tmp_path / "b")
    for key, path in a.artifacts.items():
        assert path.read_bytes() == b.artifacts[key].read_bytes(), key
    c = calibrate_model(model, images, CalibrateConfig(calib_images=4, method="minmax", seed=6), out_dir=tmp_path / "c")
    assert load_ranges(c.ranges_path).images != load_ranges(a.ranges_path).images


def test_cpu_int8_model_runs_int8_kernels_and_tracks_float(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    model, images = inputs
    result = calibrate_model(model, images, CalibrateConfig(calib_images=6, method="minmax"), out_dir=tmp_path)
    quantized = onnx.load(str(result.ort_int8_path))
    ops = {n.op_type for n in quantized.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # uint8 activations with int8 per-channel weights: the layout ORT fuses into QLinearConv
    zero_points = {i.name: i for i in quantized.graph.initializer if i.name.endswith("zero_point")}
    assert any(z.data_type == onnx.TensorProto.UINT8 for z in zero_points.values())
    assert any(len(z.dims) == 1 and z.dims[0] > 1 for z in zero_points.values())
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 96)).astype(np.float32)
    reference = ort.InferenceSession(str(model)).run(None, {"images": x})[0]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    int8 = ort.InferenceSession(str(result.ort_int8_path), options).run(None, {"images": x})[0]
    assert np.abs(reference - int8).max() < 0.15 * np.abs(reference).max()
    assert (reference.argmax(1) == int8.argmax(1)).mean() > 0.9
    fused = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert "QLinearConv" in fused  # onnxruntime really runs the convolutions in int8


def test_ort_options_are_checked(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    ranges_path = calibrate_model(inputs[0], inputs[1], CalibrateConfig(calib_images=2, method="minmax"),
                                  out_dir=tmp_path).ranges_path
    with pytest.raises(ConfigError, match="format"):
        quantize_for_onnxruntime(inputs[0], load_ranges(ranges_path), tmp_path / "x.onnx",
                                 OrtInt8Options(quant_format="qlinear"))
    signed = quantize_for_onnxruntime(inputs[0], load_ranges(ranges_path), tmp_path / "s8.onnx",
                                      OrtInt8Options(activation_type="int8"))
    zps = [i for i in onnx.load(str(signed)).graph.initializer if i.name.endswith("zero_point")]
    assert zps and not any(z.data_type == onnx.TensorProto.UINT8 for z in zps)  # (biases are int32)
    assert any(z.data_type == onnx.TensorProto.INT8 and z.name == "images_zero_point" for z in zps)


def test_config_errors_before_any_work(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    model, images = inputs
    with pytest.raises(ConfigError, match="static batch"):
        calibrate_model(model, images, CalibrateConfig(calib_images=4, batch_size=2), out_dir=tmp_path)
    with pytest.raises(ConfigError, match="TensorRT"):
        calibrate_model(model, images, CalibrateConfig(trt_version="11.0"), out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_an_already_quantized_model_is_refused(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    model, images = inputs
    first = calibrate_model(model, images, CalibrateConfig(calib_images=2, method="minmax"), out_dir=tmp_path)
    with pytest.raises(ArtifactError, match="already quantized"):
        calibrate_model(first.trt_int8_path, images, CalibrateConfig(calib_images=2), out_dir=tmp_path / "again")


def test_ranges_json_records_skips(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    model, images = inputs
    folder = tmp_path / "imgs"
    write_images(folder, 3)
    (folder / "zero.png").write_bytes(b"")
    result = calibrate_model(model, folder, CalibrateConfig(calib_images=4, method="minmax"), out_dir=tmp_path / "o")
    data = json.loads(result.ranges_path.read_text())
    assert data["num_images"] == 3 and [s[0] for s in data["skipped"]] == ["zero.png"]
