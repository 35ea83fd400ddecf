"""``edgeseg calibrate`` end to end on a tiny model: artifacts, summary, user errors without traceback."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from helpers.tiny_models import build_tiny_net
from helpers.tiny_onnx import write_images

from edgeseg.cli import main
from edgeseg.quant.lint import lint_qdq


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_net(tmp_path_factory.mktemp("cli") / "engines" / "tiny" / "model.onnx", height=32, width=64)


def test_calibrate_writes_artifacts_and_a_summary(model: Path, tmp_path: Path) -> None:
    images = tmp_path / "calib"
    write_images(images, 5)
    (images / "broken.png").write_text("nope")
    (images / "notes.txt").write_text("x")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["calibrate", "--onnx", str(model), "--calib", str(images), "--calib-images",
                                       "4", "--method", "percentile", "--percentile", "99.9", "--trt-version",
                                       "8.6.1", "--keep-fp", "classifier", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("ranges.json", "model.int8.onnx", "model.int8.ort.onnx", "calibration.cache"):
        assert (out / name).is_file() and name in result.output
    assert (out / "calibration.cache").read_text().startswith("TRT-8601-EntropyCalibration2\n")
    quantized = onnx.load(str(out / "model.int8.onnx"))
    assert lint_qdq(quantized) == []
    assert next(n for n in quantized.graph.node if n.name == "/classifier/Conv").input[1] == "classifier.weight"
    assert "broken.png" in result.output and "notes.txt" in result.output
    assert "4 used of 4 requested, 1 skipped" in result.output
    assert "edgeseg validate --candidate" in result.output and str(model.parent / "reference.npz") in result.output
    assert not list(Path.cwd().glob("ranges.json"))


def test_default_output_is_next_to_the_onnx(model: Path, tmp_path: Path) -> None:
    write_images(tmp_path / "calib", 2)
    result = CliRunner().invoke(main, ["calibrate", "--onnx", str(model), "--calib", str(tmp_path / "calib"),
                                       "--method", "minmax"])
    assert result.exit_code == 0, result.output
    assert (model.parent / "model.int8.onnx").is_file() and (model.parent / "calibration.cache").is_file()


@pytest.mark.parametrize("case, expected, code", [
    ("missing-onnx", "ONNX model not found", 1),
    ("empty-folder", "too few images", 1),
    ("bad-trt-version", "TensorRT", 2),  # an option value this edgeseg cannot honour: a bad option
    ("bad-batch", "static batch", 1),
    ("bad-keep", "not in the model", 2),  # checked against the model's nodes before calibrating
])
def test_user_errors_exit_without_traceback(model: Path, tmp_path: Path, case: str, expected: str,
                                            code: int) -> None:
    write_images(tmp_path / "calib", 2)
    (tmp_path / "empty").mkdir()
    args = {"--onnx": str(model), "--calib": str(tmp_path / "calib")}
    extra: list[str] = []
    if case == "missing-onnx":
        args["--onnx"] = str(tmp_path / "nope.onnx")
    elif case == "empty-folder":
        args["--calib"] = str(tmp_path / "empty")
    elif case == "bad-trt-version":
        extra = ["--trt-version", "11.1.0"]
    elif case == "bad-batch":
        extra = ["--batch-size", "2", "--calib-images", "2"]
    elif case == "bad-keep":
        extra = ["--keep-fp", "/nope/Conv"]
    argv = ["calibrate", *[x for kv in args.items() for x in kv], *extra, "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == code, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o" / "model.int8.onnx").exists()
    if code == 2:  # refused before any work: no calibration pass ran
        assert not (tmp_path / "o" / "ranges.json").exists() and "calibrating" not in result.output


def test_usage_errors_exit_2(model: Path, tmp_path: Path) -> None:
    missing = ["--calib", str(tmp_path / "nope")]  # --calib is checked like a click.Path(exists=True)
    for argv in (["--method", "kl"], ["--calib-images", "0"], ["--percentile", "0"], missing):
        result = CliRunner().invoke(main, ["calibrate", "--onnx", str(model), "--calib", str(tmp_path), *argv])
        assert result.exit_code == 2, (argv, result.output)


def test_sensitivity_ranks_every_quantized_layer(model: Path, tmp_path: Path) -> None:
    import json

    from edgeseg.quant.qdq_trt import quantized_layers

    write_images(tmp_path / "calib", 4)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["calibrate", "--onnx", str(model), "--calib", str(tmp_path / "calib"),
                                       "--calib-images", "4", "--sensitivity", "--sensitivity-frames", "2",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    ranked = json.loads((out / "sensitivity.json").read_text())
    assert ranked["frames"] == 2 and {row["layer"] for row in ranked["layers"]} == set(
        quantized_layers(onnx.load(str(model))))
    gains = [row["agreement"] for row in ranked["layers"]]
    assert gains == sorted(gains, reverse=True)  # most harmful (largest agreement bought back) first
    assert "sensitivity.md" in result.output and (out / "sensitivity.md").read_text().count("| ") > len(gains)
    # the chart: report.plots' sensitivity_plot, handed down to quant/ by the command
    assert (out / "sensitivity.png").is_file() == (importlib.util.find_spec("matplotlib") is not None)
