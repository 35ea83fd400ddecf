"""The build's bench step is cached on everything ``plan_bench`` times, not only the candidate.

Before, the key held the candidate's hash, iterations, threads and weights: a build folder's other
timed file (model.int8.ort.onnx beside an FP32 candidate, model.engine) could change and the old
bench.json was reused, stale.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers.tiny_onnx import save_conv_onnx

from edgeseg.pipeline import build_steps
from edgeseg.pipeline.bench import BENCH_FILE, bench_key
from edgeseg.pipeline.build import BuildOptions
from edgeseg.pipeline.step_cache import StepRunner
from edgeseg.spec import InputSpec

SPEC = InputSpec(32, 32)


def _bench(out: Path, options: BuildOptions) -> bool:
    """Run the build's bench step on model.onnx; True when it was skipped (cached)."""
    done: dict[str, bool] = {}
    build_steps.run_bench_step(StepRunner(out, log=lambda _: None), out / "model.onnx", options, out, done,
                               torch_weights=options.weights)
    return done["bench"]


def test_bench_step_reruns_when_another_timed_file_changes(tmp_path: Path) -> None:
    out = tmp_path / "build"
    save_conv_onnx(out / "model.onnx", spec=SPEC, kernel=3, relu=True)
    shutil.copy(out / "model.onnx", out / "model.int8.ort.onnx")  # timed beside the FP32 candidate
    options = BuildOptions(threads=1, bench_iterations=2)
    assert _bench(out, options) is False
    first = json.loads((out / BENCH_FILE).read_text())
    assert [r["name"] for r in first["runners"]] == ["ort-fp32", "ort-int8"]
    assert _bench(out, options) is True  # nothing changed: cached

    save_conv_onnx(out / "model.int8.ort.onnx", spec=SPEC, kernel=1)  # the other timed file, not the candidate
    assert _bench(out, options) is False  # stale before: the key ignored it
    assert _bench(out, options) is True

    (out / "model.int8.ort.onnx").unlink()  # one runner fewer
    assert _bench(out, options) is False
    assert [r["name"] for r in json.loads((out / BENCH_FILE).read_text())["runners"]] == ["ort-fp32"]


def test_bench_key_covers_what_is_timed(tmp_path: Path) -> None:
    out = tmp_path / "build"
    save_conv_onnx(out / "model.onnx", spec=SPEC)
    base = bench_key(artifacts=out, threads=2, iterations=5, warmup=1)
    assert base == bench_key(artifacts=out, threads=2, iterations=5, warmup=1)
    (out / "model.engine").write_bytes(b"ENGINE")
    assert bench_key(artifacts=out, threads=2, iterations=5, warmup=1) != base  # the engine is timed too
    (out / "model.engine").unlink()
    for changed in ({"threads": 3}, {"iterations": 6}, {"warmup": 2}):
        assert bench_key(**{"artifacts": out, "threads": 2, "iterations": 5, "warmup": 1, **changed}) != base
    other = save_conv_onnx(tmp_path / "other.onnx", spec=SPEC)
    assert bench_key(artifacts=out, onnx_files=[other], threads=2, iterations=5, warmup=1) != base
