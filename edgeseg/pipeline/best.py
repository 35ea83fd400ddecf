"""``--precision best`` across runtimes (layer 4): every candidate the backend registry offers here is validated
against reference.npz with the build's gates and timed side by side, and the fastest that passes is kept.

A candidate is a backend, the build folder's file it runs (a manifest role) and the precision it runs it in
(runtime/backend.py ``Candidate``): ONNX Runtime FP32 (model.onnx) and INT8 (model.int8.ort.onnx), OpenVINO FP32
(model.onnx) and INT8 (model.int8.onnx, the Q/DQ file TensorRT gets), and OpenVINO with a bf16/fp16
inference-precision hint where the CPU has one. Every accuracy gate applies to every candidate, bf16 included.
selection.json lists them all (agreement, mIoU drop, p50); the manifest records the runtime, precision and
file kept, and ``Segmenter``/``edgeseg run`` run exactly that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..fileio import atomic_write_json, sha256_file
from ..machine import usable_cores
from ..reference import REFERENCE_FILE
from ..runtime.backend import Candidate, best_candidates
from .artifacts import STANDARD_NAMES
from .bench import backend_runner, time_side_by_side
from .build import BuildOptions
from .build_steps import Log
from .step_cache import StepRunner
from .validate import validate_candidate

SELECTION_FILE = "selection.json"


@dataclass
class CandidateVerdict:
    """One candidate's row in selection.json: its runtime, file and precision, its gate verdict against
    reference.npz (``agreement`` None: there was none, and the row has no agreement/mIoU fields) and its p50."""

    backend: str
    file: str
    precision: str
    options: dict[str, Any] = field(default_factory=dict)  # the runtime's options (an inference-precision hint)
    passed: bool = False
    failures: list[str] = field(default_factory=list)
    agreement: float | None = None
    miou_drop_points: float | None = None
    p50_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"backend": self.backend, "file": self.file, "precision": self.precision,
                                "options": dict(self.options), "passed": self.passed}
        if self.agreement is not None:
            data.update({"agreement": self.agreement, "miou_drop_points": self.miou_drop_points})
        data["failures"] = list(self.failures)
        if self.p50_ms is not None:
            data["p50_ms"] = self.p50_ms
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateVerdict:
        return cls(backend=str(data["backend"]), file=str(data["file"]), precision=str(data["precision"]),
                   options=dict(data.get("options") or {}), passed=bool(data["passed"]),
                   failures=[str(f) for f in data.get("failures") or []], agreement=data.get("agreement"),
                   miou_drop_points=data.get("miou_drop_points"), p50_ms=data.get("p50_ms"))


@dataclass
class SelectionResult:
    """The select step's result: the candidate kept, why, and every candidate's verdict and p50 (selection.json,
    and steps.json's summary, in that shape: JSON only through to_dict/from_dict)."""

    chosen: str  # the candidate's key (candidate_key)
    chosen_file: str
    backend: str
    precision: str
    options: dict[str, Any]
    candidates: dict[str, CandidateVerdict]
    why: str
    threads: int
    iterations: int
    load_average: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "chosen_file": self.chosen_file, "backend": self.backend,
                "precision": self.precision, "options": dict(self.options),
                "candidates": {name: row.to_dict() for name, row in self.candidates.items()}, "why": self.why,
                "threads": self.threads, "iterations": self.iterations, "load_average": self.load_average}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SelectionResult:
        return cls(chosen=str(data["chosen"]), chosen_file=str(data["chosen_file"]), backend=str(data["backend"]),
                   precision=str(data["precision"]), options=dict(data.get("options") or {}),
                   candidates={str(k): CandidateVerdict.from_dict(v) for k, v in data["candidates"].items()},
                   why=str(data["why"]), threads=int(data["threads"]), iterations=int(data["iterations"]),
                   load_average=dict(data.get("load_average") or {}))

    def manifest_record(self) -> dict[str, Any]:
        """manifest.build['selection']: what was asked, the runtime, file and precision kept and why; every
        candidate's gates and p50 stay in selection.json."""
        return {"asked": "best", "chosen": self.chosen, "file": self.chosen_file, "backend": self.backend,
                "precision": self.precision, "why": self.why, "details": SELECTION_FILE}

    def runtime_record(self) -> dict[str, Any]:
        """manifest.build['runtime']: the settings the kept candidate was validated with (OpenVINO: device and
        inference precision), which the robot's backend applies (runtime/openvino_backend.runtime_options)."""
        return {"backend": self.backend, **self.options}


