"""``edgeseg build``: export -> calibrate -> build -> validate -> latency -> report (layer 4).

Each step is skipped when its inputs (hashed) are unchanged (``steps.StepRunner``);
``force`` redoes all. Every artifact is written atomically by the module that makes it,
and manifest.json is written after the files it names, so an interrupted build never
leaves a folder a robot would load as complete. torch is imported only to export.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import AccuracyError, ConfigError, UsageError
from .io import atomic_write_json, read_json, remove_stale_temp_files, sha256_file, sha256_files
from .spec import InputSpec, Manifest
from .steps import StepRunner

PRECISIONS = ("fp32", "fp16", "int8", "best")
ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_INFO = ASSETS / "demo_model.json"
# Synthetic seeds: 0 trains the demo model, 1 picks its best epoch, 2 calibrates; 3 is never seen by either.
SYNTH_CALIB_SEED, SYNTH_VAL_SEED = 2, 3
DEFAULT_CALIB_METHOD = "entropy"


@dataclass
class BuildOptions:
    model: str | None = None
    weights: Path | None = None
    onnx: Path | None = None
    input_size: tuple[int, int] | None = None
    precision: str = "int8"
    calib: Path | None = None
    calib_images: int = 100
    calib_method: str | None = None  # None: DEFAULT_CALIB_METHOD, or the method the demo model records
    val: Path | None = None
    backend: str = "auto"  # auto | tensorrt | onnxruntime
    out: Path | None = None
    min_agreement: float = 0.99
    max_miou_drop: float = 0.5
    force: bool = False
    threads: int | None = None
    bench_iterations: int = 20
    demo: bool = False  # filled in by resolve_options

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError("unknown precision", expected=" | ".join(PRECISIONS), found=self.precision)
        if self.onnx is not None and (self.model or self.weights):
            raise UsageError("--onnx cannot be combined with --model/--weights",
                             fix="export first (edgeseg export) or build from the ONNX alone")
        if self.onnx is not None and self.input_size is not None:
            raise UsageError("--input-size cannot change an existing ONNX (its shapes are static)",
                             fix=f"re-export at that size: edgeseg export ... --input-size {self.input_size[0]}x"
                                 f"{self.input_size[1]}")
        if self.calib_images < 1:
            raise UsageError("--calib-images must be at least 1", found=str(self.calib_images))
        from .quant.ranges import METHODS

        if self.calib_method is not None and self.calib_method not in METHODS:
            raise UsageError("unknown calibration method", expected=" | ".join(METHODS), found=self.calib_method)
        if self.backend not in ("auto", "tensorrt", "onnxruntime"):
            raise UsageError("unknown backend", expected="auto | tensorrt | onnxruntime", found=self.backend)


def demo_defaults() -> dict[str, Any]:
    """The shipped demo model (assets/demo_model.json): model, weights file, input size, val mIoU..."""
    if not DEMO_INFO.is_file():
        raise ConfigError("the demo model is not installed with this edgeseg",
                          expected=str(DEMO_INFO), fix="pass --model NAME --weights FILE")
    info = read_json(DEMO_INFO, what="demo model description")
    info["checkpoint"] = ASSETS / info["weights"]
    if not info["checkpoint"].is_file():
        raise ConfigError("the demo model's weights are missing", expected=str(info["checkpoint"]),
                          fix="reinstall edgeseg, or pass --model NAME --weights FILE")
    return info


def resolve_options(options: BuildOptions, log: Callable[[str], None] = print) -> BuildOptions:
    """Fill defaults (demo model, output folder) and reject conflicts before any work starts."""
    options.check()
    if options.onnx is None and options.model is None and options.weights is None:
        demo = demo_defaults()
        options.weights, options.model, options.demo = Path(demo["checkpoint"]), demo["model"], True
        recorded = demo.get("calibration_method")
        if options.calib_method is None and recorded:
            # The demo model records the method it passes the accuracy gates with (see demo_model.json);
            # an explicit --calib-method still wins.
            options.calib_method = recorded
            log(f"demo model: --calib-method {recorded}, as recorded in {DEMO_INFO.name}: "
                f"{demo.get('calibration_note', 'the method it passes the accuracy gates with')}")
    if options.calib_method is None:
        options.calib_method = DEFAULT_CALIB_METHOD
    if options.out is None:
        if options.onnx is not None:
            options.out = Path(options.onnx).resolve().parent
        else:
            name = options.model or Path(options.weights or "model").stem
            options.out = Path("engines") / f"{name}-{options.precision}"
    return options


def choose_backend(requested: str) -> str:
    from .runtime.segmenter import tensorrt_available

    if requested == "auto":
        return "tensorrt" if tensorrt_available() else "onnxruntime"
    if requested == "tensorrt" and not tensorrt_available():
        raise ConfigError("--backend tensorrt was asked for but TensorRT (with a GPU) is not available here",
                          fix="build on the Jetson (see Dockerfile.jetson), or use --backend onnxruntime")
    return requested


def synthetic_set(folder: Path, num: int, size: tuple[int, int], seed: int, log: Callable[[str], None]) -> Path:
    """Render a deterministic synthetic image set once (reused when complete)."""
    from .data.generate import SynthConfig, write_synthetic_dataset

    images = folder / "images"
    if not (images.is_dir() and len(list(images.iterdir())) >= num):
        log(f"rendering {num} synthetic images (seed {seed}) into {folder}")
        write_synthetic_dataset(SynthConfig(out=folder, num=num, height=size[0], width=size[1], seed=seed))
    return folder


@dataclass
class BuildResult:
    out: Path
    manifest: Manifest
    backend: str
    candidate: Path
    validation: dict[str, Any] | None
    bench: dict[str, Any] | None
    steps: dict[str, bool] = field(default_factory=dict)  # step -> skipped
    written: list[Path] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.validation is None or self.validation.get("gates", {}).get("passed", False))


def _export(options: BuildOptions, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from .export import ExportConfig, export_onnx
    from .models import create_model, load_weights
    from .models.weights import checkpoint_from, is_checkpoint, read_weights_file

    checkpoint: dict[str, Any] | None = None
    if options.weights is not None:
        content = read_weights_file(options.weights)
        checkpoint = checkpoint_from(content, source=str(options.weights)) if is_checkpoint(content) else None
    if checkpoint is not None:
        if options.model and options.model != checkpoint["model"]:
            raise UsageError("--model contradicts the checkpoint", found=f"{options.model} vs {checkpoint['model']}")
        name, count = checkpoint["model"], int(checkpoint["num_classes"])
        classes = [str(c) for c in checkpoint.get("classes") or []]
        spec = InputSpec.from_dict(checkpoint["input_spec"])
        model_options = dict(checkpoint.get("model_options") or {})
    else:
        if options.model is None:
            raise UsageError("--model is required with plain weights or without weights")
        name, count, classes, model_options = options.model, 19, [], {}
        size = options.input_size or (512, 1024)
        spec = InputSpec(*size)
    if options.input_size is not None and options.input_size != spec.size:
        spec = InputSpec(**{**spec.to_dict(), "height": options.input_size[0], "width": options.input_size[1]})
    if options.weights is None:
        import torch

        torch.manual_seed(0)  # random weights, but the same ones on every run: builds stay reproducible
    model = create_model(name, num_classes=count, **model_options)
    if options.weights is None:
        log("warning: no --weights: random weights, accuracy numbers are meaningless")
    else:
        load_weights(model, options.weights)
    config = ExportConfig(model=name, num_classes=count, input_spec=spec, classes=classes)
    result = export_onnx(model, config, out, log=log)
    return {"model": name, "num_classes": count, "classes": classes, "input_spec": spec.to_dict(),
            "export": result.to_dict()}


def run_build(options: BuildOptions, *, log: Callable[[str], None] = print,
              progress: Callable[..., Any] | None = None) -> BuildResult:
    options = resolve_options(options, log)
    out = Path(options.out or "engines/model")
    out.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temp_files(out):  # one build per folder at a time
        log(f"removed {stale.name}, left by an interrupted build")
    backend = choose_backend(options.backend)
    if backend == "onnxruntime" and options.precision in ("fp16", "best"):
        raise ConfigError(f"--precision {options.precision} needs TensorRT; ONNX Runtime on the CPU runs fp32 or int8",
                          fix="use --precision int8 (or fp32) here, and fp16/best when building on the Jetson")
    notices: list[str] = []
    if backend == "onnxruntime":
        notices.append("TensorRT is not installed here: building the ONNX Runtime INT8 model instead. On the "
                       "Jetson run: edgeseg build --onnx " + str(out / "model.int8.onnx") + " --backend tensorrt")
        log("notice: " + notices[-1])
    runner = StepRunner(out, force=options.force, log=log)
    steps: dict[str, bool] = {}

    # 1. export (or take the given ONNX)
    if options.onnx is None:
        weights_hash = sha256_file(options.weights) if options.weights else "random"
        key = {"weights": weights_hash, "model": options.model, "size": options.input_size, "version": __version__}
        outcome = runner.run("export", key, [out / "model.onnx", out / "reference.npz"],
                             lambda: _export(options, out, log))
        steps["export"], export_info = outcome.skipped, outcome.result
        fp32_onnx = out / "model.onnx"
    else:
        fp32_onnx, export_info = Path(options.onnx), None
        if not fp32_onnx.is_file():
            raise UsageError(f"--onnx {fp32_onnx} does not exist", fix="pass the model.onnx written by edgeseg export")

    from .artifacts import candidate_input_spec, onnx_metadata

    spec, _ = candidate_input_spec(fp32_onnx)
    if spec is None:
        raise ConfigError(f"{fp32_onnx} has no edgeseg input spec in its metadata",
                          fix="export it with edgeseg export (the spec fixes the preprocessing)")
    meta = onnx_metadata(fp32_onnx)
    is_qdq = _has_qdq(fp32_onnx)

    # 2. calibrate + quantize
    calibration: dict[str, Any] | None = None
    if options.precision in ("int8", "best") and not is_qdq:
        calib_dir = options.calib or _default_calib(out, spec, log)
        from .images import list_images
        from .quant.pipeline import CalibrateConfig, calibrate_model

        calib_files = list_images(calib_dir)
        key = {"onnx": sha256_file(fp32_onnx), "calib": sha256_files(calib_files), "method": options.calib_method,
               "n": options.calib_images, "version": __version__}
        names = ["ranges.json", "model.int8.onnx", "model.int8.ort.onnx", "calibration.cache"]

        def calibrate() -> dict[str, Any]:
            config = CalibrateConfig(method=options.calib_method, calib_images=options.calib_images)
            result = calibrate_model(fp32_onnx, calib_dir, config, out_dir=out, on_progress=progress)
            return {"method": options.calib_method, "folder": str(calib_dir), "images": len(result.images.used),
                    "skipped": [list(s) for s in result.images.skipped], "tensors": result.num_tensors,
                    "seconds": result.seconds}

        outcome = runner.run("calibrate", key, [out / n for n in names], calibrate)
        steps["calibrate"], calibration = outcome.skipped, outcome.result

    # 3. the engine (TensorRT) or the ONNX Runtime candidate
    artifacts = {role: path.name for role, path in _present(out).items()}
    if backend == "tensorrt":
        source = fp32_onnx if is_qdq or options.precision not in ("int8", "best") else out / "model.int8.onnx"
        candidate = _build_trt(runner, source, spec, options, out, steps)
        artifacts["engine"] = candidate.name
    else:
        candidate = out / ("model.int8.ort.onnx" if options.precision == "int8" and not is_qdq else fp32_onnx.name)
        if options.precision == "int8" and is_qdq:
            candidate = fp32_onnx  # a Q/DQ ONNX runs in ONNX Runtime as it is
    manifest = _manifest(meta, spec, options, backend, out, artifacts, calibration)
    atomic_write_json(out / "manifest.json", manifest.to_dict())

    # 4. validate against PyTorch, 5. latency
    validation = _validate(runner, candidate, options, out, spec, steps, log, progress)
    bench = _bench(runner, candidate, options, out, steps)
    manifest.accuracy = _accuracy_summary(validation)
    manifest.latency = _latency_summary(bench)
    atomic_write_json(out / "manifest.json", manifest.to_dict())

    from .report import write_report

    written = write_report(out, manifest=manifest, validation=validation, bench=bench, calibration=calibration,
                           export=(export_info or {}).get("export"))
    result = BuildResult(out, manifest, backend, candidate, validation, bench, steps, written, notices)
    return result


def _has_qdq(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(node.op_type == "QuantizeLinear" for node in model.graph.node)


def _default_calib(out: Path, spec: InputSpec, log: Callable[[str], None]) -> Path:
    shipped = Path("calib")
    from .images import list_images

    if shipped.is_dir() and list_images(shipped):
        log(f"calibration images: {shipped}/ ({len(list_images(shipped))} images)")
        return shipped
    log("no --calib and no ./calib folder: using synthetic calibration scenes (pass --calib DIR with real frames)")
    return synthetic_set(out / "calib_synth", 64, spec.size, SYNTH_CALIB_SEED, log) / "images"


def _present(out: Path) -> dict[str, Path]:
    from .artifacts import discover_artifacts

    return {role: path for role, path in discover_artifacts(out).items() if role != "engine"}


def _build_trt(runner: StepRunner, source: Path, spec: InputSpec, options: BuildOptions, out: Path,
               steps: dict[str, bool]) -> Path:
    from .engine.config import BuildConfig
    from .engine.manifest import write_engine
    from .engine.trt_builder import build_engine

    precision = "int8" if options.precision == "int8" else options.precision
    config = BuildConfig(precision=precision, timing_cache=out / "timing.cache")

    def build() -> dict[str, Any]:
        engine_bytes, manifest = build_engine(source, config, input_spec=spec)
        write_engine(out, engine_bytes, manifest)
        return {"source": source.name, "precision": precision}

    key = {"onnx": sha256_file(source), "precision": precision, "version": __version__}
    outcome = runner.run("engine", key, [out / "model.engine"], build)
    steps["engine"] = outcome.skipped
    return out / "model.engine"


def _manifest(meta: dict[str, str], spec: InputSpec, options: BuildOptions, backend: str, out: Path,
              artifacts: dict[str, str], calibration: dict[str, Any] | None) -> Manifest:
    existing = out / "manifest.json"
    base: dict[str, Any] = {}
    if existing.is_file():  # keep what the engine step recorded (TensorRT version, GPU, I/O)
        try:
            base = Manifest.from_dict(read_json(existing)).to_dict()
        except Exception:
            base = {}
    classes = json.loads(meta.get("classes", "[]") or "[]")
    hashes = {role: sha256_file(out / name) for role, name in artifacts.items() if (out / name).is_file()}
    if options.weights is not None:
        hashes["weights"] = sha256_file(options.weights)
    merged_artifacts = {**base.get("artifacts", {}), **artifacts}
    base.update(model=meta.get("model", "unknown"), num_classes=int(meta.get("num_classes", len(classes) or 1)),
                input_spec=spec.to_dict(), classes=classes, precision=options.precision, backend=backend,
                artifacts=merged_artifacts, hashes={**base.get("hashes", {}), **hashes},
                calibration=calibration or {}, edgeseg_version=__version__)
    base.setdefault("format", 1)
    return Manifest.from_dict(base)


def _validate(runner: StepRunner, candidate: Path, options: BuildOptions, out: Path, spec: InputSpec,
              steps: dict[str, bool], log: Callable[[str], None], progress: Callable[..., Any] | None
              ) -> dict[str, Any] | None:
    from .validate import TorchReference, ValidationConfig, validate_candidate

    val_dir = options.val
    if val_dir is None and options.demo:
        val_dir = synthetic_set(out / "val_synth", 32, spec.size, SYNTH_VAL_SEED, log)
    use_torch = options.weights is not None and _torch_available()
    reference: Any = TorchReference(Path(options.weights)) if use_torch and options.weights else out / "reference.npz"
    if not use_torch and not Path(reference).is_file():
        log("no PyTorch weights and no reference.npz: accuracy against PyTorch cannot be checked")
        return None
    config = ValidationConfig(min_agreement=options.min_agreement, max_miou_drop=options.max_miou_drop,
                              threads=options.threads)
    key = {"candidate": sha256_file(candidate), "reference": str(reference),
           "weights": sha256_file(options.weights) if options.weights else None,
           "val": sha256_files(sorted(Path(val_dir).rglob("*.*"))) if val_dir else None,
           "gates": [options.min_agreement, options.max_miou_drop], "version": __version__}

    def validate() -> dict[str, Any]:
        result = validate_candidate(candidate, reference, data_dir=val_dir, config=config, out_dir=out,
                                    raise_on_failure=False)
        return result.to_dict()

    outcome = runner.run("validate", key, [out / "validation.json"], validate)
    steps["validate"] = outcome.skipped
    return outcome.result


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _bench(runner: StepRunner, candidate: Path, options: BuildOptions, out: Path, steps: dict[str, bool]
           ) -> dict[str, Any] | None:
    from .bench import plan_bench, run_bench

    key = {"candidate": sha256_file(candidate), "iterations": options.bench_iterations, "threads": options.threads,
           "weights": sha256_file(options.weights) if options.weights else None}

    def bench() -> dict[str, Any]:
        standard = candidate.name in ("model.onnx", "model.int8.ort.onnx", "model.engine")
        plan = plan_bench(artifacts=out, onnx_files=[] if standard else [candidate], model=None,
                          weights=options.weights, threads=options.threads)
        result, _ = run_bench(plan, iterations=options.bench_iterations, warmup=3)
        data = result.to_dict()
        data.setdefault("ratios", result.ratios())
        return data

    outcome = runner.run("bench", key, [out / "bench.json"], bench)
    steps["bench"] = outcome.skipped
    return outcome.result


def _accuracy_summary(validation: dict[str, Any] | None) -> dict[str, Any]:
    if not validation:
        return {}
    parity, truth = validation.get("parity", {}), validation.get("ground_truth") or {}
    keys = ("agreement", "max_abs_error", "mean_abs_error", "cosine_similarity", "miou_vs_reference")
    summary = {k: parity[k] for k in keys if k in parity}
    summary.update({f"gt_{k}": v for k, v in truth.items() if isinstance(v, (int, float))})
    summary["gates_passed"] = validation.get("gates", {}).get("passed")
    return summary


def _latency_summary(bench: dict[str, Any] | None) -> dict[str, Any]:
    if not bench:
        return {}
    return {"runners": {r.get("name"): {k: r.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")}
                        for r in bench.get("runners", [])}, "threads": bench.get("threads")}


def gate_failure(result: BuildResult) -> AccuracyError | None:
    if result.passed or result.validation is None:
        return None
    gates = result.validation.get("gates", {})
    return AccuracyError("the engine does not segment like the PyTorch model (an accuracy gate failed)",
                         found="; ".join(gates.get("failures", [])) or "see validation.json",
                         fix="try --calib-method percentile, more --calib-images, or --precision fp32/fp16; "
                             f"details in {result.out / 'report.md'}")


__all__ = ["BuildOptions", "BuildResult", "run_build", "resolve_options", "gate_failure"]
