"""pipeline.bench and pipeline.artifacts: timing statistics, interleaving, runner discovery, bench.json."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny_onnx import save_conv_onnx

from edgeseg.errors import ArtifactError, UsageError
from edgeseg.images import load_image
from edgeseg.manifest import Manifest
from edgeseg.pipeline.artifacts import discover_artifacts
from edgeseg.pipeline.bench import BENCH_FILE, PLOT_FILE, Runner, benchmark, plan_bench, run_bench
from edgeseg.spec import InputSpec

SPEC = InputSpec(32, 32)


def tiny_onnx(path: Path, spec: InputSpec = SPEC) -> Path:
    return save_conv_onnx(path, spec=spec, kernel=3, relu=True)


def test_benchmark_stats_are_ordered_and_runs_interleave(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock: each runner 'takes' a fixed time, so the figures are exact on a busy machine."""
    from edgeseg.pipeline import bench

    calls: list[str] = []
    now = [100.0]
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def sleeper(name: str, seconds: float):
        def infer(x: np.ndarray) -> np.ndarray:
            calls.append(name)
            now[0] += seconds
            return x

        return infer

    runners = [Runner("pytorch-fp32", "torch", "fp32", sleeper("pytorch-fp32", 0.004)),
               Runner("ort-fp32", "onnxruntime", "fp32", sleeper("ort-fp32", 0.001))]
    result = benchmark(runners, [np.zeros((1, 3, 4, 4), np.float32)], iterations=12, warmup=2)
    assert calls[:4] == ["pytorch-fp32"] * 2 + ["ort-fp32"] * 2  # warm-up first, per runner
    assert calls[4:] == ["pytorch-fp32", "ort-fp32"] * 12  # then interleaved
    for stats in result.runners:
        assert len(stats.samples_ms) == 12
        assert stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms <= stats.max_ms
        assert stats.throughput_fps == pytest.approx(1000.0 / stats.mean_ms)
    slow, fast = result.runners
    assert slow.p50_ms == pytest.approx(4.0) and fast.p50_ms == pytest.approx(1.0)
    ratios = result.ratios()
    assert ratios["ort-fp32"]["vs_pytorch-fp32"] == pytest.approx(0.25)
    assert ratios["pytorch-fp32"]["vs_pytorch-fp32"] == 1.0
    assert any("ort-fp32" in line and "x" in line for line in result.table())


def test_benchmark_refuses_nothing_to_do() -> None:
    with pytest.raises(UsageError):
        benchmark([], [np.zeros((1, 3, 4, 4), np.float32)])
    with pytest.raises(UsageError):
        benchmark([Runner("a", "torch", "fp32", lambda x: x)], [np.zeros((1, 3, 4, 4), np.float32)], iterations=0)


def test_discover_artifacts_manifest_then_standard_names(tmp_path: Path) -> None:
    for name in ("model.onnx", "model.int8.onnx", "custom_cpu.onnx", "reference.npz"):
        (tmp_path / name).write_bytes(b"x")
    found = discover_artifacts(tmp_path)
    assert found["onnx"].name == "model.onnx" and found["onnx_int8_trt"].name == "model.int8.onnx"
    assert "onnx_int8_cpu" not in found and "engine" not in found
    (tmp_path / "model.int8.ort.onnx").write_bytes(b"x")
    assert discover_artifacts(tmp_path)["onnx_int8_cpu"].name == "model.int8.ort.onnx"
    manifest = Manifest(model="m", num_classes=4, input_spec=SPEC, artifacts={"onnx_int8_cpu": "custom_cpu.onnx"})
    assert discover_artifacts(tmp_path, manifest)["onnx_int8_cpu"].name == "custom_cpu.onnx"
    with pytest.raises(ArtifactError, match="does not exist"):
        discover_artifacts(tmp_path / "nope")


