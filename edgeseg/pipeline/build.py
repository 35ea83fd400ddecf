"""``edgeseg build``: export -> calibrate -> build -> validate -> latency -> report (layer 4).

Each step is skipped when its inputs (hashed) are unchanged (``steps.StepRunner``);
``force`` redoes all. A build folder is a promise to the robot, so:
- one build per folder at a time (``lock.folder_lock``);
- the old manifest.json is removed before any step runs, and the new one is written last,
  atomically, from this run's results only: an interrupted build leaves no manifest, and
  ``Segmenter``/``run`` refuse a folder without one;
- the manifest records the gate verdict on the one candidate this run validated, against
  ``reference.npz`` — the same file and the same computation ``edgeseg validate`` uses on
  the robot, so the robot's verdict is the build's.
torch is imported only to export.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AccuracyError, ArtifactError, ConfigError
from ..fileio import prepare_out_dir, read_json, remove_if_empty, remove_stale_temp_files
from ..lock import LOCK_FILE, folder_lock
from ..manifest import MANIFEST_FILE, CalibrationSummary, Manifest, write_manifest
from ..quant.ranges import METHODS
from ..report.writer import write_report
from ..runtime.backend import choose_for_build
from ..runtime.segmenter import tensorrt_available
from . import build_steps as steps
from . import int8_steps, qat_steps
from .bench import BenchResult
from .build_checks import Preflight, check_backend_precision, preflight, will_calibrate
from .build_data import default_calib
from .options import (  # noqa: F401  (BACKENDS, the seeds: build.py's names before options.py)
    BACKENDS,
    DEFAULT_CALIB_METHOD,
    SYNTH_CALIB_SEED,
    SYNTH_VAL_SEED,
    BuildOptions,
)
from .step_cache import StepRunner
from .validate import ValidationResult

if TYPE_CHECKING:  # best imports build: a type only
    from .best import SelectionResult

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_INFO = ASSETS / "demo_model.json"


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
    """The backend a build targets: the registry's choice (runtime/backend.py; auto: TensorRT where it runs,
    else ONNX Runtime)."""
    if requested == "tensorrt" and not tensorrt_available():
        raise ConfigError("--backend tensorrt was asked for but TensorRT (with a GPU) is not available here",
                          fix="build on the Jetson (see Dockerfile.jetson), or use --backend onnxruntime")
    return choose_for_build(requested)


@dataclass
class BuildResult:
    out: Path
    manifest: Manifest
    backend: str
    candidate: Path
    validation: ValidationResult | None  # typed from the step that made it to the report that prints it
    bench: BenchResult | None
    steps: dict[str, bool] = field(default_factory=dict)  # step -> skipped
    written: list[Path] = field(default_factory=list)  # the files this run wrote (cached steps wrote none)
    notices: list[str] = field(default_factory=list)
    calib_opened: str = ""  # what an explicit --calib opened: "folder DIR: N images", "bag PATH /cam: N frames"
    quantized_input: bool = False  # --onnx was a Q/DQ model (no calibration, no fallback possible)

    @property
    def status(self) -> str:
        """passed | failed | not_run: the verdict the manifest records."""
        return self.manifest.validation_status

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_build(options: BuildOptions, *, log: Callable[[str], None] = print,
              progress: Callable[..., Any] | None = None) -> BuildResult:
    """Run every step into ``options.out``; ``progress(label) -> (on_progress(done, total), close)`` shows
    long steps (the CLI passes ``commands._common.progress_callback``)."""
    options = resolve_options(options, log)
    backend = choose_backend(options.backend)
    check_backend_precision(backend, options.precision)
    checked = preflight(options, backend)  # a refused build leaves the folder (and its manifest) as it was
    out, created = prepare_out_dir(Path(options.out or "engines/model"))
    try:
        with folder_lock(out):
            return _run_locked(options, out, backend, log, progress, checked)
    except BaseException:
        if created and [p.name for p in out.iterdir()] in ([], [LOCK_FILE]):
            (out / LOCK_FILE).unlink(missing_ok=True)
            remove_if_empty(out)  # an early failure leaves no empty --out behind
        raise


def _run_locked(options: BuildOptions, out: Path, backend: str, log: Callable[[str], None],
                progress: Callable[..., Any] | None, checked: Preflight) -> BuildResult:
    before = _file_stamps(out)
    for stale in remove_stale_temp_files(out):
        log(f"removed {stale.name}, left by an interrupted build")
    if (out / MANIFEST_FILE).is_file():  # the first step starts: the old promise is void until this run validates
        (out / MANIFEST_FILE).unlink()
    notices = [steps.backend_notice("auto" if options.backend == "auto" and backend != "tensorrt" else backend,
                                    options.precision, out)]
    log("notice: " + notices[-1])
    if checked.calib_opened:
        log(f"calibration frames: {checked.calib_opened}")
    runner = StepRunner(out, force=options.force, log=log)
    done: dict[str, bool] = {}

    if checked.qat is not None:  # a QAT checkpoint: its fine-tuned graph, held to the QAT model's verdict
        fp32_onnx, export_info = qat_steps.run_qat_export_step(runner, options, checked.qat, out, done, log)
    else:
        fp32_onnx, export_info = steps.export_or_take(runner, options, out, done, log)
    # --onnx: preflight read this file's facts (fp32_onnx is its copy); an export: read them now
    spec, meta, is_qdq = checked.onnx_facts or steps.onnx_facts(fp32_onnx)
    calibration = None
    if checked.qat is not None:  # no calibration: the INT8 files at the trained scales
        calibration = qat_steps.run_qat_quantize_step(runner, options, checked.qat, out, done)
    elif will_calibrate(options, is_qdq):
        calibration = _int8_models(runner, fp32_onnx, spec, options, out, backend, done, log, progress)
    engine: steps.EngineRecord | None = None
    selection: SelectionResult | None = None  # --precision best on a CPU: the candidate kept and why
    if backend == "tensorrt":
        source = fp32_onnx if is_qdq or options.precision not in ("int8", "best") else out / "model.int8.onnx"
        candidate, engine = steps.build_trt(runner, source, spec, options, out, done)
    elif is_qdq:
        candidate = fp32_onnx  # a Q/DQ ONNX runs in ONNX Runtime as it is
    elif options.precision == "best":  # measured here: the fastest candidate (runtime x file) that passes the gates
        from . import best

        candidate, selection = best.select_best(runner, best.candidates_here(backend, options.backend, out), options,
                                                out, done, log)
        backend = selection.backend
    else:
        # OpenVINO: its Q/DQ file (model.int8.ov.onnx: 7-bit weights without VNNI/AMX), else TensorRT's
        int8_file = "model.int8.ort.onnx" if backend == "onnxruntime" else (
            "model.int8.ov.onnx" if (out / "model.int8.ov.onnx").is_file() else "model.int8.onnx")
        candidate = out / (int8_file if options.precision == "int8" else fp32_onnx.name)
    runtime_options = {k: v for k, v in selection.options.items() if k != "backend"} if selection else {}
    on = {} if backend == "tensorrt" else {"backend": backend, "backend_options": runtime_options}
    validation, why = steps.run_validation_step(runner, candidate, options, out, done, log, progress, **on)
    bench = steps.run_bench_step(runner, candidate, options, out, done, progress,
                        backends=[backend] if backend not in ("onnxruntime", "tensorrt") else [],
                        torch_weights=qat_steps.float_weights(checked.qat) if checked.qat is not None else
                        options.weights)
    manifest = steps.assemble_manifest(meta, spec, options, backend, out, candidate, calibration, engine,
                                       validation, why, bench, selection)
    write_report(out, manifest=manifest, validation=validation, bench=bench, calibration=calibration,
                 export=export_info.export if export_info is not None else None, class_colours=manifest.class_colors)
    write_manifest(out, manifest)  # last: the folder's promise, from this run's results only
    written = [path for path, stamp in sorted(_file_stamps(out).items()) if before.get(path) != stamp]
    result = BuildResult(out, manifest, backend, candidate, validation, bench, done, written, notices)
    result.calib_opened, result.quantized_input = checked.calib_opened, is_qdq
    return result


def _file_stamps(out: Path) -> dict[Path, tuple[int, int, int]]:
    """(inode, size, mtime) of the folder's files: a file whose stamp changed was written by this run
    (every write is a temp file + rename: a new inode)."""
    stamps = {}
    for path in out.iterdir():
        if path.is_file() and not path.name.startswith("."):
            info = path.stat()
            stamps[path] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return stamps


def _int8_models(runner: StepRunner, fp32_onnx: Path, spec: Any, options: BuildOptions, out: Path, backend: str,
                 done: dict[str, bool], log: Callable[[str], None], progress: Callable[..., Any] | None
                 ) -> CalibrationSummary:
    """calibrate -> [fallback | sensitivity] -> quantize; what the manifest records under ``calibration``."""
    calib_dir = options.calib or default_calib(out, spec, log)
    calibrated = int8_steps.run_calibration_step(runner, fp32_onnx, calib_dir, options, out, done, progress)
    float_layers: list[str] = []
    fallback = None
    if options.fallback == "auto":
        found = int8_steps.run_fallback_step(runner, fp32_onnx, calib_dir, options, out, backend, done, log, progress)
        if found is not None:
            float_layers, fallback = found.kept, found.manifest_section()
    elif options.sensitivity:
        int8_steps.run_sensitivity_step(runner, fp32_onnx, calib_dir, options, out, done, progress)
    quantized = int8_steps.run_quantize_step(runner, fp32_onnx, options, out, done, float_layers)
    return CalibrationSummary(
        method=calibrated.method, folder=calibrated.folder, images=calibrated.images, skipped=calibrated.skipped,
        tensors=calibrated.tensors, seconds={**calibrated.seconds, **quantized.seconds}, bag=calibrated.bag,
        fallback=fallback, concat_scales=options.concat_scales,
        high_precision=options.high_precision,  # what was asked; float_regions: what the file holds
        float_regions=quantized.float_regions or {"high_precision": "fp32"},
        trt_fusion=quantized.trt_fusion or None,  # predicted TensorRT fusion of model.int8.onnx (quant/trt_fusion.py)
        float_layers=float_layers)


def build_failure(result: BuildResult) -> AccuracyError | ArtifactError | None:
    """The error the CLI exits with when the folder is not a validated build (None when it is)."""
    if result.passed:
        return None
    if result.status == "failed":
        gates = result.validation.gates if result.validation is not None else {}
        calibration = result.manifest.calibration or CalibrationSummary()
        found = calibration.fallback
        used = calibration.method
        method = f"another --calib-method ({' or '.join(m for m in METHODS if m != used)}; this build used {used})" \
            if used else "another --calib-method"
        # only what can work here: FP16 needs TensorRT; a fallback needs the float model
        other = "--precision fp32 or fp16" if result.backend == "tensorrt" else \
            "--precision best (keeps FP32 where INT8 misses a gate)"
        if result.manifest.precision in ("fp32", "fp16") and not (result.manifest.build or {}).get("selection"):
            fix = "check that the model was exported from the weights the reference came from"
        elif calibration.qat is not None:  # a QAT checkpoint: its scales are trained, not calibrated
            source = calibration.qat.float_checkpoint.get("path", "FLOAT.pt")
            fix = (f"fine-tune further (edgeseg qat --weights {source} --ranges DIR with more --epochs, or "
                   "--distill 1), or build the float checkpoint with --precision best")
        elif result.quantized_input:  # a Q/DQ --onnx: nothing here re-quantizes it
            fix = (f"build from the float model, which can keep layers in float: edgeseg build --onnx "
                   f"{result.candidate.parent / 'model.onnx'} --int8 --fallback auto")
        elif found and not found.passed:
            fix = (f"raise --fallback-cap (now {found.cap}; the next layers would be "
                   f"{', '.join(found.next_layers) or 'none: every quantized layer was tried'}), "
                   f"or try {method} / more --calib-images")
        elif not found:
            fix = f"try --fallback auto, {method}, more --calib-images, or {other}"
        else:
            fix = f"try {method}, more --calib-images, or {other}"
        return AccuracyError("the engine does not segment like the PyTorch model (an accuracy gate failed)",
                             found="; ".join(gates.get("failures", [])) or "see validation.json",
                             fix=f"{fix}; details in {result.out / 'report.md'}")
    return ArtifactError("the build could not be validated against PyTorch",
                         found=(result.manifest.validation.why if result.manifest.validation else "") or "no reference",
                         fix="build from --weights (edgeseg build --weights F ...), or keep reference.npz "
                             "(written by edgeseg export) beside the --onnx file")


__all__ = ["BuildOptions", "BuildResult", "run_build", "resolve_options", "build_failure"]
