"""The steps of ``edgeseg build`` (layer 4): each takes the last artifact and returns the next.

Kept apart from ``build.py`` (options and order) so each step reads on its own. Every
step runs through ``StepRunner`` and records whether it was skipped in ``done``.
"""

from __future__ import annotations

import json
import shlex
import shutil
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..data.datasets import DatasetSpec, dataset_classes
from ..engine.config import BuildConfig
from ..engine.trt_builder import build_engine
from ..errors import ArtifactError, ConfigError, UsageError
from ..fileio import atomic_open, atomic_write_bytes, sha256_file, sha256_files
from ..manifest import (
    PARITY_KEYS,
    AccuracySummary,
    CalibrationSummary,
    LatencySummary,
    Manifest,
    RunnerLatency,
    validation_verdict,
)
from ..onnx_model import class_colors_from_metadata, read_onnx_model
from ..palette import stored_colours
from ..quant.lint import check_qdq
from ..reference import REFERENCE_FILE, load_reference
from ..runtime.backend import best_candidates
from ..spec import InputSpec
from .artifacts import discover_artifacts
from .bench import BenchResult, bench_key, plan_bench, run_bench
from .options import BuildOptions
from .step_cache import StepRunner
from .validate import ValidationResult, validate_candidate
from .validation_data import data_samples

if typing.TYPE_CHECKING:  # best imports build_steps: a type only
    from .best import SelectionResult

# typing's generics, not collections.abc's: these aliases are evaluated at import, and Python 3.8 runs them
Log = typing.Callable[[str], None]
# progress(label) -> (on_progress(done, total), close): the CLI's commands._common.progress_callback
Progress = typing.Callable[[str], typing.Tuple[typing.Callable[[int, int], None], typing.Callable[[], None]]]


def _counted(progress: Progress) -> Callable[..., Any]:
    """``progress`` as the ``progress(items, label=, length=)`` wrapper that validate_candidate takes."""

    def wrap(items: Any, *, label: str, length: int | None = None) -> Any:
        on_progress, close = progress(label)
        total = length if length is not None else len(items)
        try:
            for count, item in enumerate(items, 1):
                yield item
                on_progress(count, total)
        finally:
            close()

    return wrap


def backend_notice(backend: str, precision: str, out: Path) -> str:
    """``backend``: the one the build targets, "auto" when it was not named and is a CPU one."""
    if backend == "tensorrt":
        return f"building a TensorRT {precision} engine"
    if backend not in ("auto", "onnxruntime") and precision != "best":  # another CPU runtime named, e.g. openvino
        run = "model.int8.onnx (Q/DQ)" if precision == "int8" else "model.onnx"
        return (f"TensorRT is not installed here: {run} is validated on {backend}. On the Jetson run: "
                f"edgeseg build --onnx {shlex.quote(str(out / 'model.int8.onnx'))} --backend tensorrt")
    if precision == "int8":
        return ("TensorRT is not installed here: building the ONNX Runtime INT8 model instead. On the Jetson run: "
                f"edgeseg build --onnx {shlex.quote(str(out / 'model.int8.onnx'))} --backend tensorrt")
    if precision == "best":
        runtimes = sorted({c.backend for c in best_candidates() if c.backend != "tensorrt"} - {"onnxruntime"})
        what = "ONNX Runtime FP32 and INT8 are both" if not runtimes or backend != "auto" else \
            f"ONNX Runtime FP32 and INT8 and {', '.join(runtimes)}'s candidates are all"
        return (f"TensorRT is not installed here: {what} validated and timed, and the "
                "fastest that passes the gates is kept. On the Jetson run: "
                f"edgeseg build --onnx {shlex.quote(str(out / 'model.int8.onnx'))} --backend tensorrt")
    return ("TensorRT is not installed here: the FP32 ONNX model runs with ONNX Runtime. On the Jetson run: "
            f"edgeseg build --onnx {shlex.quote(str(out / 'model.onnx'))} --precision {precision} --backend tensorrt")



