"""`edgeseg build` / `edgeseg run` end to end on a tiny model (ONNX Runtime INT8 path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main

MODEL = "shufflenetv2_x0_5_mdspp"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeseg.data.generate import SynthConfig, write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(SynthConfig(out=root, num=6, height=128, width=128, seed=5))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("build") / "tiny"
    result = CliRunner().invoke(main, ["build", "--model", MODEL, "--input-size", "128x128", "--calib",
                                       str(tiny_data / "images"), "--calib-images", "4", "--val", str(tiny_data),
                                       "--min-agreement", "0", "--max-miou-drop", "100", "--out", str(out)])
    return out, result


def test_build_writes_every_artifact_and_a_summary(built: tuple[Path, object]) -> None:
    out, result = built
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    for name in ("model.onnx", "reference.npz", "model.int8.onnx", "model.int8.ort.onnx", "calibration.cache",
                 "ranges.json", "manifest.json", "validation.json", "bench.json", "report.md", "report.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == MODEL and manifest["precision"] == "int8" and manifest["backend"] == "onnxruntime"
    assert 0.0 <= manifest["accuracy"]["agreement"] <= 1.0 and "gt_miou_candidate" in manifest["accuracy"]
    assert manifest["hashes"]["onnx_int8_cpu"]
    output = result.output  # type: ignore[attr-defined]
    assert "build passed" in output and "edgeseg run --artifacts" in output and "TensorRT is not installed" in output


def test_second_build_skips_unchanged_steps(built: tuple[Path, object], tiny_data: Path) -> None:
    out, _ = built
    before = (out / "model.int8.onnx").read_bytes()
    result = CliRunner().invoke(main, ["build", "--model", MODEL, "--input-size", "128x128", "--calib",
                                       str(tiny_data / "images"), "--calib-images", "4", "--val", str(tiny_data),
                                       "--min-agreement", "0", "--max-miou-drop", "100", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "export (cached)" in result.output and "calibrate (cached)" in result.output
    assert (out / "model.int8.onnx").read_bytes() == before


def test_gate_failure_exits_1_without_traceback(built: tuple[Path, object], tiny_data: Path) -> None:
    out, _ = built
    result = CliRunner().invoke(main, ["build", "--model", MODEL, "--input-size", "128x128", "--calib",
                                       str(tiny_data / "images"), "--calib-images", "4", "--min-agreement", "1.0",
                                       "--max-miou-drop", "0", "--val", str(tiny_data), "--out", str(out)])
    if result.exit_code == 0:  # random weights happened to agree perfectly: nothing to check
        pytest.skip("INT8 matched PyTorch on every pixel")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "accuracy gate failed" in result.output


def test_run_writes_overlays(built: tuple[Path, object], tiny_data: Path, tmp_path: Path) -> None:
    out, _ = built
    result = CliRunner().invoke(main, ["run", "--artifacts", str(out), "--source", str(tiny_data / "images"),
                                       "--save", str(tmp_path / "ov"), "--max-frames", "3"])
    assert result.exit_code == 0, result.output
    from edgeseg.images import load_image

    overlays = sorted((tmp_path / "ov").glob("*.png"))
    assert len(overlays) == 3 and load_image(overlays[0]).shape == (128, 128, 3)
    assert "FPS" in result.output


@pytest.mark.parametrize(
    "args, code",
    [(["--input-size", "100x100"], 2), (["--model", "no_such_model"], 1), (["--int8", "--precision", "fp32"], 2),
     (["--backend", "tensorrt", "--model", MODEL], 1), (["--precision", "fp16", "--model", MODEL], 1),
     (["--calib-images", "0", "--model", MODEL], 2)],
)
def test_bad_options_are_rejected_before_work(args: list[str], code: int, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", *args, "--out", str(tmp_path / "b")])
    assert result.exit_code == code, result.output
    assert not (tmp_path / "b" / "model.onnx").exists()


def test_build_from_existing_qdq_onnx_needs_no_calibration(built: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = built
    target = tmp_path / "fromqdq"
    target.mkdir()
    for name in ("model.int8.onnx", "reference.npz"):  # what a workstation hands to the Jetson
        (target / name).write_bytes((out / name).read_bytes())
    result = CliRunner().invoke(main, ["build", "--onnx", str(target / "model.int8.onnx"), "--min-agreement", "0"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["artifacts"]["onnx_int8_trt"] == "model.int8.onnx"
    validation = json.loads((target / "validation.json").read_text())
    assert validation["reference_kind"] == "reference.npz" and validation["parity"]["agreement"] > 0.5
    assert np.isfinite(json.loads((target / "bench.json").read_text())["runners"][0]["p50_ms"])
