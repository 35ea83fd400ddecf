"""Build options and their up-front validation (layer 2, pure Python).

``BuildConfig.validate(trt_version)`` rejects every combination the running TensorRT
cannot deliver before any work starts, with a ConfigError that says what to run
instead. Facts that need the ONNX (Q/DQ present, fp16 tensors) are checked in
``versions.plan_build`` once the model is read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..trt_version import DLA_RELEASES

if TYPE_CHECKING:
    from .versions import TrtVersion

# Which Jetsons have DLA cores, by TensorRT release: JetPack 5/6 (TensorRT <= 10.7) on AGX Xavier, Xavier NX,
# AGX Orin and Orin NX (not Orin Nano); TensorRT 11.4.1+ only on AGX Orin with JetPack 7.2.2+.
DLA_DEVICES = ("Jetson AGX Xavier, Xavier NX, AGX Orin or Orin NX with TensorRT <= 10.7; "
               "only AGX Orin with TensorRT 11.4.1+ (JetPack 7.2.2+)")
PRECISIONS = ("fp32", "fp16", "int8", "best")
INT8_MODES = ("explicit", "implicit")
HIGH_PRECISIONS = ("fp16", "fp32")  # the precision of an INT8 build's float layers (quant.fp16_regions)


@dataclass(frozen=True)
class BuildConfig:
    precision: str = "fp16"
    workspace_mib: int = 1024
    timing_cache: Path | None = None
    builder_optimization_level: int | None = None  # None: TensorRT's default (3)
    dla_core: int | None = None
    gpu_fallback: bool = True
    version_compatible: bool = False
    int8_mode: str = "explicit"  # explicit: Q/DQ ONNX; implicit: legacy calibrator (TensorRT <= 10)
    calibration_cache: Path | None = None
    verbose: bool = False
    high_precision: str = "fp16"  # INT8 builds: fp16 sets FP16 beside INT8 where TensorRT takes precision flags

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("timing_cache", "calibration_cache"):
            if data[key] is not None:
                data[key] = str(data[key])
        return data

    def cache_key(self) -> dict[str, Any]:
        """What of this config changes the engine it builds (the build's engine step key): every field but where
        the timing and calibration caches live and how much the builder logs."""
        data = self.to_dict()
        for name in ("timing_cache", "calibration_cache", "verbose"):
            del data[name]
        return data

    def validate(self, trt_version: str | TrtVersion) -> None:
        from .versions import TrtVersion

        version = TrtVersion.parse(trt_version)
        self._validate_values()
        int8 = self.precision in ("int8", "best")
        if int8 and self.int8_mode == "implicit" and not version.has_calibrator:
            raise ConfigError(
                f"TensorRT {version} has no calibrators: implicit INT8 is not available",
                expected="explicit quantization (a Q/DQ ONNX)",
                found="--int8-mode implicit",
                fix="use the Q/DQ model: edgeseg calibrate ... then build model.int8.onnx",
            )
        if self.precision == "best" and version.always_strongly_typed:
            raise ConfigError(
                f"TensorRT {version} builds strongly typed networks and has no 'best' precision mode",
                expected="fp32, fp16 (an fp16 ONNX) or int8 (a Q/DQ ONNX)",
                found="--precision best",
                fix="build --precision int8 with model.int8.onnx, and compare with an fp16 build",
            )
        if self.dla_core is not None:
            if not version.has_dla:
                raise ConfigError(
                    f"TensorRT {version} has no DLA support (DLA support ended with TensorRT 10.7 and came back "
                    "in 11.4.1, on AGX Orin only, with JetPack 7.2.2+)",
                    expected=DLA_RELEASES,
                    found=f"--dla-core {self.dla_core} with TensorRT {version}",
                    fix="drop --dla-core to build for the GPU, or build on JetPack 5/6 (TensorRT <= 10.7) or "
                        "JetPack 7.2.2+ on AGX Orin (TensorRT >= 11.4.1)",
                )
            if self.precision == "fp32":
                raise ConfigError(
                    "the DLA runs fp16 and int8 only",
                    found="--precision fp32 with --dla-core",
                    fix="pass --precision fp16 or int8 with --dla-core, or drop --dla-core",
                )
        if self.version_compatible and not version.has_version_compatible:
            raise ConfigError(
                f"version-compatible engines need TensorRT 8.6 or later; this is {version}",
                found="--version-compatible",
                fix="drop --version-compatible (the engine then runs on this exact TensorRT version only)",
            )
        if self.builder_optimization_level is not None and not version.has_optimization_level:
            raise ConfigError(
                f"TensorRT {version} has no builder optimization level (added in 8.6)",
                found=f"--optimization-level {self.builder_optimization_level}",
                fix="drop --optimization-level",
            )
        if self.calibration_cache is not None and not (int8 and self.int8_mode == "implicit"):
            raise ConfigError(
                "a calibration cache is only used by implicit INT8 builds",
                found=f"--calibration-cache with --precision {self.precision} --int8-mode {self.int8_mode}",
                fix="drop --calibration-cache (explicit INT8 takes its scales from the Q/DQ ONNX)",
            )

    def check_dla_quantization(self, trt_version: str | TrtVersion, *, has_qdq: bool) -> None:
        """A Q/DQ (explicitly quantized) ONNX on the DLA needs TensorRT >= 10: the 8.x DLA has no explicit
        quantization, so TensorRT 8.5 would put every layer on the GPU (GPU fallback) or fail, without saying so
        before the build. Refused up front. (From TensorRT's release notes; unverified on a Jetson.)"""
        from .versions import TrtVersion

        version = TrtVersion.parse(trt_version)
        if self.dla_core is not None and has_qdq and version.major < 10:
            raise ConfigError(
                f"TensorRT {version}'s DLA has no explicit quantization: a Q/DQ ONNX would run on the GPU, "
                "not the DLA",
                expected="a float ONNX with --int8-mode implicit (calibration cache) for an INT8 DLA engine on 8.x",
                found=f"a Q/DQ ONNX with --dla-core {self.dla_core} on TensorRT {version}",
                fix="build the float model.onnx with --int8-mode implicit --calibration-cache calibration.cache "
                    "(edgeseg calibrate writes it), or drop --dla-core to build the Q/DQ model for the GPU",
            )

    def _validate_values(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError("unknown precision", expected=" | ".join(PRECISIONS), found=repr(self.precision))
        if self.int8_mode not in INT8_MODES:
            raise ConfigError("unknown INT8 mode", expected=" | ".join(INT8_MODES), found=repr(self.int8_mode))
        if self.high_precision not in HIGH_PRECISIONS:
            raise ConfigError("unknown --high-precision", expected=" | ".join(HIGH_PRECISIONS),
                              found=repr(self.high_precision))
        if isinstance(self.workspace_mib, bool) or not isinstance(self.workspace_mib, int) or self.workspace_mib < 1:
            raise ConfigError("the workspace must be a positive number of MiB", found=repr(self.workspace_mib),
                              fix="pass e.g. --workspace 1024")
        level = self.builder_optimization_level
        if level is not None and (isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 5):
            raise ConfigError("builder optimization level out of range", expected="0..5", found=repr(level))
        core = self.dla_core
        if core is not None and (isinstance(core, bool) or not isinstance(core, int) or core < 0):
            raise ConfigError("DLA core must be a non-negative integer", found=repr(core), fix="pass --dla-core 0")