# -- 1. export ---------------------------------------------------------------------------------
@dataclass
class ModelInfo:
    """The model a build exports: its name, classes, colours, constructor options and input spec."""

    model: str
    num_classes: int
    classes: list[str]
    model_options: dict[str, Any]  # the checkpoint's constructor options (create_model's keywords)
    class_colors: list[list[int]]  # the training data's colours ([]: the palette's)
    spec: InputSpec


@dataclass
class ExportRecord:
    """The export step's result (steps.json's summary, the shape it always had): the model exported and
    export_onnx's own record (``export``: ExportResult.to_dict(), the report's export section)."""

    model: str
    num_classes: int
    classes: list[str]
    input_spec: InputSpec
    export: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "num_classes": self.num_classes, "classes": list(self.classes),
                "input_spec": self.input_spec.to_dict(), "export": self.export}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportRecord:
        return cls(model=str(data["model"]), num_classes=int(data["num_classes"]),
                   classes=[str(c) for c in data["classes"]], input_spec=InputSpec.from_dict(data["input_spec"]),
                   export=dict(data["export"]))


def model_info(options: BuildOptions) -> ModelInfo:
    """Model name, classes and input spec from the checkpoint (or the options for plain/random weights)."""
    from ..models.checkpoint import PLAIN_DEFAULT_CLASSES, read_checkpoint_info

    weights = read_checkpoint_info(options.weights, model=options.model) if options.weights is not None else None
    if weights is not None and weights.full_checkpoint and weights.input_spec is not None:
        spec = weights.input_spec
        info = {"model": weights.model, "num_classes": weights.num_classes, "classes": list(weights.classes),
                "model_options": dict(weights.model_options),
                "class_colors": stored_colours(weights.extra.get("class_colors"), weights.num_classes)}
    else:
        if options.model is None:  # plain weights without --model failed above, naming the file
            raise UsageError("--model is required with plain weights or without weights",
                             fix="pass --model NAME (edgeseg models lists them)")
        spec = InputSpec(*(options.input_size or (512, 1024)))
        classes, colours = _val_classes(options.val)  # random or plain weights: the classes of the data to check
        info = {"model": options.model, "num_classes": len(classes) or PLAIN_DEFAULT_CLASSES, "classes": classes,
                "model_options": {}, "class_colors": [list(c) for c in colours]}
    if options.input_size is not None and options.input_size != spec.size:
        spec = InputSpec(**{**spec.to_dict(), "height": options.input_size[0], "width": options.input_size[1]})
    if options.demo and not info["class_colors"]:  # the shipped checkpoint has none: its description has them
        from .build import demo_defaults

        info["class_colors"] = stored_colours(demo_defaults().get("class_colors"), info["num_classes"])
    return ModelInfo(model=info["model"], num_classes=info["num_classes"], classes=info["classes"],
                     model_options=info["model_options"], class_colors=info["class_colors"], spec=spec)


def _val_classes(val: DatasetSpec | Path | None) -> tuple[list[str], list[tuple[int, int, int]]]:
    """The --val data's class names and colours ([] and []: none declared)."""
    return dataset_classes(val) if val is not None else ([], [])


def export_or_take(runner: StepRunner, options: BuildOptions, out: Path, done: dict[str, bool],
                   log: Log) -> tuple[Path, ExportRecord | None]:
    """model.onnx + reference.npz in ``out`` (exported, or the given --onnx with its reference)."""
    if options.onnx is not None:
        _take_reference(Path(options.onnx), out, log)
        return _copy_in(Path(options.onnx), out, log), None
    info = model_info(options)
    spec = info.spec
    from .build_data import reference_samples

    images, masks, source = reference_samples(options, spec, info.num_classes, out, log)
    key = {"weights": sha256_file(options.weights) if options.weights else "random", "model": options.model,
           "size": spec.size, "samples": sha256_files(images + masks), "colours": info.class_colors,
           "version": __version__}
    outcome = runner.run("export", key, [out / "model.onnx", out / REFERENCE_FILE],
                         lambda: _export(options, info, images, masks, source, out, log), result_type=ExportRecord)
    done["export"] = outcome.skipped
    return out / "model.onnx", outcome.result


