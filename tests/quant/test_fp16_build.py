"""--high-precision end to end on the CPU: the calibrate/build option, the build's quantize step (cache key and
what the manifest records), and the builder's flags against the fake TensorRT."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from helpers.fake_tensorrt import FakeTrtFactory
from helpers.tiny_models import build_tiny_net
from helpers.tiny_onnx import write_images

from edgeseg.cli import main
from edgeseg.engine.config import BuildConfig
from edgeseg.engine.trt_builder import build_engine
from edgeseg.engine.versions import OnnxFacts, plan_build
from edgeseg.errors import ConfigError, UsageError
from edgeseg.onnx_model import has_fp16, opset_of
from edgeseg.pipeline import int8_steps
from edgeseg.pipeline.build import BuildOptions
from edgeseg.pipeline.step_cache import StepRunner
from edgeseg.quant.calibrate import CalibrateConfig, calibrate_model
from edgeseg.quant.fp16_regions import float_regions_of


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_net(tmp_path_factory.mktemp("hp") / "model.onnx", height=32, width=64)


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("hp_calib"), 3)[0].parent


@pytest.fixture(scope="module")
def qdq_files(model: Path, calib: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """model.int8.onnx with FP16 regions (TensorRT 10 target) and with FP32 regions (TensorRT 8.5 target)."""
    root = tmp_path_factory.mktemp("hp_qdq")
    files = {}
    for label, version in (("fp16", "10.3.0"), ("fp32", "8.5.2")):
        config = CalibrateConfig(method="minmax", calib_images=3, trt_version=version)
        files[label] = calibrate_model(model, calib, config, out_dir=root / label).trt_int8_path
    return files


def test_calibrate_option_and_summary(model: Path, calib: Path, tmp_path: Path) -> None:
    runs = {}
    for value in ("fp16", "fp32"):
        out = tmp_path / value
        result = CliRunner().invoke(main, ["calibrate", "--onnx", str(model), "--calib", str(calib), "--calib-images",
                                           "2", "--high-precision", value, "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs[value] = (result.output, onnx.load(str(out / "model.int8.onnx")))
    output, fp16 = runs["fp16"]
    assert "float regions" in output and "FP16 (" in output and "nothing kept FP32" in output
    assert has_fp16(fp16) and opset_of(fp16) == 19 and float_regions_of(fp16)["high_precision"] == "fp16"
    output, fp32 = runs["fp32"]
    assert "FP32 tensors" in output and not has_fp16(fp32) and float_regions_of(fp32) == {"high_precision": "fp32"}
    bad = CliRunner().invoke(main, ["calibrate", "--onnx", str(model), "--calib", str(calib), "--high-precision",
                                    "bf16"])
    assert bad.exit_code == 2 and "--high-precision" in bad.output


def test_calibrate_for_tensorrt85_keeps_float32_regions(model: Path, calib: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["calibrate", "--onnx", str(model), "--calib", str(calib), "--calib-images",
                                       "2", "--trt-version", "8.5.2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "the build sets FP16 beside INT8" in result.output
    assert not has_fp16(onnx.load(str(tmp_path / "model.int8.onnx")))
    # the summary's fusion prediction (#29 item 7), labelled as such, for the TensorRT asked for
    assert "TensorRT fusion" in result.output and "precision boundaries" in result.output
    assert "TensorRT 8.5.2; a prediction" in result.output


def test_build_option(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", "--help"])
    assert result.exit_code == 0 and "--high-precision [fp16|fp32]" in result.output
    bad = CliRunner().invoke(main, ["build", "--high-precision", "int4", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--high-precision" in bad.output
    assert BuildOptions().high_precision == "fp16"
    with pytest.raises(UsageError, match="high-precision"):
        BuildOptions(high_precision="bf16").check()


def _build_folder(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A build folder holding model.onnx, its TensorRT target faked to 10.3.0."""
    monkeypatch.setattr(int8_steps, "target_trt_version", lambda: "10.3.0")
    out = tmp_path / "build"
    out.mkdir()
    onnx_path = out / "model.onnx"
    onnx_path.write_bytes(model.read_bytes())
    return out, onnx_path


