"""The options of ``edgeseg build`` and the configs derived from them (layer 4; no numpy, no torch).

Kept apart from ``build.py`` so the build's steps (``build_steps``, ``int8_steps``, ``build_data``,
``build_checks``) import their options without importing the orchestration that imports them: no circle.
The accuracy gates' defaults live here, once: ``BuildOptions``, ``ValidationConfig`` and the CLI's
``--min-agreement``/``--max-miou-drop`` (commands/option_groups.py) all take them from here.

``BuildOptions`` is the flat shape the CLI fills. A step builds the config it runs with from it once and
derives its cache key from that same config or argument set (``int8_steps.calibration_key`` from the
``CalibrateConfig``; ``bench.bench_key`` from ``plan_bench``'s arguments), so what a step runs with and what
its key holds cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.datasets import DatasetSpec
from ..engine.config import PRECISIONS
from ..errors import UsageError
from ..quant.calib_data import CalibSource
from ..quant.fallback import DEFAULT_CAP, check_fallback
from ..quant.fp16_regions import DEFAULT_HIGH_PRECISION, HIGH_PRECISIONS
from ..quant.ranges import DEFAULT_METHOD, METHODS
from ..runtime.backend import backend_choices

DEFAULT_MIN_AGREEMENT = 0.99  # gate: fraction of pixels whose argmax matches PyTorch
DEFAULT_MAX_MIOU_DROP = 0.5  # gate: mIoU drop against ground truth, in points
BACKENDS = backend_choices(builds=True)  # at import; the registry (runtime/backend.py) decides at check time
# Synthetic seeds: 0 trains the demo model, 1 picks its best epoch, 2 calibrates; 3 is never seen by either.
SYNTH_CALIB_SEED, SYNTH_VAL_SEED = 2, 3
DEFAULT_CALIB_METHOD = DEFAULT_METHOD


@dataclass
class ValidationConfig:
    max_images: int | None = None
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    max_miou_drop: float = DEFAULT_MAX_MIOU_DROP  # mIoU points against ground truth
    worst_k: int = 4
    threads: int | None = None

    def cache_key(self) -> dict[str, object]:
        """What of this config changes a validation's verdict or files (the build's validate step key); the
        thread count changes neither."""
        return {"min_agreement": self.min_agreement, "max_miou_drop": self.max_miou_drop,
                "max_images": self.max_images, "worst_k": self.worst_k}

    def check(self) -> None:
        if not 0.0 <= self.min_agreement <= 1.0:
            raise UsageError("--min-agreement must be a fraction", expected="0 to 1, e.g. 0.99",
                             found=str(self.min_agreement))
        if self.max_miou_drop < 0:
            raise UsageError("--max-miou-drop is in mIoU points and cannot be negative", expected=">= 0, e.g. 0.5",
                             found=str(self.max_miou_drop))
        if self.max_images is not None and self.max_images < 1:
            raise UsageError("--val-images must be at least 1", found=str(self.max_images))
        if self.worst_k < 0:
            raise UsageError("the number of overlays cannot be negative", found=str(self.worst_k))


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
    backend: str = "auto"  # auto or a registered backend that builds (runtime/backend.py)
    out: Path | None = None
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    max_miou_drop: float = DEFAULT_MAX_MIOU_DROP
    force: bool = False
    threads: int | None = None
    bench_iterations: int = 20
    demo: bool = False  # filled in by resolve_options

    def validation_config(self) -> ValidationConfig:
        """The ValidationConfig this build validates with (its validate, fallback and --precision best steps):
        the one place the gates and thread count are copied from the options."""
        return ValidationConfig(min_agreement=self.min_agreement, max_miou_drop=self.max_miou_drop,
                                threads=self.threads)

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
        self.validation_config().check()
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
        if self.backend not in backend_choices(builds=True):
            raise UsageError("unknown backend", expected=" | ".join(backend_choices(builds=True)), found=self.backend)
        if self.backend == "openvino" and self.fallback == "auto":  # the search validates ORT's or TensorRT's file
            raise UsageError("--fallback auto searches ONNX Runtime's or TensorRT's INT8 file, not yet OpenVINO's",
                             found="--backend openvino --fallback auto",
                             fix="drop --fallback auto (OpenVINO runs the Q/DQ model.int8.onnx as calibrated), or use "
                                 "--backend onnxruntime")
        if self.onnx is not None and not Path(self.onnx).is_file():
            raise UsageError(f"--onnx {self.onnx} does not exist", fix="pass the model.onnx written by edgeseg export")
