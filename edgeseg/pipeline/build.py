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
from typing import Any

from ..data.datasets import DatasetSpec
from ..engine.config import PRECISIONS
from ..errors import AccuracyError, ArtifactError, ConfigError, UsageError
from ..fileio import prepare_out_dir, read_json, remove_if_empty, remove_stale_temp_files
from ..lock import LOCK_FILE, folder_lock
from ..manifest import MANIFEST_FILE, Manifest, write_manifest
from ..quant.calib_data import CalibSource
from ..quant.fallback import DEFAULT_CAP, check_fallback
from ..quant.fp16_regions import DEFAULT_HIGH_PRECISION, HIGH_PRECISIONS
from ..quant.ranges import DEFAULT_METHOD, METHODS
from ..report.writer import write_report
from ..runtime.segmenter import tensorrt_available
from .step_cache import StepRunner
from .validate import ValidationConfig

BACKENDS = ("auto", "tensorrt", "onnxruntime")
ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_INFO = ASSETS / "demo_model.json"
# Synthetic seeds: 0 trains the demo model, 1 picks its best epoch, 2 calibrates; 3 is never seen by either.
SYNTH_CALIB_SEED, SYNTH_VAL_SEED = 2, 3
DEFAULT_CALIB_METHOD = DEFAULT_METHOD


@dataclass
class BuildOptions:
    model: str | None = None
    weights: Path | None = None
    onnx: Path | None = None
    input_size: tuple[int, int] | None = None
    precision: str = "int8"
    calib: CalibSource | None = None  # a folder, bag:PATH --topic T, or a dataset's images (commands resolve it)
    calib_images: int = 100
    calib_method: str | None = None  # None: DEFAULT_CALIB_METHOD, or the method the demo model records
    concat_scales: str = "separate"  # Q/DQ for TensorRT: separate | shared
    high_precision: str = DEFAULT_HIGH_PRECISION  # INT8's float layers on TensorRT: fp16 | fp32 (quant/fp16_regions.py)
    fallback: str = "off"  # off | auto: keep the most harmful layers in float until the gates pass
    fallback_cap: int = DEFAULT_CAP  # at most this many layers in float
    sensitivity: bool = False  # rank the quantized layers (sensitivity.md) even without a fallback
    val: DatasetSpec | Path | None = None  # a path: the folder format
    val_images: int | None = None  # frames kept in reference.npz (None: reference.default_sample_count)
    backend: str = "auto"  # auto | tensorrt | onnxruntime
    out: Path | None = None
    min_agreement: float = 0.99
    max_miou_drop: float = 0.5
    force: bool = False
    threads: int | None = None
    bench_iterations: int = 20
    demo: bool = False  # filled in by resolve_options

    def check(self) -> None:
        """Every option problem, before any work (exit 2)."""
        if self.precision not in PRECISIONS:
            raise UsageError("unknown precision", expected=" | ".join(PRECISIONS), found=self.precision)
        if self.onnx is not None and (self.model or self.weights):
            raise UsageError("--onnx cannot be combined with --model/--weights",
                             fix="export first (edgeseg export) or build from the ONNX alone")
        if self.onnx is not None and self.input_size is not None:
            raise UsageError("--input-size cannot change an existing ONNX (its shapes are static)",
                             fix=f"re-export at that size: edgeseg export ... --input-size {self.input_size[0]}x"
                                 f"{self.input_size[1]}")
        for option, value in (("--calib-images", self.calib_images), ("--val-images", self.val_images),
                              ("--threads", self.threads), ("bench iterations", self.bench_iterations)):
            if value is not None and value < 1:
                raise UsageError(f"{option} must be at least 1", found=str(value))
        # the gates are validate's: one owner of what a valid gate is
        ValidationConfig(min_agreement=self.min_agreement, max_miou_drop=self.max_miou_drop).check()
        check_fallback(self.fallback, self.fallback_cap)
        int8 = self.precision in ("int8", "best")
        for wanted, option in ((self.fallback == "auto", "--fallback auto"), (self.sensitivity, "--sensitivity")):
            if wanted and not int8:
                raise UsageError(f"{option} is about INT8 layers", found=f"--precision {self.precision}",
                                 fix=f"use --precision int8, or drop {option}")
        if self.high_precision not in HIGH_PRECISIONS:
            raise UsageError("unknown --high-precision", expected=" | ".join(HIGH_PRECISIONS),
                             found=self.high_precision)
        if self.calib_method is not None and self.calib_method not in METHODS:
            raise UsageError("unknown calibration method", expected=" | ".join(METHODS), found=self.calib_method)
        if self.backend not in BACKENDS:
            raise UsageError("unknown backend", expected=" | ".join(BACKENDS), found=self.backend)
        if self.onnx is not None and not Path(self.onnx).is_file():
            raise UsageError(f"--onnx {self.onnx} does not exist", fix="pass the model.onnx written by edgeseg export")


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
    if requested == "auto":
        return "tensorrt" if tensorrt_available() else "onnxruntime"
    if requested == "tensorrt" and not tensorrt_available():
        raise ConfigError("--backend tensorrt was asked for but TensorRT (with a GPU) is not available here",
                          fix="build on the Jetson (see Dockerfile.jetson), or use --backend onnxruntime")
    return requested


