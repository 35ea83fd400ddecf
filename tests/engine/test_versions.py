"""The one version switch: flags per TensorRT release, from the plan alone."""

from __future__ import annotations

import pytest

from edgeseg.engine.config import BuildConfig
from edgeseg.engine.versions import OnnxFacts, plan_build
from edgeseg.errors import ConfigError
from edgeseg.trt_version import TrtVersion  # parsing and cache numbers: tests/test_trt_version.py

FLOAT = OnnxFacts(has_qdq=False)
QDQ = OnnxFacts(has_qdq=True)
FP16_ONNX = OnnxFacts(has_fp16=True)


# (version, precision, facts) -> (network flags, builder flags, strongly typed)
CASES = [
    ("8.5.2", "fp32", FLOAT, ("EXPLICIT_BATCH",), (), False),
    ("8.5.2", "fp16", FLOAT, ("EXPLICIT_BATCH",), ("FP16",), False),
    ("8.5.2", "int8", QDQ, ("EXPLICIT_BATCH",), ("FP16", "INT8"), False),  # --high-precision fp16 (default)
    ("8.5.2", "best", QDQ, ("EXPLICIT_BATCH",), ("FP16", "INT8"), False),
    ("8.6.1", "int8", QDQ, ("EXPLICIT_BATCH",), ("FP16", "INT8"), False),
    ("8.6.1", "fp16", FLOAT, ("EXPLICIT_BATCH",), ("FP16",), False),
    ("10.0.1", "int8", QDQ, ("STRONGLY_TYPED",), (), True),
    ("10.3.0", "int8", QDQ, ("STRONGLY_TYPED",), (), True),
    ("10.3.0", "fp16", FLOAT, (), ("FP16",), False),
    ("10.3.0", "best", QDQ, (), ("FP16", "INT8"), False),
    ("10.7.0", "int8", QDQ, ("STRONGLY_TYPED",), (), True),
    ("10.13.0", "fp32", FLOAT, (), (), False),
    ("10.13.0", "int8", QDQ, ("STRONGLY_TYPED",), (), True),
    ("11.0.0", "int8", QDQ, (), (), True),
    ("11.0.0", "fp32", FLOAT, (), (), True),
    ("11.0.0", "fp16", FP16_ONNX, (), (), True),
]


@pytest.mark.parametrize(("version", "precision", "facts", "network", "builder", "strong"), CASES)
def test_flags_per_version(version: str, precision: str, facts: OnnxFacts, network: tuple[str, ...],
                           builder: tuple[str, ...], strong: bool) -> None:
    plan = plan_build(version, BuildConfig(precision=precision), facts)
    assert plan.network_flags == network
    assert plan.builder_flags == builder
    assert plan.strongly_typed is strong
    assert plan.use_calibrator is False
    version_info = TrtVersion.parse(version)
    assert ("FP16" in plan.builder_flags or "INT8" in plan.builder_flags) <= version_info.has_precision_flags


@pytest.mark.parametrize("version", ["8.5.2", "8.6.1", "10.0.1", "10.3.0", "10.7.0", "10.13.0"])
def test_implicit_int8_uses_calibrator_and_weak_typing(version: str) -> None:
    plan = plan_build(version, BuildConfig(precision="int8", int8_mode="implicit"), FLOAT)
    assert plan.use_calibrator and "INT8" in plan.builder_flags
    assert "STRONGLY_TYPED" not in plan.network_flags  # calibrators need a weakly typed network


# DLA support ended with 10.7 and came back in 11.4.1 (AGX Orin, JetPack 7.2.2+)
@pytest.mark.parametrize(("version", "dla"), [("8.5.2", True), ("8.6.1", True), ("10.0.1", True), ("10.3.0", True),
                                              ("10.7.0", True), ("10.7.9", True), ("10.8.0", False),
                                              ("10.13.0", False), ("11.0.0", False), ("11.4.0", False),
                                              ("11.4.1", True), ("11.5.0", True), ("12.0.0", True)])
def test_dla_availability(version: str, dla: bool) -> None:
    assert TrtVersion.parse(version).has_dla is dla
    # TensorRT 11 builds strongly typed: a float ONNX cannot become fp16 there, the Q/DQ one is int8
    precision, facts = ("int8", QDQ) if TrtVersion.parse(version).always_strongly_typed else ("fp16", FLOAT)
    config = BuildConfig(precision=precision, dla_core=0)
    if dla:
        plan = plan_build(version, config, facts)
        assert plan.use_dla and "GPU_FALLBACK" in plan.builder_flags
        no_fallback = plan_build(version, BuildConfig(precision=precision, dla_core=0, gpu_fallback=False), facts)
        assert "GPU_FALLBACK" not in no_fallback.builder_flags
    else:
        with pytest.raises(ConfigError, match="DLA support ended with TensorRT 10.7 and came back in 11.4.1"):
            plan_build(version, config, facts)


@pytest.mark.parametrize(("version", "implicit"), [("8.5.2", True), ("10.0.1", True), ("10.13.0", True),
                                                   ("11.0.0", False)])
def test_implicit_allowed(version: str, implicit: bool) -> None:
    assert TrtVersion.parse(version).has_calibrator is implicit


def test_version_compatible_flag() -> None:
    plan = plan_build("10.3.0", BuildConfig(precision="fp16", version_compatible=True), FLOAT)
    assert "VERSION_COMPATIBLE" in plan.builder_flags
    with pytest.raises(ConfigError, match="8.6"):
        plan_build("8.5.2", BuildConfig(version_compatible=True), FLOAT)


def test_explicit_int8_needs_qdq_onnx() -> None:
    with pytest.raises(ConfigError, match="edgeseg calibrate"):
        plan_build("10.3.0", BuildConfig(precision="int8"), FLOAT)


def test_implicit_int8_refuses_qdq_onnx() -> None:
    with pytest.raises(ConfigError, match="already has Q/DQ"):
        plan_build("8.5.2", BuildConfig(precision="int8", int8_mode="implicit"), QDQ)


def test_tensorrt11_fp16_needs_fp16_onnx_no_silent_downgrade() -> None:
    with pytest.raises(ConfigError, match="float16"):
        plan_build("11.0.0", BuildConfig(precision="fp16"), FLOAT)
    with pytest.raises(ConfigError, match="float16"):
        plan_build("11.0.0", BuildConfig(precision="fp32"), FP16_ONNX)


def test_plan_to_dict_records_decisions() -> None:
    data = plan_build("10.3.0", BuildConfig(precision="int8"), QDQ).to_dict()
    assert data == {"tensorrt": "10.3.0", "network_flags": ["STRONGLY_TYPED"], "builder_flags": [],
                    "strongly_typed": True, "calibrator": False, "dla": False, "precision": "int8"}