def _take_reference(onnx: Path, out: Path, log: Log) -> None:
    beside = onnx.resolve().parent / REFERENCE_FILE
    if beside.is_file() and _copy_in(beside, out, log) != beside:
        log(f"reference: {beside} (PyTorch's verdict on its frames) copied into {out}")


def _copy_in(path: Path, out: Path, log: Log) -> Path:
    """``path`` inside the build folder (copied atomically when it lives elsewhere): the robot gets one folder."""
    target = out / path.name
    if path.resolve() == target.resolve():
        return path

    with open(path, "rb") as source, atomic_open(target, "wb") as handle:
        shutil.copyfileobj(source, handle)
    if path.suffix == ".onnx":
        log(f"{path} copied into {out}")
    return target


def _export(options: BuildOptions, info: ModelInfo, images: list[Path], masks: list[Path], source: str,
            out: Path, log: Log) -> ExportRecord:
    from ..export.onnx_export import export_onnx
    from ..models import create_model, model_from_weights

    if options.weights is None:
        import torch

        torch.manual_seed(0)  # random weights, but the same ones on every run: builds stay reproducible
        model = create_model(info.model, num_classes=info.num_classes, **info.model_options)
        log("warning: no --weights: random weights, accuracy numbers are meaningless")
    else:  # the checkpoint's own model options build the model it was trained as
        model, _ = model_from_weights(options.weights, model=info.model, num_classes=info.num_classes)
    result = export_onnx(model, export_config(info, images, masks, source), out, log=log)
    return export_record(info, result)


def export_config(info: ModelInfo, images: list[Path], masks: list[Path], source: str):  # -> ExportConfig
    """The export's config for ``info`` with the reference frames (a QAT export takes the same)."""
    from ..export.onnx_export import ExportConfig

    return ExportConfig(model=info.model, num_classes=info.num_classes, input_spec=info.spec, classes=info.classes,
                        class_colors=info.class_colors, sample_images=images, sample_masks=masks,
                        samples_source=source)


def export_record(info: ModelInfo, result: Any) -> ExportRecord:
    """The export step's record of ``result`` (an export.onnx_export.ExportResult)."""
    return ExportRecord(model=info.model, num_classes=info.num_classes, classes=list(info.classes),
                        input_spec=info.spec, export=result.to_dict())


def onnx_facts(path: Path) -> tuple[InputSpec, dict[str, str], bool]:
    """(input spec, edgeseg metadata, has Q/DQ) of an ONNX model."""
    info = read_onnx_model(path, need_graph=True, purpose="building from an ONNX model")
    spec = info.input_spec
    if spec is None:
        raise ConfigError(f"{path} has no edgeseg input spec in its metadata",
                          fix="export it with edgeseg export (the spec fixes the preprocessing)")
    return spec, info.metadata, bool(info.has_qdq)


# -- 2. calibrate --------------------------------------------------------------------------------
# -- 3. engine -------------------------------------------------------------------------------------
ENGINE_FIELDS = ("tensorrt_version", "gpu_name", "compute_capability", "io_tensors", "build")


@dataclass
class EngineRecord:
    """The engine step's result: the ONNX file model.engine was built from, its precision, and what the manifest
    records of the engine (TensorRT version, GPU, I/O tensors, build flags: ``ENGINE_FIELDS``). JSON (steps.json's
    summary, the shape it always had: ``{source, precision, engine: {...}}``) only through to_dict/from_dict."""

    source: str
    precision: str
    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    io_tensors: list[dict[str, Any]] = field(default_factory=list)  # the engine manifest's I/O rows
    build: dict[str, Any] = field(default_factory=dict)  # the engine manifest's build flags

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "precision": self.precision,
                "engine": {k: getattr(self, k) for k in ENGINE_FIELDS}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineRecord:
        engine = data["engine"]
        return cls(source=str(data["source"]), precision=str(data["precision"]),
                   **{k: engine[k] for k in ENGINE_FIELDS if k in engine})