@dataclass
class BuildResult:
    out: Path
    manifest: Manifest
    backend: str
    candidate: Path
    validation: dict[str, Any] | None
    bench: dict[str, Any] | None
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
    from .build_checks import check_backend_precision, preflight

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
                progress: Callable[..., Any] | None, checked: Any = None) -> BuildResult:
    from . import build_steps as steps
    from .build_checks import preflight

    checked = checked if checked is not None else preflight(options, backend)
    before = _file_stamps(out)
    for stale in remove_stale_temp_files(out):
        log(f"removed {stale.name}, left by an interrupted build")
    if (out / MANIFEST_FILE).is_file():  # the first step starts: the old promise is void until this run validates
        (out / MANIFEST_FILE).unlink()
    notices = [steps.backend_notice(backend, options.precision, out)]
    log("notice: " + notices[-1])
    if checked.calib_opened:
        log(f"calibration frames: {checked.calib_opened}")
    runner = StepRunner(out, force=options.force, log=log)
    done: dict[str, bool] = {}

    fp32_onnx, export_info = steps.export_or_take(runner, options, out, done, log)
    spec, meta, is_qdq = steps.onnx_facts(fp32_onnx)
    calibration = None
    if options.precision in ("int8", "best") and not is_qdq:
        calibration = _int8_models(runner, fp32_onnx, spec, options, out, backend, done, log, progress)
    engine_info: dict[str, Any] = {}
    if backend == "tensorrt":
        source = fp32_onnx if is_qdq or options.precision not in ("int8", "best") else out / "model.int8.onnx"
        candidate, engine_info = steps.build_trt(runner, source, spec, options, out, done)
    elif is_qdq:
        candidate = fp32_onnx  # a Q/DQ ONNX runs in ONNX Runtime as it is
    elif options.precision == "best":  # measured here: the fastest of FP32 and INT8 that passes the gates
        from . import int8_steps

        candidate, selection = int8_steps.select_fastest(runner, [fp32_onnx, out / "model.int8.ort.onnx"], options,
                                                         out, done, log)
        engine_info = {"build": {"selection": int8_steps.selection_record(selection)}}
    else:
        candidate = out / ("model.int8.ort.onnx" if options.precision == "int8" else fp32_onnx.name)
    validation, why = steps.validate(runner, candidate, options, out, done, log, progress)
    bench = steps.bench(runner, candidate, options, out, done, progress)
    manifest = steps.assemble_manifest(meta, spec, options, backend, out, candidate, calibration, engine_info,
                                       validation, why, bench)
    write_report(out, manifest=manifest, validation=validation, bench=bench, calibration=calibration,
                 export=(export_info or {}).get("export"), class_colours=manifest.class_colors)
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
                 ) -> dict[str, Any]:
    """calibrate -> [fallback | sensitivity] -> quantize; what the manifest records under ``calibration``."""
    from . import int8_steps
    from .build_data import default_calib

    calib_dir = options.calib or default_calib(out, spec, log)
    calibration = int8_steps.calibrate(runner, fp32_onnx, calib_dir, options, out, done, progress)
    float_layers: list[str] = []
    if options.fallback == "auto":
        found = int8_steps.fallback(runner, fp32_onnx, calib_dir, options, out, backend, done, log, progress)
        if found is not None:
            float_layers = list(found.get("kept", []))
            calibration["fallback"] = {k: found.get(k) for k in ("passed", "kept", "precision_of_kept", "cap",
                                                                 "next_layers", "latency_ms")}
            calibration["fallback"]["trials"] = len(found.get("trials", []))
    elif options.sensitivity:
        int8_steps.sensitivity(runner, fp32_onnx, calib_dir, options, out, done, progress)
    quantized = int8_steps.quantize(runner, fp32_onnx, options, out, done, float_layers)
    calibration["concat_scales"] = options.concat_scales
    calibration["high_precision"] = options.high_precision  # what was asked; float_regions: what the file holds
    calibration["float_regions"] = quantized.get("float_regions", {"high_precision": "fp32"})
    if quantized.get("trt_fusion"):  # predicted TensorRT fusion of model.int8.onnx (quant/trt_fusion.py)
        calibration["trt_fusion"] = quantized["trt_fusion"]
    calibration["float_layers"] = float_layers
    calibration["seconds"] = {**calibration.get("seconds", {}), **quantized.get("seconds", {})}
    return calibration


