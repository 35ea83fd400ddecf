"""Issue #23 item 8, builder side, against the fake tensorrt: a rejected timing cache is said, a Q/DQ ONNX on
TensorRT 8.x's DLA is refused before building, and the DLA messages name the devices that have one."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from helpers.fake_tensorrt import FakeBuilderConfig, FakeTimingCache, FakeTrtFactory
from helpers.tiny_onnx import conv_model, save_conv_onnx, with_metadata

from edgeseg.engine.config import BuildConfig
from edgeseg.engine.trt_builder import build_engine, load_timing_cache
from edgeseg.errors import ConfigError
from edgeseg.runtime.trt_logger import LogCapture
from edgeseg.spec import InputSpec


class MismatchedCacheConfig(FakeBuilderConfig):
    """set_timing_cache refuses a non-empty cache, as TensorRT does for another version's or GPU's cache."""

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        if cache.data and not ignore_mismatch:
            return False
        return FakeBuilderConfig.set_timing_cache(self, cache, ignore_mismatch)


class CorruptCacheConfig(FakeBuilderConfig):
    def create_timing_cache(self, data: bytes) -> Any:
        return None if data else super().create_timing_cache(data)


@pytest.mark.parametrize(("config", "why"), [(MismatchedCacheConfig, "another TensorRT version or on another GPU"),
                                             (CorruptCacheConfig, "cannot be read")])
def test_a_rejected_timing_cache_is_said_and_replaced_by_an_empty_one(tmp_path: Path, config: type,
                                                                       why: str) -> None:
    path = tmp_path / "timing.cache"
    path.write_bytes(b"from TensorRT 10.3 on an Orin")
    trt_config, log = config(), LogCapture()
    load_timing_cache(trt_config, path, log)  # type: ignore[arg-type]
    assert trt_config.timing_cache is not None and trt_config.timing_cache.data == b""  # built from scratch
    assert len(log.warnings) == 1 and str(path) in log.warnings[0] and why in log.warnings[0]
    with pytest.warns(UserWarning, match="timing cache .* was rejected"):  # no build log: a Python warning
        load_timing_cache(config(), path)  # type: ignore[arg-type]


def test_an_accepted_timing_cache_says_nothing(tmp_path: Path) -> None:
    path = tmp_path / "timing.cache"
    path.write_bytes(b"good")
    trt_config, log = FakeBuilderConfig(), LogCapture()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_timing_cache(trt_config, path, log)  # type: ignore[arg-type]
    assert log.warnings == [] and trt_config.timing_cache is not None and trt_config.timing_cache.data == b"good"


def test_the_build_reports_a_rejected_timing_cache_in_its_warnings(tmp_path: Path, fake_trt: FakeTrtFactory,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    accept = FakeBuilderConfig.set_timing_cache

    def refuse_stale(self: FakeBuilderConfig, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        return False if cache.data and not ignore_mismatch else accept(self, cache, ignore_mismatch)

    monkeypatch.setattr(FakeBuilderConfig, "set_timing_cache", refuse_stale)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"stale")
    result = build_engine(save_conv_onnx(tmp_path / "m.onnx", relu=True), BuildConfig(timing_cache=cache),
                          trt=fake_trt("10.3.0.30"), gpu=(None, None))
    assert any("timing cache" in w and "rejected" in w for w in result.warnings)
    assert cache.read_bytes() == b"+tuned"  # the fresh cache replaced the stale one


def qdq_onnx(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    onnx.save(with_metadata(conv_model(qdq=True), spec=InputSpec(32, 64), num_classes=4), str(path))
    return path


def test_a_qdq_onnx_on_the_dla_of_tensorrt_8_is_refused_before_building(tmp_path: Path,
                                                                        fake_trt: FakeTrtFactory) -> None:
    fake = fake_trt("8.5.2.2")
    with pytest.raises(ConfigError, match="DLA has no explicit quantization") as raised:
        build_engine(qdq_onnx(tmp_path / "m.int8.onnx"), BuildConfig(precision="int8", dla_core=0), trt=fake,
                     gpu=(None, None))
    assert "--int8-mode implicit" in str(raised.value) and "builder" not in fake.record  # no TensorRT work
    BuildConfig(precision="int8", dla_core=0).check_dla_quantization("10.3.0", has_qdq=True)  # 10.x: allowed
    BuildConfig(precision="int8", dla_core=0).check_dla_quantization("8.5.2", has_qdq=False)  # implicit: allowed
    BuildConfig(precision="int8").check_dla_quantization("8.5.2", has_qdq=True)  # the GPU: allowed


def test_dla_messages_say_which_devices_have_a_dla(tmp_path: Path, fake_trt: FakeTrtFactory) -> None:
    with pytest.raises(ConfigError) as raised:
        build_engine(save_conv_onnx(tmp_path / "m.onnx", relu=True), BuildConfig(dla_core=0),
                     trt=fake_trt("10.3.0.30", dla_cores=0), gpu=(None, None))
    assert "only AGX Orin with TensorRT 11.4.1+ (JetPack 7.2.2+)" in str(raised.value)
    assert "Jetson AGX/NX" not in str(raised.value)
    with pytest.raises(ConfigError, match="came back in 11.4.1, on AGX Orin only, with JetPack 7.2.2"):
        BuildConfig(dla_core=0).validate("11.0.0")
