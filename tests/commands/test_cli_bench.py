"""`edgeseg bench` end to end through click's CliRunner on a tiny ONNX model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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


def test_bench_source_bag_reports_capture_to_mask(tmp_path: Path) -> None:
    from helpers.bags import gradient_frames, write_image_bag
    from helpers.validated_build import validated_build

    build = validated_build(tmp_path / "engines" / "tiny")
    bag = write_image_bag(tmp_path / "demo.mcap", "mcap", gradient_frames(6), topic="/cam/image", compressed="jpeg")
    result = CliRunner().invoke(main, ["bench", "--artifacts", str(build), "--source", f"bag:{bag}", "--topic",
                                       "/cam/image", "--iterations", "3", "--warmup", "1", "--threads", "1",
                                       "--no-plot"])
    assert result.exit_code == 0, result.output
    assert "capture-to-mask on bag:" in result.output and "jitter" in result.output and "ort-fp32" in result.output
    timed = json.loads((build / "bench.json").read_text())["source_latency"]
    assert timed["source"] == {"text": f"bag:{bag}", "kind": "bag", "topic": "/cam/image", "opened_with": ""}
    assert timed["clock"] == "read" and timed["frames"] == 5 and timed["warmup_calls"] == 1
    assert timed["p50_ms"] <= timed["p90_ms"] <= timed["p99_ms"] and timed["fps"] > 0
    assert timed["dropped"] == 0 and timed["dropped_if_live"] is not None and timed["backend"] == "onnxruntime"
    assert "edgeseg run --artifacts" in result.output  # the next command runs the same source
    assert timed["ended_because"] == "end of bag"

    result = CliRunner().invoke(main, ["bench", "--artifacts", str(build), "--source", f"bag:{bag}", "--topic",
                                       "/cam/image", "--max-frames", "3", "--iterations", "1", "--warmup", "0",
                                       "--threads", "1", "--no-plot"])
    assert result.exit_code == 0, result.output
    timed = json.loads((build / "bench.json").read_text())["source_latency"]
    assert timed["ended_because"] == "3 frames" and timed["frames"] == 2  # the first frame is warm-up


@pytest.mark.parametrize(("args", "message"), [
    (["--source", "frames"], "needs --artifacts"),
    (["--artifacts", "BUILD", "--topic", "/cam/image"], "--topic only applies to --source"),
    (["--artifacts", "BUILD", "--topic", "/cam/image", "--max-frames", "2"], "--topic and --max-frames only apply"),
    (["--artifacts", "BUILD", "--source", "BUILD", "--topic", "/cam/image"], "--topic only applies to bag"),
])
def test_bench_source_option_errors(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "b").mkdir()
    args = [str(tmp_path / "b") if a == "BUILD" else a for a in args]
    result = CliRunner().invoke(main, ["bench", "--onnx", str(export_small(tmp_path / "m" / "model.onnx")), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "m" / "bench.json").exists()


def test_the_report_renders_source_latency(tmp_path: Path) -> None:
    from helpers.bags import gradient_frames, write_image_bag
    from helpers.validated_build import validated_build

    from edgeseg.report.markdown import _latency
    from edgeseg.report.writer import _latency_summary

    build = validated_build(tmp_path / "tiny")
    bag = write_image_bag(tmp_path / "demo.db3", "sqlite3", gradient_frames(4), topic="/cam/image")
    result = CliRunner().invoke(main, ["bench", "--artifacts", str(build), "--source", str(bag), "--iterations", "2",
                                       "--warmup", "0", "--no-plot"])
    assert result.exit_code == 0, result.output
    latency = _latency_summary(json.loads((build / "bench.json").read_text()))
    assert latency is not None and "samples_ms" not in latency["source_latency"]
    text = "\n".join(_latency({"latency": latency}))
    assert f"Capture-to-mask on `{bag}`" in text and "jitter ms (p99-p50)" in text and "clock `read`" in text