def engine_config(options: BuildOptions, out: Path) -> BuildConfig:
    """The engine config of this build (one config for the build and its step key: they cannot drift apart)."""
    return BuildConfig(precision=options.precision, timing_cache=out / "timing.cache",
                       high_precision=options.high_precision)


def build_trt(runner: StepRunner, source: Path, spec: InputSpec, options: BuildOptions, out: Path,
              done: dict[str, bool]) -> tuple[Path, EngineRecord]:
    """model.engine, and what the manifest records of it (TensorRT version, GPU, I/O tensors, flags)."""
    config = engine_config(options, out)

    def build() -> EngineRecord:
        engine_bytes, engine_manifest = build_engine(source, config, input_spec=spec, check_qdq=check_qdq)
        atomic_write_bytes(out / "model.engine", bytes(engine_bytes))
        recorded = engine_manifest.to_dict()
        return EngineRecord(source=source.name, precision=config.precision,
                            **{k: recorded[k] for k in ENGINE_FIELDS})

    key = {"onnx": sha256_file(source), **config.cache_key(), "version": __version__}
    outcome = runner.run("engine", key, [out / "model.engine"], build, result_type=EngineRecord)
    done["engine"] = outcome.skipped
    return out / "model.engine", outcome.result


# -- 4. validate, 5. latency -------------------------------------------------------------------------
def run_validation_step(runner: StepRunner, candidate: Path, options: BuildOptions, out: Path, done: dict[str, bool],
             log: Log, progress: Progress | None, backend: str = "auto",
             backend_options: dict[str, Any] | None = None) -> tuple[ValidationResult | None, str]:
    """The candidate against reference.npz (the robot's check) on ``backend`` (auto: by its suffix) with
    ``backend_options`` (OpenVINO's inference precision); (None, why) when there is no reference."""
    reference = out / REFERENCE_FILE
    if not reference.is_file():
        why = (f"no {REFERENCE_FILE} beside {options.onnx} (edgeseg export writes it)" if options.onnx
               else f"no {REFERENCE_FILE}")
        log(f"warning: not validated: {why}")
        return None, why
    val_dir = options.val if options.onnx is not None else None  # else ground truth travels in reference.npz
    val_files: list[Path] = []
    if val_dir is not None:  # the files validate_candidate scores (DIR/val when there is one), listed, not read
        val_files = sorted(set(data_samples(val_dir, None, _reference_classes(reference)).files))
    config = options.validation_config()
    key = {"candidate": sha256_file(candidate), "reference": sha256_file(reference),
           "val": [str(val_dir), sha256_files(val_files)] if val_dir else None,
           "config": config.cache_key(), "version": __version__,  # the config it runs with: no drift
           **({"backend": [backend, backend_options or {}]} if backend not in ("auto", "onnxruntime") else {})}

    def run() -> ValidationResult:
        result = validate_candidate(candidate, reference, data_dir=val_dir, config=config, out_dir=out,
                                    raise_on_failure=False, progress=_counted(progress) if progress else None,
                                    backend=backend, backend_options=backend_options)
        return result

    outcome = runner.run("validate", key, [out / "validation.json"], run, result_type=ValidationResult)
    done["validate"] = outcome.skipped
    return outcome.result, ""


def _reference_classes(reference: Path) -> int:
    return load_reference(reference).num_classes


BUILD_BENCH_WARMUP = 3  # untimed runs per runner before the build's timing


