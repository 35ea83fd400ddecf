"""build_engine with the process-wide TensorRT logger and version-compatible engines (fake tensorrt).

TensorRT keeps the first logger it is given (the fake does too): a second build in the same process must
still report its own errors and warnings. A version-compatible engine embeds host code: the build's own
inspection must allow it before deserialising, or the build fails right after TensorRT built the engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.fake_tensorrt import VC_MARKER, FakeTrtFactory
from helpers.tiny_onnx import save_conv_onnx

from edgeseg.engine.config import BuildConfig
from edgeseg.engine.trt_builder import build_engine
from edgeseg.errors import ArtifactError


def test_second_failed_build_still_reports_its_errors(tmp_path: Path, fake_trt: FakeTrtFactory) -> None:
    fake = fake_trt(build_ok=False)
    onnx = save_conv_onnx(tmp_path / "m.onnx", relu=True)
    for attempt in (1, 2):
        with pytest.raises(ArtifactError) as info:
            build_engine(onnx, BuildConfig(), trt=fake, gpu=(None, None))
        assert "out of workspace for tactic 7" in str(info.value), attempt
        assert str(info.value).count("out of workspace") == 1, attempt  # not the first build's error too
    loggers = fake.record["loggers"]
    assert len(loggers) == 4 and all(logger is loggers[0] for logger in loggers)  # Builder + parser, twice


def test_second_build_still_gets_its_warnings(tmp_path: Path, fake_trt: FakeTrtFactory) -> None:
    fake = fake_trt()
    onnx = save_conv_onnx(tmp_path / "m.onnx", relu=True)
    first = build_engine(onnx, BuildConfig(), trt=fake, gpu=(None, None))
    second = build_engine(onnx, BuildConfig(), trt=fake, gpu=(None, None))
    assert first.warnings == second.warnings == ["weights are fp32"]


def test_version_compatible_build_inspects_its_engine(tmp_path: Path, fake_trt: FakeTrtFactory) -> None:
    fake = fake_trt("10.3.0.30")
    result = build_engine(save_conv_onnx(tmp_path / "m.onnx", relu=True), BuildConfig(version_compatible=True),
                          trt=fake, gpu=("Orin", "8.7"))
    assert result.engine_bytes.endswith(VC_MARKER) and fake.record["deserialised"] == result.engine_bytes
    assert result.manifest.build["version_compatible"] is True
    assert result.layers is not None and result.layers["num_layers"] == 2
    assert fake.record["events"] == ["engine", "runtime"]  # the inspection's engine freed before its runtime


def test_plain_build_does_not_allow_host_code(tmp_path: Path, fake_trt: FakeTrtFactory) -> None:
    fake = fake_trt("8.6.1")
    seen: list[bool] = []
    runtime_class = fake.Runtime

    class Spy(runtime_class):  # type: ignore[misc,valid-type]
        __slots__ = ()

        def deserialize_cuda_engine(self, data: bytes):  # type: ignore[no-untyped-def]
            seen.append(self.engine_host_code_allowed)
            return super().deserialize_cuda_engine(data)

    fake.Runtime = Spy
    build_engine(save_conv_onnx(tmp_path / "m.onnx", relu=True), BuildConfig(), trt=fake, gpu=(None, None))
    build_engine(tmp_path / "m.onnx", BuildConfig(version_compatible=True), trt=fake, gpu=(None, None))
    assert seen == [False, True]