def build_failure(result: BuildResult) -> AccuracyError | ArtifactError | None:
    """The error the CLI exits with when the folder is not a validated build (None when it is)."""
    if result.passed:
        return None
    if result.status == "failed":
        gates = (result.validation or {}).get("gates", {})
        calibration = result.manifest.calibration or {}
        found = calibration.get("fallback") or {}
        used = calibration.get("method")
        method = f"another --calib-method ({' or '.join(m for m in METHODS if m != used)}; this build used {used})" \
            if used else "another --calib-method"
        # only what can work here: FP16 needs TensorRT; a fallback needs the float model
        other = "--precision fp32 or fp16" if result.backend == "tensorrt" else \
            "--precision best (keeps FP32 where INT8 misses a gate)"
        if result.manifest.precision in ("fp32", "fp16") and not (result.manifest.build or {}).get("selection"):
            fix = "check that the model was exported from the weights the reference came from"
        elif result.quantized_input:  # a Q/DQ --onnx: nothing here re-quantizes it
            fix = (f"build from the float model, which can keep layers in float: edgeseg build --onnx "
                   f"{result.candidate.parent / 'model.onnx'} --int8 --fallback auto")
        elif found and not found.get("passed"):
            fix = (f"raise --fallback-cap (now {found.get('cap')}; the next layers would be "
                   f"{', '.join(found.get('next_layers') or []) or 'none: every quantized layer was tried'}), "
                   f"or try {method} / more --calib-images")
        elif not found:
            fix = f"try --fallback auto, {method}, more --calib-images, or {other}"
        else:
            fix = f"try {method}, more --calib-images, or {other}"
        return AccuracyError("the engine does not segment like the PyTorch model (an accuracy gate failed)",
                             found="; ".join(gates.get("failures", [])) or "see validation.json",
                             fix=f"{fix}; details in {result.out / 'report.md'}")
    return ArtifactError("the build could not be validated against PyTorch",
                         found=str(result.manifest.validation.get("why", "no reference")),
                         fix="build from --weights (edgeseg build --weights F ...), or keep reference.npz "
                             "(written by edgeseg export) beside the --onnx file")


gate_failure = build_failure  # the name earlier callers used

__all__ = ["BuildOptions", "BuildResult", "run_build", "resolve_options", "build_failure", "gate_failure"]