def run_bench_step(runner: StepRunner, candidate: Path, options: BuildOptions, out: Path, done: dict[str, bool],
          progress: Progress | None = None, backends: list[str] | None = None, *,
          torch_weights: Path | None) -> BenchResult | None:
    """bench.json; PyTorch eager runs ``torch_weights`` (--weights; a QAT build: its float checkpoint; None: no
    PyTorch row)."""
    standard = candidate.name in ("model.onnx", "model.int8.ort.onnx", "model.engine") or bool(backends)
    # one set of arguments for the plan and the key: the key covers every file the plan times
    planned: dict[str, Any] = {"artifacts": out, "onnx_files": [] if standard else [candidate], "model": None,
                               "weights": torch_weights,
                               "threads": options.threads}
    key = {**bench_key(**planned, iterations=options.bench_iterations, warmup=BUILD_BENCH_WARMUP,
                       backends=backends or ()), "candidate": sha256_file(candidate)}

    def run() -> BenchResult:
        plan = plan_bench(**planned, backends=backends or ())
        result, _ = run_bench(plan, iterations=options.bench_iterations, warmup=BUILD_BENCH_WARMUP,
                              progress=_counted(progress) if progress else None)
        return result

    outcome = runner.run("bench", key, [out / "bench.json"], run, result_type=BenchResult)
    done["bench"] = outcome.skipped
    return outcome.result


# -- 6. the manifest -----------------------------------------------------------------------------------
def assemble_manifest(meta: dict[str, str], spec: InputSpec, options: BuildOptions, backend: str, out: Path,
                      candidate: Path, calibration: CalibrationSummary | None, engine: EngineRecord | None,
                      validation: ValidationResult | None, why: str, bench: BenchResult | None,
                      selection: SelectionResult | None = None) -> Manifest:
    """The manifest of this run: its files with their hashes, its verdict, its measurements. ``engine``: the
    engine step's record (TensorRT); ``selection``: what a --precision best build kept (the manifest's ``build``
    section: ``selection`` and ``runtime``)."""
    classes = json.loads(meta.get("classes", "[]") or "[]")
    colours = class_colors_from_metadata(meta)
    present = discover_artifacts(out)
    if candidate.resolve().parent != out.resolve():  # --onnx elsewhere: the robot needs it in the folder
        raise ArtifactError("the candidate is outside the build folder", found=str(candidate),
                            fix=f"build with --out {candidate.parent}")
    artifacts = {role: path.name for role, path in present.items()}
    hashes = {role: sha256_file(path) for role, path in present.items()}
    if options.weights is not None:
        hashes["weights"] = sha256_file(options.weights)
    role = next((r for r, name in artifacts.items() if name == candidate.name), None)
    # --precision best on the CPU kept one file: the manifest says what that file is (and build.selection why)
    precision = selection.precision if selection is not None and selection.precision else options.precision
    manifest = Manifest(
        model=meta.get("model", "unknown"), num_classes=int(meta.get("num_classes", len(classes) or 1)),
        input_spec=spec, classes=classes, class_colors=colours, precision=precision, backend=backend,
        artifacts=artifacts,
        hashes=hashes, calibration=calibration,
        validation=validation_verdict(role=role, candidate_file=candidate.name,
                                      candidate_sha256=hashes[role] if role else sha256_file(candidate),
                                      gates=validation.gates if validation is not None else None,
                                      reference=REFERENCE_FILE,
                                      reference_kind=validation.reference_kind if validation is not None else None,
                                      why=why),
        accuracy=_accuracy_summary(validation), latency=_latency_summary(bench))
    if engine is not None:
        for key in ENGINE_FIELDS:
            setattr(manifest, key, getattr(engine, key))
    if selection is not None:
        manifest.build = {"selection": selection.manifest_record(), "runtime": selection.runtime_record()}
    return manifest


def _accuracy_summary(validation: ValidationResult | None) -> AccuracySummary | None:
    """The manifest's ``accuracy`` section, from this run's validation."""
    if validation is None:
        return None
    parity, truth = validation.parity, validation.ground_truth or {}
    return AccuracySummary(gates_passed=validation.passed, **{k: parity[k] for k in PARITY_KEYS if k in parity},
                           ground_truth={k: v for k, v in truth.items() if isinstance(v, (int, float))})


def _latency_summary(bench: BenchResult | None) -> LatencySummary | None:
    """The manifest's ``latency`` section, from this run's bench."""
    if bench is None:
        return None
    return LatencySummary(runners={r.name: RunnerLatency(p50_ms=r.p50_ms, p90_ms=r.p90_ms, p99_ms=r.p99_ms,
                                                         mean_ms=r.mean_ms) for r in bench.runners},
                          threads=bench.threads)
