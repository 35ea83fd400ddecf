"""Typed results from the step that makes them to the report that prints them; JSON only at the file boundary.

``ValidationResult`` and ``BenchResult`` round-trip through their JSON (validation.json, bench.json, the
build's steps.json), and the step cache hands back the same type whether the step ran or was skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.tiny_onnx import save_conv_onnx

from edgeseg.pipeline.bench import BENCH_FILE, BenchResult, plan_bench, run_bench
from edgeseg.pipeline.step_cache import StepRunner
from edgeseg.pipeline.validate import VALIDATION_FILE, ValidationConfig, ValidationResult, validate_candidate
from edgeseg.spec import InputSpec

SPEC = InputSpec(32, 32)


def _json_round_trip(data: dict) -> dict:
    return json.loads(json.dumps(data))


@pytest.fixture
def bench_result(tmp_path: Path) -> BenchResult:
    folder = tmp_path / "build"
    save_conv_onnx(folder / "model.onnx", spec=SPEC, kernel=3, relu=True)
    result, _ = run_bench(plan_bench(artifacts=folder, threads=1), iterations=3, warmup=1, plot=False)
    return result


def test_bench_result_round_trips_through_bench_json(bench_result: BenchResult, tmp_path: Path) -> None:
    written = json.loads((tmp_path / "build" / BENCH_FILE).read_text())
    again = BenchResult.from_dict(written)
    assert again == bench_result
    assert again.to_dict() == _json_round_trip(bench_result.to_dict())
    assert again.ratios() == bench_result.ratios() and again.notes() == bench_result.notes()
    assert again.runners[0].name == "ort-fp32" and len(again.runners[0].samples_ms) == 3


def test_validation_result_round_trips_through_validation_json(tmp_path: Path) -> None:
    test_validate = pytest.importorskip("test_validate")  # its tiny exported model and reference.npz
    model, onnx_path = test_validate.export_tiny(tmp_path)
    reference = test_validate.save_tiny_reference(tmp_path, model)
    result = validate_candidate(onnx_path, reference, config=ValidationConfig(worst_k=1), raise_on_failure=False)
    written = json.loads((tmp_path / VALIDATION_FILE).read_text())
    again = ValidationResult.from_dict(written)
    assert _json_round_trip(again.to_dict()) == written  # the file's record, read back whole
    # the file holds the overlays it was written with; the returned result also names validation.json itself
    assert {**_json_round_trip(result.to_dict()), "files": written["files"]} == written
    assert again.passed == result.passed and again.gates == result.gates
    assert ValidationResult.from_dict(_json_round_trip(result.to_dict())) == result  # the step cache's record
    with pytest.raises(KeyError, match="gates"):
        ValidationResult.from_dict({k: v for k, v in written.items() if k != "gates"})


def test_the_step_cache_returns_the_typed_result_ran_or_skipped(bench_result: BenchResult, tmp_path: Path) -> None:
    out = tmp_path / "steps"
    out.mkdir()
    marker = out / "bench.json"
    calls: list[int] = []

    def step() -> BenchResult:
        calls.append(1)
        marker.write_text("x")
        return bench_result

    ran = StepRunner(out, log=lambda _: None).run("bench", {"k": 1}, [marker], step, result_type=BenchResult)
    skipped = StepRunner(out, log=lambda _: None).run("bench", {"k": 1}, [marker], step, result_type=BenchResult)
    assert not ran.skipped and skipped.skipped and calls == [1]
    assert isinstance(ran.result, BenchResult) and isinstance(skipped.result, BenchResult)
    assert skipped.result == ran.result == bench_result
    recorded = json.loads((out / "steps.json").read_text())["bench"]["summary"]
    assert recorded == _json_round_trip(bench_result.to_dict())  # JSON only in the file


def test_a_recorded_summary_of_another_shape_reruns_the_step(tmp_path: Path) -> None:
    """steps.json written by an edgeseg whose summary does not read as the result type: the step runs again."""
    marker = tmp_path / "out.txt"
    marker.write_text("x")
    StepRunner(tmp_path, log=lambda _: None).run("validate", {"k": 1}, [marker], lambda: {"old": "summary"})
    calls: list[int] = []

    def step() -> None:
        calls.append(1)

    outcome = StepRunner(tmp_path, log=lambda _: None).run("validate", {"k": 1}, [marker], step,
                                                           result_type=ValidationResult)
    assert not outcome.skipped and calls == [1] and outcome.result is None


def test_calibration_and_quantize_results_are_typed_ran_or_skipped(tmp_path: Path) -> None:
    from helpers.tiny_onnx import write_images

    from edgeseg.pipeline import int8_steps
    from edgeseg.pipeline.options import BuildOptions

    onnx_path = save_conv_onnx(tmp_path / "build" / "model.onnx", spec=SPEC)
    out = onnx_path.parent
    frames = tmp_path / "frames"
    write_images(frames, 3)
    options = BuildOptions(calib_method="minmax", calib_images=2)

    def steps() -> tuple[dict[str, bool], int8_steps.CalibrationResult, int8_steps.QuantizeResult]:
        done: dict[str, bool] = {}
        runner = StepRunner(out, log=lambda _: None)
        calibrated = int8_steps.run_calibration_step(runner, onnx_path, frames, options, out, done, None)
        return done, calibrated, int8_steps.run_quantize_step(runner, onnx_path, options, out, done, [])

    done, calibrated, quantized = steps()
    assert not done["calibrate"] and not done["quantize"]
    assert calibrated.images == 2 and calibrated.method == "minmax" and calibrated.bag is None
    assert "bag" not in calibrated.to_dict()  # a folder's record has none, as before
    assert quantized.float_layers == [] and quantized.trt_fusion is not None
    done, calibrated_again, quantized_again = steps()
    assert done["calibrate"] and done["quantize"]
    assert calibrated_again == calibrated and quantized_again == quantized
    recorded = json.loads((out / "steps.json").read_text())
    assert int8_steps.CalibrationResult.from_dict(recorded["calibrate"]["summary"]) == calibrated
    assert int8_steps.QuantizeResult.from_dict(recorded["quantize"]["summary"]) == quantized


def test_fallback_record_round_trips_through_fallback_json() -> None:
    from edgeseg.pipeline.int8_steps import FallbackRecord
    from edgeseg.quant.fallback import FallbackResult, Trial

    search = FallbackResult(cap=2, trials=[Trial([], False, 0.95, 1.2, ["argmax agreement 0.95 < 0.99"]),
                                           Trial(["conv_7"], True, 0.995, 0.1)], ranking=["conv_7", "conv_3"])
    record = FallbackRecord(search, "fp32", {"0": 4.1, "1": 4.6, "iterations": 20, "threads": 2})
    written = _json_round_trip(record.to_dict())
    assert FallbackRecord.from_dict(written) == record
    assert written["passed"] is True and written["kept"] == ["conv_7"] and written["precision_of_kept"] == "fp32"
    section = record.manifest_section().to_dict()
    assert section == {"passed": True, "kept": ["conv_7"], "precision_of_kept": "fp32", "cap": 2, "next_layers": [],
                       "latency_ms": record.latency_ms, "trials": 2}


def test_the_validate_step_key_is_its_config() -> None:
    """The build's validate step key holds ValidationConfig.cache_key(): the gates, the frame cap and the overlay
    count (its files), not the thread count."""
    base = ValidationConfig(min_agreement=0.99, max_miou_drop=0.5, threads=1)
    assert base.cache_key() == ValidationConfig(min_agreement=0.99, max_miou_drop=0.5, threads=8).cache_key()
    for changed in ({"min_agreement": 0.98}, {"max_miou_drop": 1.0}, {"max_images": 4}, {"worst_k": 0}):
        other = ValidationConfig(**{"min_agreement": 0.99, "max_miou_drop": 0.5, "threads": 1, **changed})
        assert other.cache_key() != base.cache_key()


def test_the_engine_step_returns_a_typed_record_ran_or_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """build_trt hands back an EngineRecord (steps.json holds its to_dict, the shape it always had) and is keyed
    on the engine config it builds with (BuildConfig.cache_key: not the timing cache's path, not the log level)."""
    from types import SimpleNamespace

    from edgeseg.engine.config import BuildConfig
    from edgeseg.pipeline import build_steps
    from edgeseg.pipeline.options import BuildOptions

    recorded = {"tensorrt_version": "10.3.0.30", "gpu_name": "Fake Orin", "compute_capability": "8.7",
                "io_tensors": [{"name": "images", "mode": "input"}], "build": {"builder_flags": ["FP16"]}}
    built: list[BuildConfig] = []

    def fake_build(source: Path, config: BuildConfig, **_: object) -> tuple[bytes, SimpleNamespace]:
        built.append(config)
        return b"engine", SimpleNamespace(to_dict=lambda: {**recorded, "model": "tiny"})

    monkeypatch.setattr(build_steps, "build_engine", fake_build)
    onnx_path = save_conv_onnx(tmp_path / "build" / "model.onnx", spec=SPEC)
    out = onnx_path.parent

    def engine(options: BuildOptions) -> tuple[bool, build_steps.EngineRecord]:
        done: dict[str, bool] = {}
        _, record = build_steps.build_trt(StepRunner(out, log=lambda _: None), onnx_path, SPEC, options, out, done)
        return done["engine"], record

    skipped, record = engine(BuildOptions(precision="fp16", high_precision="fp16"))
    assert not skipped and record == build_steps.EngineRecord(source="model.onnx", precision="fp16", **recorded)
    skipped, again = engine(BuildOptions(precision="fp16", high_precision="fp16"))
    assert skipped and again == record and len(built) == 1
    summary = json.loads((out / "steps.json").read_text())["engine"]["summary"]
    assert summary == {"source": "model.onnx", "precision": "fp16", "engine": recorded}
    assert build_steps.EngineRecord.from_dict(_json_round_trip(record.to_dict())) == record
    assert engine(BuildOptions(precision="fp16", high_precision="fp32"))[0] is False  # another config: rebuilt
    key = built[-1].cache_key()
    assert key == {k: v for k, v in built[-1].to_dict().items() if k not in ("timing_cache", "calibration_cache",
                                                                            "verbose")}
    assert BuildConfig(precision="fp16", timing_cache=tmp_path / "a", verbose=True).cache_key() == \
        BuildConfig(precision="fp16", timing_cache=tmp_path / "b").cache_key()


def test_the_sensitivity_step_is_typed_and_keyed_on_its_config(tmp_path: Path) -> None:
    from helpers.tiny_onnx import write_images

    from edgeseg.pipeline import int8_steps
    from edgeseg.pipeline.options import BuildOptions

    onnx_path = save_conv_onnx(tmp_path / "build" / "model.onnx", spec=SPEC)
    out = onnx_path.parent
    frames = tmp_path / "frames"
    write_images(frames, 3)

    def sensitivity(options: BuildOptions) -> tuple[dict[str, bool], int8_steps.SensitivityRecord]:
        done: dict[str, bool] = {}
        runner = StepRunner(out, log=lambda _: None)
        int8_steps.run_calibration_step(runner, onnx_path, frames, options, out, done, None)
        return done, int8_steps.run_sensitivity_step(runner, onnx_path, frames, options, out, done, None)

    options = BuildOptions(calib_method="minmax", calib_images=2, sensitivity=True)
    done, record = sensitivity(options)
    assert not done["sensitivity"] and isinstance(record, int8_steps.SensitivityRecord)
    measured = json.loads((out / "sensitivity.json").read_text())
    assert record.frames == measured["frames"] and record.ranked == [row["layer"] for row in measured["layers"]]
    assert record.baseline_agreement == measured["baseline"]["agreement"]
    done, again = sensitivity(options)
    assert done["sensitivity"] and again == record
    assert int8_steps.SensitivityRecord.from_dict(_json_round_trip(record.to_dict())) == record
    key = int8_steps.sensitivity_key(int8_steps.calibrate_config(options))
    assert set(key) == set(int8_steps.SENSITIVITY_PASS_FIELDS) and key["concat_scales"] == options.concat_scales
    assert "method" not in key  # the calibration method changes ranges.json, which the key holds by its hash
    done, _ = sensitivity(BuildOptions(calib_method="minmax", calib_images=2, sensitivity=True,
                                       concat_scales="shared"))
    assert not done["sensitivity"]


def test_selection_result_round_trips_in_selection_json_shape() -> None:
    """--precision best's SelectionResult: selection.json (and steps.json's summary) in the shape it had: a row
    checked against reference.npz has agreement and mIoU drop, one without a reference has neither."""
    from edgeseg.pipeline.best import SELECTION_FILE, CandidateVerdict, SelectionResult

    checked = CandidateVerdict("openvino", "model.int8.onnx", "int8", {"inference_precision": "bf16"}, True, [],
                               agreement=0.995, miou_drop_points=None, p50_ms=3.5)
    unchecked = CandidateVerdict("onnxruntime", "model.onnx", "fp32", passed=True, failures=["no reference.npz"],
                                 p50_ms=5.0)
    selection = SelectionResult(chosen="openvino+bf16:model.int8.onnx", chosen_file="model.int8.onnx",
                                backend="openvino", precision="int8", options={"inference_precision": "bf16"},
                                candidates={"openvino+bf16:model.int8.onnx": checked, "model.onnx": unchecked},
                                why="...", threads=2, iterations=20, load_average={"start": 1.0, "end": 1.5})
    written = _json_round_trip(selection.to_dict())
    assert SelectionResult.from_dict(written) == selection
    assert list(written["candidates"]["openvino+bf16:model.int8.onnx"]) == [
        "backend", "file", "precision", "options", "passed", "agreement", "miou_drop_points", "failures", "p50_ms"]
    assert list(written["candidates"]["model.onnx"]) == ["backend", "file", "precision", "options", "passed",
                                                         "failures", "p50_ms"]
    assert selection.manifest_record() == {"asked": "best", "chosen": "openvino+bf16:model.int8.onnx",
                                           "file": "model.int8.onnx", "backend": "openvino", "precision": "int8",
                                           "why": "...", "details": SELECTION_FILE}
    assert selection.runtime_record() == {"backend": "openvino", "inference_precision": "bf16"}


def test_source_timing_round_trips_inside_bench_json(bench_result: BenchResult) -> None:
    """bench --source's SourceTiming: bench.json's source_latency in the shape it had (source an object, the
    latency figures flat beside it), typed again by BenchResult.from_dict."""
    from edgeseg.pipeline.bench import SourceTiming
    from edgeseg.runtime.latency import LatencySummary

    latency = LatencySummary(frames=3, warmup_frames=1, clock="read", p50_ms=5.0, p90_ms=6.0, p99_ms=7.0, mean_ms=5.5,
                             std_ms=0.5, max_ms=7.0, jitter_ms=2.0, segment_p50_ms=4.0, fps=20.0, delivered=3,
                             dropped=0, samples_ms=[5.0, 6.0, 7.0])
    timing = SourceTiming(text="frames/", kind="folder", topic=None, opened_with="", backend="onnxruntime",
                          model_file="model.onnx", precision="fp32", build_verdict="passed", warning=None,
                          warmup_calls=2, ended_because="end of source", latency=latency)
    written = _json_round_trip(timing.to_dict())
    assert written["source"] == {"text": "frames/", "kind": "folder", "topic": None, "opened_with": ""}
    assert written["p50_ms"] == 5.0 and written["samples_ms"] == [5.0, 6.0, 7.0] and "latency" not in written
    assert SourceTiming.from_dict(written) == timing
    bench_result.source_latency = timing
    again = BenchResult.from_dict(_json_round_trip(bench_result.to_dict()))
    assert again.source_latency == timing and again == bench_result
