"""Latency of every backend and precision of a build, side by side (layer 4; torch lazily).

All runners get the same inputs and the same thread count, and are timed interleaved
(iteration i of every runner before iteration i+1 of any), so slow drifts of a shared
machine (other processes, thermal throttling) hit every runner alike and the ratios
between them stay meaningful even where absolute numbers are noisy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import DependencyError, EdgesegError, UsageError
from ..fileio import atomic_write_json, sha256_file
from ..machine import machine_info, usable_cores
from ..manifest import MANIFEST_FILE
from ..reference import preprocess_frames, synthetic_frames
from ..report.latency_notes import BUSY_LOAD_PER_CORE, latency_notes, noise_reasons
from ..report.plots import latency_plot
from ..runtime.backend import backend_info
from ..runtime.latency import LatencySummary
from ..runtime.torch_backend import TorchBackend
from .artifacts import candidate_input_spec, discover_artifacts, load_manifest, open_backend
from .step_cache import known_fields

BENCH_FILE = "bench.json"
PLOT_FILE = "bench_latency.png"
BASELINES = ("pytorch-fp32", "ort-fp32")  # ratios in the table are relative to these
BASELINE_LABELS = {"pytorch-fp32": "PyTorch eager", "ort-fp32": "ORT FP32"}
INPUT_SAMPLES = 4
LEGEND = ("latency per frame in ms (p50/p90/p99: median/90th/99th percentile); latency ratio = this runner's "
          "p50 / the baseline's p50 (below 1: faster than the baseline)")


@dataclass
class Runner:
    """One thing to time: ``infer(x)`` on a 1x3xHxW float32 input."""

    name: str  # e.g. "ort-int8"
    backend: str  # torch | onnxruntime | tensorrt
    precision: str  # fp32 | fp16 | int8
    infer: Callable[[np.ndarray], Any]
    close: Callable[[], None] = lambda: None
    source: str = ""  # the file (or model) it runs
    note: str = ""
    input_shape: tuple[int, ...] | None = None
    flush_denormal: bool | None = None  # PyTorch eager: whether denormal floats were flushed while timed


@dataclass
class RunnerStats:
    name: str
    backend: str
    precision: str
    source: str
    note: str
    samples_ms: list[float]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    throughput_fps: float
    flush_denormal: bool | None = None

    @classmethod
    def from_samples(cls, runner: Runner, samples_ms: Sequence[float]) -> RunnerStats:
        values = np.asarray(samples_ms, dtype=np.float64)
        p50, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
        mean = float(values.mean())
        return cls(runner.name, runner.backend, runner.precision, runner.source, runner.note,
                   [float(v) for v in values], p50, p90, p99, mean, float(values.std()), float(values.min()),
                   float(values.max()), 1000.0 / mean if mean > 0 else float("inf"), runner.flush_denormal)


@dataclass
class SourceTiming:
    """bench --source's capture-to-mask figures over a source (pipeline/source_bench.py): what was timed and
    how (``backend``, ``model_file``, the build's verdict) and the latency figures. bench.json's
    ``source_latency``, in the shape it had (``source`` an object, the figures flat), only through
    to_dict/from_dict."""

    text: str  # the source as given
    kind: str
    topic: str | None
    opened_with: str  # how OpenCV opened it ("" when it did not)
    backend: str
    model_file: str
    precision: str
    build_verdict: str
    warning: str | None
    warmup_calls: int
    ended_because: str
    latency: LatencySummary

    def to_dict(self) -> dict[str, Any]:
        return {"source": {"text": self.text, "kind": self.kind, "topic": self.topic,
                           "opened_with": self.opened_with},
                "backend": self.backend, "model_file": self.model_file, "precision": self.precision,
                "build_verdict": self.build_verdict, "warning": self.warning, "warmup_calls": self.warmup_calls,
                "ended_because": self.ended_because, **self.latency.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> SourceTiming:
        source = data["source"]
        return cls(text=str(source["text"]), kind=str(source["kind"]), topic=source.get("topic"),
                   opened_with=str(source.get("opened_with") or ""), backend=str(data["backend"]),
                   model_file=str(data["model_file"]), precision=str(data["precision"]),
                   build_verdict=str(data["build_verdict"]), warning=data.get("warning"),
                   warmup_calls=int(data["warmup_calls"]), ended_because=str(data["ended_because"]),
                   latency=LatencySummary(**known_fields(LatencySummary, data)))


@dataclass
class BenchResult:
    runners: list[RunnerStats]
    iterations: int
    warmup: int
    input_shape: list[int]
    order: str = "interleaved"
    threads: int | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    load_average: dict[str, Any] = field(default_factory=dict)  # 1-minute load at start/end of the timing
    plot_note: str = ""  # why there is no latency plot (matplotlib missing), else empty
    source_latency: SourceTiming | None = None  # bench --source: capture-to-mask (pipeline/source_bench.py)

    def ratios(self) -> dict[str, dict[str, float | None]]:
        """p50 of each runner divided by each baseline's p50 (< 1 = faster than the baseline)."""
        p50 = {r.name: r.p50_ms for r in self.runners}
        return {r.name: {f"vs_{b}": (r.p50_ms / p50[b] if b in p50 and p50[b] > 0 else None) for b in BASELINES}
                for r in self.runners}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["source_latency"] = self.source_latency.to_dict() if self.source_latency is not None else None
        data["ratios"] = self.ratios()
        data["noisy"] = bool(noise_reasons(data))
        data["notes"] = latency_notes(data)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> BenchResult:
        """The inverse of ``to_dict`` (bench.json, the build's step cache): what it derives (ratios, noisy, notes)
        is computed again, not read."""
        values = known_fields(cls, data)
        values["runners"] = [RunnerStats(**known_fields(RunnerStats, r)) for r in data["runners"]]
        values["input_shape"] = list(values["input_shape"])
        if values.get("source_latency") is not None:
            values["source_latency"] = SourceTiming.from_dict(values["source_latency"])
        return cls(**values)

    def notes(self) -> list[str]:
        return list(self.to_dict()["notes"])  # to_dict computes them

    def table(self) -> list[str]:
        ratio_heads = [f"latency ratio vs {BASELINE_LABELS[b]}" for b in BASELINES]
        header = f"{'runner':<16} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'frames/s':>9}" + \
            "".join(f"  {h:>30}" for h in ratio_heads)
        lines = [header, "-" * len(header)]
        ratios = self.ratios()
        for r in self.runners:
            cells = "".join(f"  {_ratio_text(ratios[r.name][f'vs_{b}']):>30}" for b in BASELINES)
            lines.append(f"{r.name:<16} {r.p50_ms:>9.2f} {r.p90_ms:>9.2f} {r.p99_ms:>9.2f} {r.mean_ms:>9.2f} "
                         f"{r.throughput_fps:>9.1f}{cells}")
        for skip in self.skipped:
            lines.append(f"{skip['name']:<16} skipped: {skip['reason']}")
        return lines + ["", LEGEND]


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


# -- the load around a run (what the figures mean: report/latency_notes.py) ------------------------
def load_average() -> float | None:
    """The 1-minute load average, or None where the system has none (Windows)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _load_record(start: float | None, end: float | None) -> dict[str, Any]:
    cores = usable_cores()
    return {"start": start, "end": end, "usable_cores": cores, "busy_above": BUSY_LOAD_PER_CORE * cores}


def benchmark(runners: Sequence[Runner], inputs: Sequence[np.ndarray] | np.ndarray, iterations: int = 50,
              warmup: int = 10, *, progress: Callable[..., Iterable[Any]] | None = None) -> BenchResult:
    """Time every runner on the same inputs, interleaved; ``inputs`` are 1x3xHxW float32 arrays."""
    if iterations < 1 or warmup < 0:
        raise UsageError("--iterations must be >= 1 and --warmup >= 0", found=f"{iterations}, {warmup}")
    if not runners:
        raise UsageError("nothing to benchmark", fix="pass --artifacts engines/NAME or --onnx FILE")
    batch = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
    if not batch:
        raise UsageError("no inputs to benchmark with")
    for runner in runners:
        for i in range(warmup):
            runner.infer(batch[i % len(batch)])
    load_start = load_average()
    samples: dict[str, list[float]] = {r.name: [] for r in runners}
    steps = progress(range(iterations), label="benchmarking", length=iterations) if progress else range(iterations)
    for i in steps:
        x = batch[i % len(batch)]
        for runner in runners:
            start = time.perf_counter()
            runner.infer(x)
            samples[runner.name].append((time.perf_counter() - start) * 1000.0)
    return BenchResult([RunnerStats.from_samples(r, samples[r.name]) for r in runners], iterations, warmup,
                       list(batch[0].shape), load_average=_load_record(load_start, load_average()))


def time_side_by_side(runners: Sequence[Runner], *, iterations: int, warmup: int) -> BenchResult:
    """``runners`` timed interleaved on one seeded random input, then closed (--precision best's candidates,
    the fallback's latency cost)."""
    try:
        x = np.random.default_rng(0).standard_normal(runners[0].input_shape or ()).astype(np.float32)
        return benchmark(runners, [x], iterations=iterations, warmup=warmup)
    finally:
        for runner in runners:
            runner.close()


# -- building runners from a build folder or ONNX files ------------------------------------------
@dataclass
class BenchPlan:
    runners: list[Runner]
    skipped: list[dict[str, str]]
    inputs: list[np.ndarray]
    threads: int
    out_dir: Path


def ort_runner(path: Path, name: str, precision: str, threads: int) -> Runner:
    backend = open_backend(path, threads=threads)
    return Runner(name, "onnxruntime", precision, backend.infer, backend.close, str(path),
                  input_shape=tuple(backend.input_shape))


def backend_runner(path: Path, name: str, precision: str, threads: int, backend: str = "onnxruntime",
                   **options: Any) -> Runner:
    """A runner on any registered backend that runs files (runtime/backend.py); ``options`` go to its factory."""
    if backend == "onnxruntime" and not options:
        return ort_runner(path, name, precision, threads)
    opened = open_backend(path, threads=threads, backend=backend, **options)
    return Runner(name, backend, precision, opened.infer, opened.close, str(path),
                  input_shape=tuple(opened.input_shape))


def registry_runners(found: dict[str, Path], backends: Sequence[str], threads: int
                     ) -> tuple[list[Runner], list[dict[str, str]]]:
    """Runners for the build folder's files on each of ``backends`` beyond ONNX Runtime and TensorRT (which
    plan_bench times anyway): every ``--precision best`` candidate of that backend whose file is present."""
    runners: list[Runner] = []
    skipped: list[dict[str, str]] = []
    for name in dict.fromkeys(backends):
        if name in ("onnxruntime", "tensorrt", "torch"):
            continue
        info = backend_info(name)
        if not info.available():
            skipped.append({"name": name, "reason": f"{info.requires or name} is not installed here "
                                                    f"({info.install_command()})"})
            continue
        for candidate in info.best_candidates():
            label = f"{name}-{candidate.precision}"
            if candidate.role not in found:
                skipped.append({"name": label, "reason": f"no {candidate.role} artifact"})
                continue
            try:
                runners.append(backend_runner(found[candidate.role], label, candidate.precision, threads, name,
                                              **candidate.options))
            except EdgesegError as exc:
                skipped.append({"name": label, "reason": exc.problem})
    return runners, skipped


def _precision_of(path: Path) -> str:
    return "int8" if "int8" in path.name.lower() else ("fp16" if "fp16" in path.name.lower() else "fp32")


# the build folder's roles plan_bench times with ONNX Runtime (role, runner name, precision); the engine besides
ORT_RUNNERS = (("onnx", "ort-fp32", "fp32"), ("onnx_int8_cpu", "ort-int8", "int8"))
# + the Q/DQ files on OpenVINO (its own model.int8.ov.onnx; TensorRT's as before)
TIMED_ROLES = tuple(role for role, _, _ in ORT_RUNNERS) + ("engine", "onnx_int8_trt", "onnx_int8_ov")


def bench_key(*, artifacts: str | os.PathLike[str] | None = None, onnx_files: Sequence[str | os.PathLike[str]] = (),
              model: str | None = None, weights: str | os.PathLike[str] | None = None, threads: int | None = None,
              iterations: int = 50, warmup: int = 10, backends: Sequence[str] = ()) -> dict[str, Any]:
    """Everything a ``plan_bench`` + ``run_bench`` with these arguments times and how: the hash of every file
    it would open (the build folder's timed roles, the --onnx files, the weights, the manifest that names the
    engine's runner), the model, the resolved thread count, iterations and warmup. The build's bench step key:
    a cached bench.json is reused only when none of these changed."""
    files: dict[str, str | None] = {}
    if artifacts is not None and Path(artifacts).is_dir():
        found = discover_artifacts(artifacts, load_manifest(artifacts))
        files = {role: sha256_file(found[role]) if role in found else None for role in TIMED_ROLES}
        manifest = Path(artifacts) / MANIFEST_FILE
        files["manifest"] = sha256_file(manifest) if manifest.is_file() else None
    return {"artifacts": files, "onnx_files": [[Path(f).name, sha256_file(f)] for f in onnx_files],
            "model": model, "weights": sha256_file(weights) if weights is not None else None,
            "threads": threads or usable_cores(), "iterations": iterations, "warmup": warmup, "version": __version__,
            **({"backends": sorted(set(backends))} if backends else {})}


def plan_bench(*, artifacts: str | os.PathLike[str] | None = None, onnx_files: Sequence[str | os.PathLike[str]] = (),
               model: str | None = None, weights: str | os.PathLike[str] | None = None, threads: int | None = None,
               out_dir: str | os.PathLike[str] | None = None, backends: Sequence[str] = ()) -> BenchPlan:
    """Open every runner that can run here; list the others with the reason they were skipped. ``backends``:
    also time the folder's files on these registered backends (runtime/backend.py; the build's own backend,
    e.g. openvino, always)."""
    if artifacts is None and not onnx_files:
        raise UsageError("nothing to benchmark", expected="--artifacts engines/NAME or --onnx FILE [--onnx FILE2]")
    if threads is not None and threads < 1:
        raise UsageError("--threads must be at least 1", found=str(threads))
    threads = threads or usable_cores()
    runners: list[Runner] = []
    skipped: list[dict[str, str]] = []
    spec = None
    found: dict[str, Path] = {}
    manifest = None
    if artifacts is not None:
        manifest = load_manifest(artifacts)
        found = discover_artifacts(artifacts, manifest)
        spec = manifest.input_spec if manifest else None
        for role, name, precision in ORT_RUNNERS:
            if role in found:
                runners.append(ort_runner(found[role], name, precision, threads))
            else:
                skipped.append({"name": name, "reason": f"no {role} artifact in {artifacts}"})
        if "engine" in found:
            try:
                session = open_backend(found["engine"])
                runners.append(Runner(f"tensorrt-{manifest.precision if manifest else 'engine'}", "tensorrt",
                                      manifest.precision if manifest else "unknown", session.infer, session.close,
                                      str(found["engine"]), input_shape=tuple(session.input_shape)))
            except EdgesegError as exc:
                skipped.append({"name": "tensorrt", "reason": exc.problem})
        else:
            skipped.append({"name": "tensorrt", "reason": f"no model.engine in {artifacts}"})
        more, missing = registry_runners(found, [*backends, *([manifest.backend] if manifest else [])], threads)
        runners += more
        skipped += missing
    names = {r.name for r in runners}
    for file in onnx_files:
        path = Path(file)
        precision = _precision_of(path)
        name = f"ort-{precision}" if f"ort-{precision}" not in names else f"ort:{path.name}"
        runners.append(ort_runner(path, name, precision, threads))
        names.add(name)
        if spec is None:
            spec = candidate_input_spec(path)[0]
    inputs = _inputs(spec, runners)
    torch_runner, reason = _torch_runner(model, weights, threads, manifest, tuple(inputs[0].shape))
    if torch_runner is not None:
        runners.insert(0, torch_runner)
    else:
        skipped.insert(0, {"name": "pytorch-fp32", "reason": reason})
    default_out = Path(artifacts) if artifacts is not None else Path(onnx_files[0]).parent
    return BenchPlan(runners, skipped, inputs, threads, Path(out_dir) if out_dir is not None else default_out)


def _torch_runner(model: str | None, weights: str | os.PathLike[str] | None, threads: int,
                  manifest: Any, input_shape: tuple[int, ...]) -> tuple[Runner | None, str]:
    """PyTorch eager: the runtime's TorchBackend (the one torch runner), timed with denormals flushed."""
    if model is None and weights is None:
        return None, "pass --model NAME --weights F to include PyTorch eager"
    try:
        import torch
    except ImportError as exc:
        return None, f"torch cannot be imported ({exc})"

    torch.set_num_threads(threads)
    num_classes = manifest.num_classes if manifest is not None else None
    note = ""
    if weights is not None:
        from ..models import model_from_weights

        # plain weights take the build's class count; a checkpoint knows its own
        module, _ = model_from_weights(weights, model=model, default_num_classes=num_classes)
    else:
        from ..models import create_model

        module = create_model(str(model), num_classes=num_classes or 19).eval()
        note = "random weights (latency only)"
    previous = flush_denormal_enabled(torch)
    flushes = bool(torch.set_flush_denormal(True))  # False: this CPU cannot flush
    try:
        backend = TorchBackend(module, input_shape, device="cpu")  # its shape probe runs flushed too
    finally:
        torch.set_flush_denormal(previous)

    def infer(x: np.ndarray) -> Any:
        # denormals only while PyTorch runs: the other backends are timed as they would run anyway
        torch.set_flush_denormal(True)
        try:
            return backend.infer(x)
        finally:
            torch.set_flush_denormal(previous)

    return Runner("pytorch-fp32", "torch", "fp32", infer, backend.close, source=str(weights or model), note=note,
                  input_shape=backend.input_shape, flush_denormal=flushes), ""


def flush_denormal_enabled(torch: Any) -> bool:
    """Whether this thread flushes denormal floats: torch has no getter, but a flushed denormal x 1 is 0."""
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    return bool((tiny * 1.0).item() == 0.0)


def _inputs(spec: Any, runners: Sequence[Runner]) -> list[np.ndarray]:
    """Realistic inputs: preprocessed synthetic frames when the spec is known, else seeded noise."""
    if spec is not None:
        frames = synthetic_frames(INPUT_SAMPLES, spec.height, spec.width, seed=0)
        return [x[None] for x in preprocess_frames(frames, spec)]
    shape = next((r.input_shape for r in runners if r.input_shape), None)
    if shape is None:
        raise UsageError("cannot tell the input size to benchmark with",
                         fix="benchmark an exported model (its ONNX metadata holds the input spec)")
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(INPUT_SAMPLES)]


def run_bench(plan: BenchPlan, *, iterations: int = 50, warmup: int = 10, plot: bool = True,
              progress: Callable[..., Iterable[Any]] | None = None,
              source_latency: SourceTiming | None = None) -> tuple[BenchResult, list[Path]]:
    """Time the plan's runners, write bench.json (and the latency plot) into ``plan.out_dir``, with
    ``source_latency`` (bench --source) when given."""
    try:
        result = benchmark(plan.runners, plan.inputs, iterations, warmup, progress=progress)
    finally:
        for runner in plan.runners:
            runner.close()
    result.threads = plan.threads
    result.skipped = list(plan.skipped)
    result.machine = machine_info()
    result.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result.source_latency = source_latency
    written = [atomic_write_json(plan.out_dir / BENCH_FILE, result.to_dict())]
    if plot:
        try:
            written.append(latency_plot(plan.out_dir / PLOT_FILE, {r.name: r.samples_ms for r in result.runners},
                                        title=f"Latency per frame, {result.threads} threads, "
                                              f"input {'x'.join(map(str, result.input_shape))}"))
        except DependencyError as exc:  # the robot install has no matplotlib: the numbers matter, not the plot
            result.plot_note = f"no latency plot: matplotlib is not installed ({exc.fix})"
    return result, written
