"""The INT8 steps of ``edgeseg build`` (layer 4): calibrate -> [fallback] -> quantize.

- calibrate: the calibration pass (ranges.json, calibration.cache), skipped when its inputs are unchanged;
- fallback (``--fallback auto``): validates the all-INT8 candidate of this backend against reference.npz
  and, when it misses a gate, keeps the layers ranked most harmful on calibration frames in float until
  it passes (quant/fallback.py); writes fallback.json (+ sensitivity.*);
- quantize: model.int8.onnx, model.int8.ort.onnx and model.int8.ov.onnx (OpenVINO's: 7-bit weights on a CPU
  without VNNI/AMX, quant/qdq_ov.py) from the ranges, with the fallback's layers in float.
Splitting the pass from the writers lets the fallback try layer sets without recalibrating.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..fileio import atomic_write_json, sha256_file, sha256_files
from ..images import list_images
from ..machine import usable_cores
from ..manifest import FallbackSummary
from ..onnx_model import load_onnx
from ..quant.calib_data import BagCalibSource, CalibSource, ImageListSource
from ..quant.calibrate import (
    CalibrateConfig,
    calibrate_ranges,
    layer_sensitivity,
    write_int8_models,
    write_ort_int8,
    write_trt_int8,
)
from ..quant.fallback import FallbackResult, Trial, greedy_fallback
from ..quant.fp16_regions import float_regions_of
from ..quant.qdq_ov import OV_INT8_NAME, openvino_weight_bits
from ..quant.ranges import load_ranges
from ..quant.sensitivity import SENSITIVITY_JSON, SENSITIVITY_MD
from ..quant.trt_cache import DEFAULT_TRT_VERSION
from ..reference import REFERENCE_FILE
from ..report.plots import sensitivity_plot
from ..runtime.bags import bag_sha256
from ..trt_version import TrtVersion
from .bench import ort_runner, time_side_by_side
from .build_steps import Log, Progress
from .options import BuildOptions
from .step_cache import StepRunner, known_fields
from .validate import validate_candidate

FALLBACK_FILE = "fallback.json"
# on TensorRT a layer without Q/DQ runs in FP16 (the INT8 build allows FP16); ONNX Runtime's CPU runs it in FP32
FLOAT_PRECISION = {"tensorrt": "fp16", "onnxruntime": "fp32"}
LATENCY_ITERATIONS = 10


@dataclass
class CalibrationResult:
    """What the calibrate step did (steps.json; the manifest's ``calibration`` section starts from it)."""

    method: str
    folder: str  # the calibration source as given (a folder, bag:PATH (topic T), a dataset's images)
    images: int  # frames used
    skipped: list[list[str]]  # [file, why] of the frames left out
    tensors: int  # activation ranges computed
    seconds: dict[str, float]
    bag: dict[str, Any] | None = None  # a bag's path, topic, storage and frame stamps, as ranges.json records them

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.bag is None:
            del data["bag"]  # a folder's record has none
        return data

    @classmethod
    def from_dict(cls, data: Any) -> CalibrationResult:
        return cls(**known_fields(cls, data))


@dataclass
class QuantizeResult:
    """What the quantize step wrote: model.int8.onnx's float regions, its predicted TensorRT fusion, timings."""

    concat_scales: str
    float_layers: list[str]
    seconds: dict[str, float]
    float_regions: dict[str, Any]  # read back from model.int8.onnx's metadata (fp16_regions.float_regions_of)
    trt_version: str
    trt_fusion: dict[str, Any] | None = None  # quant/trt_fusion.py's prediction, brief

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> QuantizeResult:
        return cls(**known_fields(cls, data))


@dataclass
class FallbackRecord:
    """fallback.json: the greedy search (quant.fallback), the precision the kept layers run in, what they cost."""

    search: FallbackResult
    precision_of_kept: str  # fp16 on TensorRT (no Q/DQ), fp32 on the CPU
    latency_ms: dict[str, Any]  # p50 per candidate on the CPU, or a note

    @property
    def passed(self) -> bool:
        return self.search.passed

    @property
    def kept(self) -> list[str]:
        return self.search.kept

    def to_dict(self) -> dict[str, Any]:
        return {**self.search.to_dict(), "precision_of_kept": self.precision_of_kept, "latency_ms": self.latency_ms}

    @classmethod
    def from_dict(cls, data: Any) -> FallbackRecord:
        search = FallbackResult(int(data["cap"]), [Trial(**t) for t in data["trials"]], list(data.get("ranking", [])))
        return cls(search, str(data["precision_of_kept"]), dict(data["latency_ms"]))

    def manifest_section(self) -> FallbackSummary:
        """The manifest's ``calibration.fallback``: the outcome, not every trial."""
        return FallbackSummary(passed=self.passed, kept=list(self.kept), precision_of_kept=self.precision_of_kept,
                               cap=self.search.cap, next_layers=list(self.search.next_layers),
                               latency_ms=dict(self.latency_ms), trials=len(self.search.trials))


def calibrate_config(options: BuildOptions):  # -> quant.calibrate.CalibrateConfig

    return CalibrateConfig(method=str(options.calib_method), calib_images=options.calib_images,
                           concat_scales=options.concat_scales, high_precision=options.high_precision,
                           trt_version=target_trt_version())


def target_trt_version() -> str:
    """The TensorRT the Q/DQ model is written for: the installed 8.x or 10.x (8.x: float32 regions, opset 17),
    else the calibration cache's default (10.3; TensorRT 11 reads the same float16-region Q/DQ file)."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return DEFAULT_TRT_VERSION
    try:
        import tensorrt

        version = TrtVersion.parse(str(tensorrt.__version__))
    except Exception:  # the type stubs, or a broken install: the default
        return DEFAULT_TRT_VERSION
    return str(version) if version.major in (8, 10) else DEFAULT_TRT_VERSION


def _quantize_inputs(fp32_onnx: Path, out: Path) -> dict[str, str]:
    """What every step after the calibration pass depends on: the float model and its ranges."""
    return {"onnx": sha256_file(fp32_onnx), "ranges": sha256_file(out / "ranges.json")}


def _calib_identity(calib_dir: CalibSource | ImageListSource) -> str:
    """What the calibration step's cache key holds of its frames: the folder's images, the bag + topic, or the
    dataset spec + its images."""
    if isinstance(calib_dir, BagCalibSource):
        return "bag:" + bag_sha256(calib_dir.path, calib_dir.topic)
    if isinstance(calib_dir, ImageListSource):
        return f"{calib_dir.label}:" + sha256_files(list(calib_dir.paths))
    return sha256_files(list_images(calib_dir))


# what of a CalibrateConfig the calibration pass reads (ranges.json; calibration.cache's header: the TensorRT
# version); the Q/DQ options (concat_scales, high_precision) are the quantize step's
CALIBRATION_PASS_FIELDS = ("method", "calib_images", "batch_size", "percentile", "seed", "trt_version", "frame_order",
                           "input_spec")


def calibration_key(config: CalibrateConfig) -> dict[str, Any]:
    """The calibrate step's cache key, from the config the pass runs with (before, the key held the method and
    the image count only: a build for another TensorRT version reused a calibration.cache with the old header)."""
    return {name: getattr(config, name) for name in CALIBRATION_PASS_FIELDS}


def run_calibration_step(runner: StepRunner, fp32_onnx: Path, calib_dir: CalibSource, options: BuildOptions,
              out: Path, done: dict[str, bool], progress: Progress | None) -> CalibrationResult:
    config = calibrate_config(options)  # one config for the pass and its key: they cannot drift apart
    key = {"onnx": sha256_file(fp32_onnx), "calib": _calib_identity(calib_dir), **calibration_key(config),
           "version": __version__}

    def run() -> CalibrationResult:
        on_progress, close = progress("calibrating") if progress else (None, None)
        try:
            ranges, images, seconds = calibrate_ranges(fp32_onnx, calib_dir, config, out_dir=out,
                                                       on_progress=on_progress)
        finally:
            if close is not None:
                close()
        return CalibrationResult(str(options.calib_method), str(calib_dir), len(images.used),
                                 [list(s) for s in images.skipped], len(ranges.tensors), dict(seconds), images.bag)

    outcome = runner.run("calibrate", key, [out / "ranges.json", out / "calibration.cache"], run,
                         result_type=CalibrationResult)
    done["calibrate"] = outcome.skipped
    return outcome.result


def run_quantize_step(runner: StepRunner, fp32_onnx: Path, options: BuildOptions, out: Path, done: dict[str, bool],
             float_layers: list[str]) -> QuantizeResult:
    config = calibrate_config(options)
    ov_bits = openvino_weight_bits()  # model.int8.ov.onnx's weights: 7 bits on a CPU without VNNI/AMX (qdq_ov)
    key = {**_quantize_inputs(fp32_onnx, out),
           "concat_scales": options.concat_scales, "float_layers": float_layers,
           "high_precision": options.high_precision, "trt_version": config.trt_version,
           "ov_weight_bits": ov_bits, "version": __version__}

    def run() -> QuantizeResult:
        trt_path, _, seconds = write_int8_models(fp32_onnx, load_ranges(out / "ranges.json"), out, config,
                                                 float_layers=float_layers, ov_weight_bits=ov_bits)
        from ..quant.trt_fusion import predict_fusion

        written = load_onnx(trt_path)
        return QuantizeResult(options.concat_scales, list(float_layers), dict(seconds), float_regions_of(written),
                              config.trt_version,
                              # what TensorRT should fuse (a prediction from its documented Q/DQ rules, no engine built)
                              predict_fusion(written, config.trt_version).to_dict(brief=True))

    outputs = [out / "model.int8.onnx", out / "model.int8.ort.onnx", out / OV_INT8_NAME]
    outcome = runner.run("quantize", key, outputs, run, result_type=QuantizeResult)
    done["quantize"] = outcome.skipped
    return outcome.result


def run_fallback_step(runner: StepRunner, fp32_onnx: Path, calib_dir: CalibSource, options: BuildOptions,
             out: Path, backend: str, done: dict[str, bool], log: Log,
             progress: Progress | None) -> FallbackRecord | None:
    """The layers to keep in float (fallback.json), or None when there is no reference to aim at."""
    reference = out / REFERENCE_FILE
    if not reference.is_file():
        log(f"warning: --fallback auto needs {REFERENCE_FILE} to check the gates; no fallback")
        return None
    key = {**_quantize_inputs(fp32_onnx, out),
           "reference": sha256_file(reference), "backend": backend, "concat_scales": options.concat_scales,
           "high_precision": options.high_precision,
           "gates": [options.min_agreement, options.max_miou_drop], "cap": options.fallback_cap,
           "trt_version": calibrate_config(options).trt_version,  # the trials' Q/DQ files are written for it
           "version": __version__}
    outcome = runner.run("fallback", key, [out / FALLBACK_FILE],
                         lambda: _search(fp32_onnx, calib_dir, options, out, backend, log, progress),
                         result_type=FallbackRecord)
    done["fallback"] = outcome.skipped
    return outcome.result


def _search(fp32_onnx: Path, calib_dir: CalibSource, options: BuildOptions, out: Path, backend: str,
            log: Log, progress: Progress | None) -> FallbackRecord:
    ranges, config, model = load_ranges(out / "ranges.json"), calibrate_config(options), load_onnx(fp32_onnx)
    with tempfile.TemporaryDirectory(prefix="edgeseg-fallback-") as tmp:
        work = Path(tmp)
        candidates: dict[int, Path] = {}

        def evaluate(kept: Any) -> Trial:
            # only the backend's own file: TensorRT's Q/DQ model (simulated here) or the CPU INT8 model
            candidate = (write_trt_int8(model, ranges, work, config, float_layers=list(kept)) if backend == "tensorrt"
                         else write_ort_int8(fp32_onnx, model, ranges, work, config, float_layers=list(kept)))
            keep = work / f"trial_{len(kept)}.int8.onnx"
            shutil.copyfile(candidate, keep)
            candidates[len(kept)] = keep
            return _trial(list(kept), keep, out / REFERENCE_FILE, options)

        def ranking() -> list[str]:
            log("fallback: the all-INT8 candidate misses a gate; ranking layers on calibration frames")
            on_progress, close = progress("sensitivity (candidates)") if progress else (None, None)
            try:
                sensitivity, _ = layer_sensitivity(fp32_onnx, calib_dir, ranges, config, out_dir=out,
                                                   on_progress=on_progress, plot=sensitivity_plot)
            finally:
                if close is not None:
                    close()
            return sensitivity.ranked()

        result = greedy_fallback(evaluate, ranking, cap=options.fallback_cap, log=log)
        record = FallbackRecord(result, FLOAT_PRECISION[backend],
                                _latency_cost(candidates, len(result.kept), backend, options))
    if not result.passed:
        log(f"fallback: still failing with {options.fallback_cap} layer(s) in float (--fallback-cap); next would be: "
            + ", ".join(result.next_layers))
    atomic_write_json(out / FALLBACK_FILE, record.to_dict())
    return record


def _trial(kept: list[str], candidate: Path, reference: Path, options: BuildOptions) -> Trial:
    """The fallback search's trial of ``candidate`` (``kept`` in float) against reference.npz with the build's
    gates, nothing written."""
    result = validate_candidate(candidate, reference, config=options.validation_config(), write=False,
                                raise_on_failure=False)
    return Trial(kept, result.passed, float(result.parity["agreement"]),
                 (result.ground_truth or {}).get("miou_drop_points"), list(result.gates["failures"]))


def _side_by_side_p50(candidates: dict[str, Path], threads: int, iterations: int, warmup: int
                      ) -> tuple[dict[str, float], Any]:
    """Each ONNX file timed interleaved on one random input: (name -> p50 ms, the run's load average)."""
    runners = [ort_runner(path, name, "int8" if "int8" in path.name else "fp32", threads)
               for name, path in candidates.items()]
    timed = time_side_by_side(runners, iterations=iterations, warmup=warmup)
    return {stats.name: round(stats.p50_ms, 3) for stats in timed.runners}, timed.load_average


def _latency_cost(candidates: dict[int, Path], kept: int, backend: str, options: BuildOptions) -> dict[str, Any]:
    """The all-INT8 and the final candidate timed side by side (CPU only: an engine is timed by bench)."""
    if kept == 0 or backend != "onnxruntime":
        return {"note": "no layer kept" if kept == 0 else "TensorRT: the engine's latency is in bench.json"}

    threads = options.threads or usable_cores()
    p50, _ = _side_by_side_p50({"all-int8": candidates[0], "with-fallback": candidates[kept]}, threads,
                               LATENCY_ITERATIONS, warmup=2)
    return {**p50, "iterations": LATENCY_ITERATIONS, "threads": threads}

@dataclass
class SensitivityRecord:
    """What the sensitivity step measured (steps.json; sensitivity.json has every layer's scores): the frames,
    the all-INT8 baseline's agreement and mIoU with the float model, the layers most harmful first."""

    frames: int
    baseline_agreement: float
    baseline_miou: float
    ranked: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SensitivityRecord:
        return cls(frames=int(data["frames"]), baseline_agreement=float(data["baseline_agreement"]),
                   baseline_miou=float(data["baseline_miou"]), ranked=[str(n) for n in data["ranked"]])


# what of a CalibrateConfig the sensitivity pass reads (quant.calibrate.layer_sensitivity): its frames' spec, order
# and batching, the layers kept in float and the Q/DQ layout; the ranges come from ranges.json (in the key)
SENSITIVITY_PASS_FIELDS = ("input_spec", "batch_size", "seed", "frame_order", "keep_fp_layers", "concat_scales")


def sensitivity_key(config: CalibrateConfig) -> dict[str, Any]:
    """The sensitivity step's cache key, from the config the pass runs with."""
    return {name: getattr(config, name) for name in SENSITIVITY_PASS_FIELDS}


def run_sensitivity_step(runner: StepRunner, fp32_onnx: Path, calib_dir: CalibSource, options: BuildOptions,
                out: Path, done: dict[str, bool], progress: Progress | None) -> SensitivityRecord:
    """``--sensitivity`` without a fallback: sensitivity.json/.md/.png for the report."""
    config = calibrate_config(options)  # one config for the pass and its key
    key = {**_quantize_inputs(fp32_onnx, out), "calib": _calib_identity(calib_dir), **sensitivity_key(config),
           "version": __version__}

    def run() -> SensitivityRecord:
        on_progress, close = progress("sensitivity (candidates)") if progress else (None, None)
        try:
            measured, _ = layer_sensitivity(fp32_onnx, calib_dir, load_ranges(out / "ranges.json"), config,
                                            out_dir=out, on_progress=on_progress, plot=sensitivity_plot)
        finally:
            if close is not None:
                close()
        return SensitivityRecord(measured.frames, measured.baseline.agreement, measured.baseline.miou,
                                 measured.ranked())

    outcome = runner.run("sensitivity", key, [out / SENSITIVITY_JSON, out / SENSITIVITY_MD], run,
                         result_type=SensitivityRecord)
    done["sensitivity"] = outcome.skipped
    return outcome.result
