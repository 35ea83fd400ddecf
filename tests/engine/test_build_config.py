"""BuildConfig.validate: every impossible combination is refused up front, with a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeseg.engine.config import BuildConfig
from edgeseg.errors import ConfigError

VERSIONS = ["8.5.2", "8.6.1", "10.0.1", "10.3.0", "10.7.0", "10.13.0", "11.0.0"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_plain_configs_are_valid_everywhere(version: str, precision: str) -> None:
    BuildConfig(precision=precision).validate(version)


@pytest.mark.parametrize(
    ("options", "version", "message"),
    [
        ({"precision": "int8", "int8_mode": "implicit"}, "11.0.0", "edgeseg calibrate"),
        ({"precision": "best", "int8_mode": "implicit"}, "11.0.0", "no calibrators"),
        ({"precision": "best"}, "11.0.0", "no 'best'"),
        ({"precision": "fp16", "dla_core": 0}, "10.8.0", "DLA support ended with TensorRT 10.7"),
        ({"precision": "int8", "dla_core": 1}, "11.0.0", "DLA"),
        ({"precision": "int8", "dla_core": 0}, "11.4.0", "or 11.4.1 or later (AGX Orin, JetPack 7.2.2+)"),
        ({"precision": "fp32", "dla_core": 0}, "8.5.2", "fp16 and int8 only"),
        ({"version_compatible": True}, "8.5.2", "8.6 or later"),
        ({"builder_optimization_level": 4}, "8.5.2", "optimization level"),
        ({"precision": "fp16", "calibration_cache": Path("c.cache")}, "10.3.0", "implicit INT8"),
        ({"precision": "int8", "calibration_cache": Path("c.cache")}, "10.3.0", "implicit INT8"),
        ({"precision": "fp8"}, "10.3.0", "unknown precision"),
        ({"int8_mode": "magic"}, "10.3.0", "unknown INT8 mode"),
        ({"workspace_mib": 0}, "10.3.0", "positive"),
        ({"workspace_mib": 1.5}, "10.3.0", "positive"),
        ({"builder_optimization_level": 6}, "10.3.0", "0..5"),
        ({"builder_optimization_level": -1}, "10.3.0", "0..5"),
        ({"dla_core": -1}, "10.3.0", "non-negative"),
        ({"dla_core": True}, "10.3.0", "non-negative"),
    ],
)
def test_impossible_combinations_raise(options: dict[str, object], version: str, message: str) -> None:
    config = BuildConfig(**options)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        config.validate(version)
    text = str(info.value)
    assert message in text
    assert "fix:" in text or "expected:" in text  # every refusal says what to do or what is allowed


@pytest.mark.parametrize(
    ("options", "version"),
    [
        ({"precision": "int8", "int8_mode": "implicit"}, "8.5.2"),
        ({"precision": "int8", "int8_mode": "implicit", "calibration_cache": Path("c")}, "10.7.0"),
        ({"precision": "fp16", "dla_core": 0}, "10.7.0"),
        ({"precision": "int8", "dla_core": 1}, "11.4.1"),
        ({"precision": "int8", "dla_core": 1, "gpu_fallback": False}, "8.5.2"),
        ({"version_compatible": True}, "8.6.1"),
        ({"version_compatible": True}, "11.0.0"),
        ({"builder_optimization_level": 0}, "8.6.1"),
        ({"builder_optimization_level": 5}, "11.0.0"),
        ({"precision": "best"}, "10.13.0"),
    ],
)
def test_possible_combinations_pass(options: dict[str, object], version: str) -> None:
    BuildConfig(**options).validate(version)  # type: ignore[arg-type]


def test_to_dict_is_json_friendly() -> None:
    data = BuildConfig(timing_cache=Path("/tmp/t.cache")).to_dict()
    assert data["timing_cache"] == "/tmp/t.cache" and data["calibration_cache"] is None
    assert data["precision"] == "fp16"
