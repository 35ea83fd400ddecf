"""manifest.validation_verdict: the one place the manifest's verdict is computed, and how the robot reads it;
the manifest's typed sections (ValidationVerdict, AccuracySummary, LatencySummary) and their JSON shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeseg.errors import ArtifactError
from edgeseg.manifest import (
    AccuracySummary,
    CalibrationSummary,
    FallbackSummary,
    LatencySummary,
    Manifest,
    RunnerLatency,
    ValidationVerdict,
    manifest_checksum,
    read_manifest,
    validation_problem,
    validation_verdict,
    write_manifest,
)
from edgeseg.spec import InputSpec

GATES = {"passed": True, "failures": [], "skipped": ["--max-miou-drop: no ground truth scored by both models"],
         "min_agreement": 0.99, "max_miou_drop": 0.5}


def _manifest(verdict: ValidationVerdict) -> Manifest:
    return Manifest(model="tiny", num_classes=4, input_spec=InputSpec(32, 32),
                    artifacts={"onnx_int8_cpu": "model.int8.ort.onnx"}, validation=verdict)


def test_passed_verdict_records_the_candidate_and_the_gates() -> None:
    verdict = validation_verdict(role="onnx_int8_cpu", candidate_file="model.int8.ort.onnx", candidate_sha256="a" * 64,
                                 gates=GATES, reference="reference.npz", reference_kind="reference.npz")
    assert isinstance(verdict, ValidationVerdict)
    assert verdict.to_dict() == {"candidate": "onnx_int8_cpu", "candidate_file": "model.int8.ort.onnx",
                       "candidate_sha256": "a" * 64, "status": "passed", "reference": "reference.npz",
                       "reference_kind": "reference.npz", "failures": [], "skipped": GATES["skipped"],
                       "min_agreement": 0.99, "max_miou_drop": 0.5}
    assert validation_problem(_manifest(verdict), "onnx_int8_cpu") is None


def test_failed_verdict_names_the_failures() -> None:
    gates = {**GATES, "passed": False, "failures": ["argmax agreement 0.9 < --min-agreement 0.99"]}
    verdict = validation_verdict(role="onnx_int8_cpu", candidate_file="model.int8.ort.onnx", candidate_sha256="b",
                                 gates=gates, reference="reference.npz", reference_kind="pytorch")
    assert verdict.status == "failed" and verdict.failures == gates["failures"]
    problem = validation_problem(_manifest(verdict), "onnx_int8_cpu")
    assert problem is not None and "argmax agreement 0.9" in problem


def test_not_run_verdict_says_why() -> None:
    verdict = validation_verdict(role="onnx", candidate_file="model.onnx", candidate_sha256="c", gates=None,
                                 why="no reference.npz")
    assert verdict.to_dict() == {"candidate": "onnx", "candidate_file": "model.onnx", "candidate_sha256": "c",
                                 "status": "not_run", "why": "no reference.npz"}
    assert validation_verdict(role=None, candidate_file="x.onnx", candidate_sha256="d", gates=None).why == \
        "not validated"
    assert validation_problem(_manifest(verdict), "onnx_int8_cpu") == "model.int8.ort.onnx was not validated " \
        "against PyTorch (no reference.npz)"


def test_no_validation_section_reads_as_not_run() -> None:
    manifest = Manifest(model="tiny", num_classes=4, input_spec=InputSpec(32, 32), artifacts={"onnx": "model.onnx"})
    assert manifest.validation is None and manifest.validation_status == "not_run"
    assert manifest.validated_role is None
    assert manifest.to_dict()["validation"] == {} and manifest.to_dict()["accuracy"] == {}
    assert "the build stopped before validation" in (validation_problem(manifest, "onnx") or "")


# a manifest.json as `edgeseg build --int8` wrote it before its sections were typed (checksum left out)
GOLDEN = json.loads(json.dumps({
    "model": "tiny", "num_classes": 4,
    "input_spec": InputSpec(32, 64).to_dict(),
    "classes": ["a", "b", "c", "d"], "class_colors": [], "precision": "int8", "backend": "onnxruntime",
    "artifacts": {"onnx": "model.onnx", "onnx_int8_cpu": "model.int8.ort.onnx"},
    "hashes": {"onnx": "1" * 64, "onnx_int8_cpu": "2" * 64},
    "tensorrt_version": None, "gpu_name": None, "compute_capability": None, "io_tensors": [],
    "calibration": {"method": "entropy", "folder": "frames", "images": 8, "skipped": [["bad.png", "unreadable"]],
                    "tensors": 12, "seconds": {"calibrate": 1.5, "quantize": 0.5},
                    "fallback": {"passed": True, "kept": ["conv_7"], "precision_of_kept": "fp32", "cap": 4,
                                 "next_layers": ["conv_3"], "latency_ms": {"0": 4.1, "1": 4.6}, "trials": 2},
                    "concat_scales": "separate", "high_precision": "fp16",
                    "float_regions": {"high_precision": "fp32"}, "float_layers": ["conv_7"]},
    "accuracy": {"agreement": 0.995, "max_abs_error": 0.25, "mean_abs_error": 0.01, "cosine_similarity": 0.999,
                 "miou_vs_reference": 0.97, "images": 8, "gt_miou_reference": 0.5, "gt_miou_candidate": 0.49,
                 "gt_miou_drop_points": 1.0, "gates_passed": True},
    "latency": {"runners": {"ort-fp32": {"p50_ms": 1.5, "p90_ms": 1.75, "p99_ms": 2.0, "mean_ms": 1.6},
                            "ort-int8": {"p50_ms": 1.0, "p90_ms": 1.25, "p99_ms": 1.5, "mean_ms": 1.1}},
                "threads": 2},
    "build": {},
    "validation": {"candidate": "onnx_int8_cpu", "candidate_file": "model.int8.ort.onnx",
                   "candidate_sha256": "2" * 64, "status": "passed", "reference": "reference.npz",
                   "reference_kind": "reference.npz", "failures": [], "skipped": [], "min_agreement": 0.99,
                   "max_miou_drop": 0.5},
    "edgeseg_version": "0.0.1", "format": 2,
}))


def _json(data: dict) -> dict:
    return json.loads(json.dumps(data))


def test_an_existing_manifest_reads_into_typed_sections_and_writes_back_the_same_json(tmp_path: Path) -> None:
    written = {**GOLDEN, "checksum": manifest_checksum(GOLDEN)}
    (tmp_path / "manifest.json").write_text(json.dumps(written))
    manifest = read_manifest(tmp_path)  # the checksum of a file written before the typed sections still holds
    assert isinstance(manifest.validation, ValidationVerdict) and manifest.validation.min_agreement == 0.99
    assert isinstance(manifest.accuracy, AccuracySummary) and manifest.accuracy.agreement == 0.995
    assert manifest.accuracy.ground_truth == {"miou_reference": 0.5, "miou_candidate": 0.49, "miou_drop_points": 1.0}
    assert isinstance(manifest.calibration, CalibrationSummary) and manifest.calibration.bag is None
    fallback = manifest.calibration.fallback
    assert isinstance(fallback, FallbackSummary) and fallback.kept == ["conv_7"] and fallback.trials == 2
    assert isinstance(manifest.latency, LatencySummary)
    assert manifest.latency.runners["ort-int8"] == RunnerLatency(p50_ms=1.0, p90_ms=1.25, p99_ms=1.5, mean_ms=1.1)
    assert _json(manifest.to_dict()) == GOLDEN
    (tmp_path / "again").mkdir()
    write_manifest(tmp_path / "again", manifest)
    assert json.loads((tmp_path / "again" / "manifest.json").read_text()) == written  # same JSON, same checksum


def test_a_not_run_manifest_round_trips(tmp_path: Path) -> None:
    data = {**GOLDEN, "accuracy": {}, "latency": {}, "calibration": {},
            "validation": {"candidate": "onnx", "candidate_file": "model.onnx", "candidate_sha256": "1" * 64,
                           "status": "not_run", "why": "no reference.npz"}}
    manifest = Manifest.from_dict(data)
    assert manifest.accuracy is None and manifest.latency is None and manifest.calibration is None
    assert manifest.validation_status == "not_run"
    assert _json(manifest.to_dict()) == data
    assert Manifest.from_dict(manifest.to_dict()) == manifest


def test_sections_round_trip_through_their_json() -> None:
    verdict = ValidationVerdict(status="failed", candidate="onnx_int8_cpu", candidate_file="m.onnx",
                                candidate_sha256="e", reference="reference.npz", reference_kind="pytorch",
                                failures=["argmax agreement 0.9 < 0.99"], min_agreement=0.99, max_miou_drop=0.5)
    accuracy = AccuracySummary(gates_passed=False, agreement=0.9, images=3, ground_truth={"miou_candidate": 0.4})
    latency = LatencySummary(runners={"ort-fp32": RunnerLatency(1.0, 2.0, 3.0, 1.5)}, threads=None)
    for section in (verdict, accuracy, latency):
        assert type(section).from_dict(json.loads(json.dumps(section.to_dict()))) == section
    assert "max_abs_error" not in accuracy.to_dict()  # a figure not measured is absent, as before


def test_a_calibration_section_keeps_what_it_does_not_know() -> None:
    """An older or newer build's calibration keys survive a read and a write (the section is written back as it
    was); fields this build did not fill are absent, as before (a folder's calibration has no bag)."""
    data = {"method": "percentile", "images": 4, "percentile": 99.99, "ort": {"per_channel": True}}
    section = CalibrationSummary.from_dict(data)
    assert section.method == "percentile" and section.extra == {"percentile": 99.99, "ort": {"per_channel": True}}
    assert section.to_dict() == data and "bag" not in section.to_dict()


def test_a_section_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ArtifactError, match="accuracy"):
        Manifest.from_dict({**GOLDEN, "accuracy": [1, 2]})