def test_bench_on_a_build_folder_writes_json_and_plot(tmp_path: Path) -> None:
    build = tmp_path / "engines" / "tiny"
    tiny_onnx(build / "model.onnx")
    # stands in for the CPU INT8 model: what is tested here is that the role is found and timed
    shutil.copy(build / "model.onnx", build / "model.int8.ort.onnx")
    plan = plan_bench(artifacts=build, threads=1)
    assert [r.name for r in plan.runners] == ["ort-fp32", "ort-int8"]
    skipped = {s["name"]: s["reason"] for s in plan.skipped}
    assert "tensorrt" in skipped and "pytorch-fp32" in skipped
    assert plan.inputs[0].shape == SPEC.shape and plan.out_dir == build
    result, written = run_bench(plan, iterations=8, warmup=2)
    assert written == [build / BENCH_FILE, build / PLOT_FILE]
    data = json.loads((build / BENCH_FILE).read_text())
    assert data["threads"] == 1 and data["order"] == "interleaved" and data["iterations"] == 8
    assert data["machine"]["cores"] >= 1 and "onnxruntime" in data["machine"]["libraries"]
    for runner in data["runners"]:
        assert runner["p50_ms"] <= runner["p90_ms"] <= runner["p99_ms"]
        assert len(runner["samples_ms"]) == 8
    assert data["ratios"]["ort-int8"]["vs_ort-fp32"] > 0 and data["ratios"]["ort-int8"]["vs_pytorch-fp32"] is None
    assert load_image(build / PLOT_FILE).shape[2] == 3


def test_bench_without_matplotlib_writes_numbers_and_says_why_no_plot(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the robot install: import matplotlib fails
    build = tmp_path / "engines" / "tiny"
    tiny_onnx(build / "model.onnx")
    result, written = run_bench(plan_bench(artifacts=build, threads=1), iterations=2, warmup=1)
    assert written == [build / BENCH_FILE] and not (build / PLOT_FILE).exists()
    assert "no latency plot" in result.plot_note and "edgeseg[report]" in result.plot_note


def test_pytorch_eager_is_timed_with_denormals_flushed(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from edgeseg.pipeline.bench import flush_denormal_enabled

    first = tiny_onnx(tmp_path / "a" / "model.onnx", InputSpec(64, 64))
    plan = plan_bench(onnx_files=[first], model="shufflenetv2_x0_5_deeplabv3plus", threads=1)
    eager = plan.runners[0]
    before = flush_denormal_enabled(torch)
    assert eager.name == "pytorch-fp32" and eager.flush_denormal in (True, False)
    logits = eager.infer(plan.inputs[0])
    assert flush_denormal_enabled(torch) == before  # restored after each timed call: other runners unaffected
    # the one torch runner (runtime's TorchBackend): numpy logits like every other backend, a fixed input shape
    assert isinstance(logits, np.ndarray) and logits.shape == (1, 19, 64, 64)
    assert eager.input_shape == (1, 3, 64, 64)
    result, _ = run_bench(plan, iterations=2, warmup=1, plot=False)
    assert any("denormal" in note for note in result.notes())


def test_bench_onnx_files_with_pytorch_random_weights(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    first = tiny_onnx(tmp_path / "a" / "model.onnx", InputSpec(64, 64))
    second = tiny_onnx(tmp_path / "b" / "model.fp16.onnx", InputSpec(64, 64))
    plan = plan_bench(onnx_files=[first, second], model="shufflenetv2_x0_5_deeplabv3plus", threads=1,
                      out_dir=tmp_path / "out")
    names = [r.name for r in plan.runners]
    assert names == ["pytorch-fp32", "ort-fp32", "ort-fp16"]
    assert plan.runners[0].note == "random weights (latency only)"
    result, written = run_bench(plan, iterations=3, warmup=1, plot=False)
    assert written == [tmp_path / "out" / BENCH_FILE]
    assert result.ratios()["ort-fp32"]["vs_pytorch-fp32"] is not None


def test_bench_needs_something(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nothing to benchmark"):
        plan_bench()
