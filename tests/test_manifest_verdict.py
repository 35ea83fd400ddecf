"""manifest.validation_verdict: the one place the manifest's verdict is computed, and how the robot reads it."""

from __future__ import annotations

from edgeseg.manifest import Manifest, validation_problem, validation_verdict
from edgeseg.spec import InputSpec

GATES = {"passed": True, "failures": [], "skipped": ["--max-miou-drop: no ground truth scored by both models"],
         "min_agreement": 0.99, "max_miou_drop": 0.5}


def _manifest(verdict: dict) -> Manifest:
    return Manifest(model="tiny", num_classes=4, input_spec=InputSpec(32, 32),
                    artifacts={"onnx_int8_cpu": "model.int8.ort.onnx"}, validation=verdict)


def test_passed_verdict_records_the_candidate_and_the_gates() -> None:
    verdict = validation_verdict(role="onnx_int8_cpu", candidate_file="model.int8.ort.onnx", candidate_sha256="a" * 64,
                                 gates=GATES, reference="reference.npz", reference_kind="reference.npz")
    assert verdict == {"candidate": "onnx_int8_cpu", "candidate_file": "model.int8.ort.onnx",
                       "candidate_sha256": "a" * 64, "status": "passed", "reference": "reference.npz",
                       "reference_kind": "reference.npz", "failures": [], "skipped": GATES["skipped"],
                       "min_agreement": 0.99, "max_miou_drop": 0.5}
    assert validation_problem(_manifest(verdict), "onnx_int8_cpu") is None


def test_failed_verdict_names_the_failures() -> None:
    gates = {**GATES, "passed": False, "failures": ["argmax agreement 0.9 < --min-agreement 0.99"]}
    verdict = validation_verdict(role="onnx_int8_cpu", candidate_file="model.int8.ort.onnx", candidate_sha256="b",
                                 gates=gates, reference="reference.npz", reference_kind="pytorch")
    assert verdict["status"] == "failed" and verdict["failures"] == gates["failures"]
    problem = validation_problem(_manifest(verdict), "onnx_int8_cpu")
    assert problem is not None and "argmax agreement 0.9" in problem


def test_not_run_verdict_says_why() -> None:
    verdict = validation_verdict(role="onnx", candidate_file="model.onnx", candidate_sha256="c", gates=None,
                                 why="no reference.npz")
    assert verdict == {"candidate": "onnx", "candidate_file": "model.onnx", "candidate_sha256": "c",
                       "status": "not_run", "why": "no reference.npz"}
    assert validation_verdict(role=None, candidate_file="x.onnx", candidate_sha256="d", gates=None)["why"] == \
        "not validated"
