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

import os
from pathlib import Path
from typing import Any

from .. import __version__
from ..fileio import atomic_write_json, sha256_file
from ..reference import REFERENCE_FILE
from ..runtime.backend import Candidate, best_candidates
from .artifacts import STANDARD_NAMES
from .bench import backend_runner, benchmark
from .build import BuildOptions
from .build_steps import Log
from .step_cache import StepRunner
from .validate import ValidationConfig, validate_candidate

SELECTION_FILE = "selection.json"


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
                out: Path, done: dict[str, bool], log: Log) -> tuple[Path, dict[str, Any]]:
    """The kept file and selection.json's content (a cached step: same files, reference, gates and timing
    settings -> the same choice)."""
    reference = out / REFERENCE_FILE
    key = {"candidates": {name: [c.backend, c.precision, c.options, sha256_file(p)] for name, c, p in candidates},
           "reference": sha256_file(reference) if reference.is_file() else None,
           "gates": [options.min_agreement, options.max_miou_drop], "iterations": options.bench_iterations,
           "threads": options.threads, "version": __version__}
    outcome = runner.run("select", key, [out / SELECTION_FILE],
                         lambda: _measure_and_pick(candidates, options, out, log))
    done["select"] = outcome.skipped
    selection = dict(outcome.result or {})
    return out / str(selection["chosen_file"]), selection


def pick_fastest(rows: dict[str, dict[str, Any]], *, default: str) -> str:
    """The candidate with the lowest p50 among those that passed the gates; ``default`` (the float model)
    when none did."""
    passing = sorted((row["p50_ms"], name) for name, row in rows.items() if row["passed"])
    return passing[0][1] if passing else default


def gate_verdict(path: Path, candidate: Candidate, reference: Path, options: BuildOptions) -> dict[str, Any]:
    """``path`` on ``candidate``'s runtime against reference.npz with the build's gates, nothing written."""
    gates = ValidationConfig(min_agreement=options.min_agreement, max_miou_drop=options.max_miou_drop,
                             threads=options.threads)
    result = validate_candidate(path, reference, config=gates, write=False, raise_on_failure=False,
                                backend=candidate.backend, backend_options=dict(candidate.options))
    return {"passed": result.passed, "agreement": float(result.parity["agreement"]),
            "miou_drop_points": (result.ground_truth or {}).get("miou_drop_points"),
            "failures": list(result.gates["failures"])}


def _measure_and_pick(candidates: list[tuple[str, Candidate, Path]], options: BuildOptions, out: Path, log: Log
                      ) -> dict[str, Any]:
    import numpy as np

    reference = out / REFERENCE_FILE
    rows: dict[str, dict[str, Any]] = {}
    for name, candidate, path in candidates:
        row = {"backend": candidate.backend, "file": path.name, "precision": candidate.precision,
               "options": dict(candidate.options)}
        if reference.is_file():
            row.update(gate_verdict(path, candidate, reference, options))
        else:  # nothing to check INT8 against: only a float model run in FP32 is trusted as is
            row.update({"passed": candidate.precision == "fp32", "failures": [f"no {REFERENCE_FILE}"]})
        rows[name] = row
    threads = options.threads or _usable_cores()
    runners = [backend_runner(path, name, c.precision, threads, c.backend, **c.options) for name, c, path in candidates]
    try:
        x = np.random.default_rng(0).standard_normal(runners[0].input_shape or ()).astype(np.float32)
        timed = benchmark(runners, [x], iterations=options.bench_iterations, warmup=3)
    finally:
        for opened in runners:
            opened.close()
    for stats in timed.runners:
        rows[stats.name]["p50_ms"] = round(stats.p50_ms, 3)
    chosen = pick_fastest(rows, default=candidates[0][0])
    why = "; ".join(f"{name}: p50 {row['p50_ms']:.2f} ms, gates {'passed' if row['passed'] else 'failed'}"
                    for name, row in rows.items())
    log(f"best: {chosen} ({why})")
    kept = rows[chosen]
    summary = {"chosen": chosen, "chosen_file": kept["file"], "backend": kept["backend"],
               "precision": kept["precision"], "options": kept["options"], "candidates": rows, "why": why,
               "threads": threads, "iterations": options.bench_iterations, "load_average": timed.load_average}
    atomic_write_json(out / SELECTION_FILE, summary)
    return summary


def _usable_cores() -> int:
    """The cores this process may run on (the bench's default thread count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def selection_record(selection: dict[str, Any]) -> dict[str, Any]:
    """What the manifest records of a --precision best choice: what was asked, the runtime, file and precision
    kept and why; every candidate's gates and p50 stay in selection.json."""
    chosen = str(selection.get("chosen"))
    return {"asked": "best", "chosen": chosen, "file": selection.get("chosen_file", chosen),
            "backend": selection.get("backend", "onnxruntime"), "precision": selection.get("precision"),
            "why": selection.get("why"), "details": SELECTION_FILE}


def runtime_record(selection: dict[str, Any]) -> dict[str, Any]:
    """manifest.build['runtime']: the settings the kept candidate was validated with (OpenVINO: device and
    inference precision), which the robot's backend applies (runtime/openvino_backend.runtime_options)."""
    return {"backend": selection.get("backend", "onnxruntime"), **dict(selection.get("options") or {})}
