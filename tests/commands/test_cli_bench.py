"""`edgeseg bench` end to end through click's CliRunner on a tiny ONNX model."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from helpers.tiny_onnx import save_conv_onnx

from edgeseg.cli import main


def export_small(path: Path) -> Path:
    return save_conv_onnx(path, kernel=3)  # 1x3x32x64 -> 1x4x32x64


def test_bench_artifacts_folder_table_json_plot(tmp_path: Path) -> None:
    build = tmp_path / "engines" / "small"
    export_small(build / "model.onnx")
    result = CliRunner().invoke(main, ["bench", "--artifacts", str(build), "--iterations", "6", "--warmup", "1",
                                       "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "ort-fp32" in result.output and "p50 ms" in result.output
    assert "ort-int8" in result.output and "skipped" in result.output  # no CPU INT8 model in this folder
    data = json.loads((build / "bench.json").read_text())
    (runner,) = data["runners"]
    assert runner["p50_ms"] <= runner["p90_ms"] <= runner["p99_ms"] and data["threads"] == 1
    assert {s["name"] for s in data["skipped"]} == {"pytorch-fp32", "ort-int8", "tensorrt"}
    assert (build / "bench_latency.png").is_file()


def test_bench_onnx_no_plot_into_out(tmp_path: Path) -> None:
    model = export_small(tmp_path / "m" / "model.onnx")
    result = CliRunner().invoke(main, ["bench", "--onnx", str(model), "--iterations", "3", "--warmup", "0",
                                       "--out", str(tmp_path / "out"), "--no-plot"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "bench.json").is_file() and not (tmp_path / "out" / "bench_latency.png").exists()
    assert not (tmp_path / "m" / "bench.json").exists()


def test_bench_usage_and_artifact_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["bench"])
    assert result.exit_code == 2 and "nothing to benchmark" in result.output
    result = CliRunner().invoke(main, ["bench", "--artifacts", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "does not exist" in result.output and "Traceback" not in result.output