def candidate_key(candidate: Candidate, file_name: str) -> str:
    """A candidate's name in selection.json: the file for ONNX Runtime (as before other runtimes were
    candidates), ``backend:file`` for the others, ``backend+hint:file`` with an inference-precision hint."""
    if candidate.backend == "onnxruntime" and not candidate.options:
        return file_name
    hint = candidate.options.get("inference_precision", "fp32")
    return f"{candidate.backend}{'' if hint == 'fp32' else '+' + hint}:{file_name}"


def candidates_here(backend: str, requested: str, out: Path) -> list[tuple[str, Candidate, Path]]:
    """(key, candidate, file) of every candidate of ``backend`` (``requested`` "auto": of every available CPU
    runtime that builds) whose file the build folder holds."""
    names = None if requested == "auto" else (backend,)
    found = []
    for candidate in best_candidates(names):
        if candidate.backend == "tensorrt":  # an engine is built, not selected (the Jetson path)
            continue
        path = out / STANDARD_NAMES[candidate.role][0]
        if path.is_file():
            found.append((candidate_key(candidate, path.name), candidate, path))
    return found


def select_best(runner: StepRunner, candidates: list[tuple[str, Candidate, Path]], options: BuildOptions,
                out: Path, done: dict[str, bool], log: Log) -> tuple[Path, SelectionResult]:
    """The kept file and the selection (a cached step: same files, reference, gates and timing settings -> the
    same choice)."""
    reference = out / REFERENCE_FILE
    key = {"candidates": {name: [c.backend, c.precision, c.options, sha256_file(p)] for name, c, p in candidates},
           "reference": sha256_file(reference) if reference.is_file() else None,
           "gates": [options.min_agreement, options.max_miou_drop], "iterations": options.bench_iterations,
           "threads": options.threads, "version": __version__}
    outcome = runner.run("select", key, [out / SELECTION_FILE],
                         lambda: _measure_and_pick(candidates, options, out, log), result_type=SelectionResult)
    done["select"] = outcome.skipped
    selection: SelectionResult = outcome.result
    return out / selection.chosen_file, selection


def pick_fastest(rows: Mapping[str, CandidateVerdict], *, default: str) -> str:
    """The candidate with the lowest p50 among those that passed the gates; ``default`` (the float model)
    when none did."""
    passing = sorted((row.p50_ms, name) for name, row in rows.items() if row.passed)
    return passing[0][1] if passing else default


def gate_verdict(path: Path, candidate: Candidate, reference: Path, options: BuildOptions, row: CandidateVerdict
                 ) -> None:
    """``path`` on ``candidate``'s runtime against reference.npz with the build's gates, into ``row``; nothing
    written."""
    result = validate_candidate(path, reference, config=options.validation_config(), write=False,
                                raise_on_failure=False, backend=candidate.backend,
                                backend_options=dict(candidate.options))
    row.passed, row.agreement = result.passed, float(result.parity["agreement"])
    row.miou_drop_points = (result.ground_truth or {}).get("miou_drop_points")
    row.failures = list(result.gates["failures"])


def _measure_and_pick(candidates: list[tuple[str, Candidate, Path]], options: BuildOptions, out: Path, log: Log
                      ) -> SelectionResult:
    reference = out / REFERENCE_FILE
    rows: dict[str, CandidateVerdict] = {}
    for name, candidate, path in candidates:
        row = CandidateVerdict(backend=candidate.backend, file=path.name, precision=candidate.precision,
                               options=dict(candidate.options))
        if reference.is_file():
            gate_verdict(path, candidate, reference, options, row)
        else:  # nothing to check INT8 against: only a float model run in FP32 is trusted as is
            row.passed, row.failures = candidate.precision == "fp32", [f"no {REFERENCE_FILE}"]
        rows[name] = row
    threads = options.threads or usable_cores()
    runners = [backend_runner(path, name, c.precision, threads, c.backend, **c.options) for name, c, path in candidates]
    timed = time_side_by_side(runners, iterations=options.bench_iterations, warmup=3)
    for stats in timed.runners:
        rows[stats.name].p50_ms = round(stats.p50_ms, 3)
    chosen = pick_fastest(rows, default=candidates[0][0])
    why = "; ".join(f"{name}: p50 {row.p50_ms or 0.0:.2f} ms, gates {'passed' if row.passed else 'failed'}"
                    for name, row in rows.items())
    log(f"best: {chosen} ({why})")
    kept = rows[chosen]
    selection = SelectionResult(chosen=chosen, chosen_file=kept.file, backend=kept.backend, precision=kept.precision,
                                options=dict(kept.options), candidates=rows, why=why, threads=threads,
                                iterations=options.bench_iterations, load_average=dict(timed.load_average))
    atomic_write_json(out / SELECTION_FILE, selection.to_dict())
    return selection