def test_quantize_step_records_and_keys_the_high_precision(model: Path, calib: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out, onnx_path = _build_folder(model, tmp_path, monkeypatch)
    runner = StepRunner(out, log=lambda _: None)

    def steps(high_precision: str) -> tuple[dict[str, bool], int8_steps.QuantizeResult]:
        options = BuildOptions(calib_method="minmax", calib_images=2, high_precision=high_precision)
        done: dict[str, bool] = {}
        int8_steps.run_calibration_step(runner, onnx_path, calib, options, out, done, None)
        return done, int8_steps.run_quantize_step(runner, onnx_path, options, out, done, [])

    done, result = steps("fp16")
    assert not done["quantize"] and result.float_regions["high_precision"] == "fp16"
    assert result.trt_version == "10.3.0" and has_fp16(onnx.load(str(out / "model.int8.onnx")))
    fusion = result.trt_fusion  # the predicted fusion rides with the step's record into the manifest
    assert fusion["prediction"] is True and fusion["trt_version"] == "10.3.0" and fusion["round_trips"] == 0
    assert fusion["int8_weighted_layers"] == fusion["weighted_layers"] > 0
    done, result = steps("fp16")
    assert done["quantize"] and result.float_regions["high_precision"] == "fp16"  # cached, same record
    done, result = steps("fp32")
    assert not done["quantize"] and result.float_regions == {"high_precision": "fp32"}  # another key
    assert not has_fp16(onnx.load(str(out / "model.int8.onnx")))
    monkeypatch.setattr(int8_steps, "target_trt_version", lambda: "8.5.2")
    done, result = steps("fp16")  # a TensorRT 8.5 machine: float32 regions, the builder's FP16 flag instead
    assert not done["quantize"] and result.float_regions == {"high_precision": "fp32"}
    assert json.loads((out / "ranges.json").read_text())["method"] == "minmax"


def test_target_version_without_tensorrt_is_the_default() -> None:
    from edgeseg.quant.trt_cache import DEFAULT_TRT_VERSION

    assert int8_steps.target_trt_version() == DEFAULT_TRT_VERSION  # no TensorRT on this machine
    assert int8_steps.calibrate_config(BuildOptions(calib_method="minmax")).high_precision == "fp16"


def _flag_names(fake: object) -> list[str]:
    return [flag.name for flag in fake.record["config"].flags]  # type: ignore[attr-defined]


def test_tensorrt10_builds_the_fp16_region_file_strongly_typed(qdq_files: dict[str, Path],
                                                               fake_trt: FakeTrtFactory) -> None:
    fake = fake_trt("10.3.0.30")
    result = build_engine(qdq_files["fp16"], BuildConfig(precision="int8"), trt=fake, gpu=(None, None))
    strongly_typed = 1 << int(fake.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert fake.record["network_flags"] == strongly_typed and _flag_names(fake) == []  # types from the ONNX
    assert result.manifest.build["config"]["high_precision"] == "fp16"


@pytest.mark.parametrize(("high_precision", "flags"), [("fp16", ["FP16", "INT8"]), ("fp32", ["INT8"])])
def test_tensorrt85_sets_fp16_beside_int8(qdq_files: dict[str, Path], fake_trt: FakeTrtFactory,
                                          high_precision: str, flags: list[str]) -> None:
    fake = fake_trt("8.5.2.2")
    result = build_engine(qdq_files["fp32"], BuildConfig(precision="int8", high_precision=high_precision),
                          trt=fake, gpu=(None, None))
    assert _flag_names(fake) == flags and result.manifest.build["builder_flags"] == flags


def test_tensorrt85_refuses_the_fp16_region_file(qdq_files: dict[str, Path], fake_trt: FakeTrtFactory) -> None:
    with pytest.raises(ConfigError, match="float16 regions") as caught:
        build_engine(qdq_files["fp16"], BuildConfig(precision="int8"), trt=fake_trt("8.5.2.2"), gpu=(None, None))
    assert "--trt-version 8.5.2" in str(caught.value)


def test_weakly_typed_int8_on_tensorrt10_sets_fp16_beside_int8() -> None:
    implicit = plan_build("10.3.0", BuildConfig(precision="int8", int8_mode="implicit"), OnnxFacts())
    assert implicit.builder_flags == ("FP16", "INT8") and implicit.use_calibrator and not implicit.strongly_typed
    fp32 = plan_build("10.3.0", BuildConfig(precision="int8", int8_mode="implicit", high_precision="fp32"),
                      OnnxFacts())
    assert fp32.builder_flags == ("INT8",)
    best = plan_build("10.3.0", BuildConfig(precision="best"), OnnxFacts(has_qdq=True, has_fp16=True))
    assert best.builder_flags == ("FP16", "INT8")
    with pytest.raises(ConfigError, match="high-precision"):
        BuildConfig(high_precision="bf16").validate("10.3.0")


def test_the_manifest_records_the_float_regions(model: Path, calib: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeseg.manifest import Manifest, read_manifest, write_manifest
    from edgeseg.onnx_model import input_spec_of
    from edgeseg.pipeline.build import _int8_models

    out, onnx_path = _build_folder(model, tmp_path, monkeypatch)
    spec = input_spec_of(onnx.load(str(onnx_path)))
    options = BuildOptions(calib=calib, calib_method="minmax", calib_images=2)
    calibration = _int8_models(StepRunner(out, log=lambda _: None), onnx_path, spec, options, out, "onnxruntime", {},
                               lambda _: None, None)
    assert calibration.high_precision == "fp16" and calibration.float_regions is not None
    assert calibration.float_regions["high_precision"] == "fp16" and calibration.float_regions["casts"] == 2
    write_manifest(out, Manifest(model="tiny", num_classes=4, input_spec=spec, precision="int8",
                                 calibration=calibration))
    recorded = read_manifest(out).calibration
    assert recorded == calibration and recorded is not None and recorded.float_regions is not None
    assert recorded.high_precision == "fp16" and recorded.float_regions["fp32_tensors"] == {}
