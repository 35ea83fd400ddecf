"""The one TensorRT version switch (layer 2, pure Python: no tensorrt import).

``plan_build`` maps (TensorRT version, BuildConfig, facts about the ONNX) to a
``BuildPlan``: which network-creation flags, which builder flags, whether a calibrator
is attached. ``trt_builder`` applies the plan by name and never branches on versions
itself, so every version difference is tested here on the CPU. What each release has
(EXPLICIT_BATCH, STRONGLY_TYPED, precision flags, calibrators, DLA, ...) is asked of
``TrtVersion`` (``edgeseg.trt_version``), the one owner of TensorRT versions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..trt_version import TrtVersion  # also imported from here by engine/__init__.py and config.py

if TYPE_CHECKING:
    from .config import BuildConfig


@dataclass(frozen=True)
class OnnxFacts:
    """What the builder needs to know about the ONNX before choosing flags."""

    has_qdq: bool = False
    has_fp16: bool = False  # float16 inputs/initializers: a network typed fp16 by itself


@dataclass(frozen=True)
class BuildPlan:
    version: TrtVersion
    network_flags: tuple[str, ...] = ()  # NetworkDefinitionCreationFlag member names
    builder_flags: tuple[str, ...] = ()  # BuilderFlag member names
    strongly_typed: bool = False
    use_calibrator: bool = False
    use_dla: bool = False
    precision: str = "fp32"
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        return {
            "tensorrt": str(self.version),
            "network_flags": list(self.network_flags),
            "builder_flags": list(self.builder_flags),
            "strongly_typed": self.strongly_typed,
            "calibrator": self.use_calibrator,
            "dla": self.use_dla,
            "precision": self.precision,
        }


def plan_build(trt_version: str | TrtVersion, config: BuildConfig, facts: OnnxFacts) -> BuildPlan:
    """Decide every version-dependent flag; ConfigError for what this TensorRT cannot do."""
    version = TrtVersion.parse(trt_version)
    config.validate(version)
    precision = config.precision
    explicit_int8 = precision in ("int8", "best") and config.int8_mode == "explicit"

    if explicit_int8 and not facts.has_qdq:
        raise ConfigError(
            f"{precision} with explicit quantization needs a Q/DQ ONNX, but this ONNX has no "
            "QuantizeLinear/DequantizeLinear nodes",
            expected="model.int8.onnx written by `edgeseg calibrate`",
            found="a float ONNX",
            fix="run `edgeseg calibrate ...` and build model.int8.onnx, or pass --int8-mode implicit (TensorRT <= 10)",
        )
    if config.int8_mode == "implicit" and precision in ("int8", "best") and facts.has_qdq:
        raise ConfigError(
            "implicit INT8 calibration cannot be applied to an ONNX that already has Q/DQ nodes",
            expected="the float model.onnx for --int8-mode implicit",
            found="an ONNX with QuantizeLinear/DequantizeLinear",
            fix="build the Q/DQ ONNX with --int8-mode explicit (the default)",
        )

    network: list[str] = []
    builder: list[str] = []
    notes: list[str] = []
    if version.needs_explicit_batch:
        network.append("EXPLICIT_BATCH")

    strongly_typed = version.always_strongly_typed
    if version.always_strongly_typed:
        # TensorRT 11: types come from the ONNX, there is nothing to switch on.
        if precision == "fp16" and not facts.has_fp16:
            raise ConfigError(
                "TensorRT 11 builds strongly typed networks: fp16 needs an ONNX whose tensors are float16",
                expected="an fp16 ONNX",
                found="a float32 ONNX",
                fix="export the model in float16 (e.g. onnxconverter-common's float16 conversion, keeping "
                "inputs/outputs float32) and build that, or build --precision fp32 / int8 with the Q/DQ model",
            )
        if precision == "fp32" and facts.has_fp16:
            raise ConfigError(
                "fp32 was asked but the ONNX carries float16 tensors, which TensorRT 11 keeps as float16",
                fix="build --precision fp16, or export the model in float32",
            )
        notes.append("strongly typed network: precisions follow the ONNX")
    elif explicit_int8 and precision == "int8" and version.has_strongly_typed_flag:
        network.append("STRONGLY_TYPED")
        strongly_typed = True
        notes.append("Q/DQ network built strongly typed: no precision flags")
    else:
        if explicit_int8 and facts.has_qdq and facts.has_fp16 and not version.has_strongly_typed_flag:
            raise ConfigError(
                f"this Q/DQ ONNX has float16 regions (opset 19), written for strongly typed TensorRT >= 10; "
                f"TensorRT {version} does not build it",
                expected="a Q/DQ ONNX with float32 regions (TensorRT 8.x: the FP16 flag runs them in FP16)",
                found="float16 tensors beside QuantizeLinear/DequantizeLinear",
                fix=f"write the Q/DQ ONNX with float32 regions: edgeseg calibrate --trt-version {version} (or "
                    "--high-precision fp32), or edgeseg build --high-precision fp32 on the workstation; this builder "
                    "still runs those layers in FP16 (FP16 flag beside INT8)",
            )
        if precision == "fp16":
            builder.append("FP16")
        elif precision == "int8":
            # 8.x Q/DQ or implicit calibration; the layers outside INT8 run FP16 unless --high-precision fp32
            builder.extend(["FP16", "INT8"] if config.high_precision == "fp16" else ["INT8"])
        elif precision == "best":
            builder.extend(["FP16", "INT8"])

    use_calibrator = precision in ("int8", "best") and config.int8_mode == "implicit"
    if config.dla_core is not None and config.gpu_fallback:
        builder.append("GPU_FALLBACK")
    if config.version_compatible:
        builder.append("VERSION_COMPATIBLE")
        notes.append("version compatible: runs on later TensorRT releases of the same major version")
    return BuildPlan(
        version=version,
        network_flags=tuple(network),
        builder_flags=tuple(builder),
        strongly_typed=strongly_typed,
        use_calibrator=use_calibrator,
        use_dla=config.dla_core is not None,
        precision=precision,
        notes=tuple(notes),
    )
