"""TensorRT's native calibration cache: the one writer and reader, exact float32, version check, bad files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeseg.errors import ArtifactError, ConfigError
from edgeseg.trt_cache_format import (
    cache_header,
    check_cache_version,
    format_calibration_cache,
    parse_calibration_cache,
    read_calibration_cache,
)


@pytest.mark.parametrize(("version", "header"), [("8.5.2", "TRT-8502-EntropyCalibration2"),
                                                 ("8.6.1", "TRT-8601-EntropyCalibration2"),
                                                 ("10.3.0", "TRT-100300-EntropyCalibration2"),
                                                 ("10.13.0", "TRT-101300-EntropyCalibration2")])
def test_header_per_tensorrt_version(version: str, header: str) -> None:
    assert cache_header(version) == header
    assert format_calibration_cache(version, {"images": 0.5}).decode().splitlines()[0] == header


def test_no_cache_for_tensorrt_11() -> None:
    with pytest.raises(ConfigError, match="TensorRT 11"):
        format_calibration_cache("11.0.0", {"images": 0.5})


def test_layout_matches_tensorrt() -> None:
    data = format_calibration_cache("8.6.1", {"images": 0.0078125, "/backbone/conv1/Conv_output_0": 0.04})
    assert data.decode().splitlines() == [
        "TRT-8601-EntropyCalibration2",
        "images: 3c000000",  # 2**-7 as big-endian float32
        f"/backbone/conv1/Conv_output_0: {struct.pack('>f', 0.04).hex()}",
    ]
    assert data.endswith(b"\n")


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz/_.:0123456789", min_size=1, max_size=30),
                       st.floats(1e-30, 1e30, allow_nan=False), min_size=1, max_size=20))
def test_round_trip_is_exact_float32_in_order(scales: dict[str, float]) -> None:
    cache = parse_calibration_cache(format_calibration_cache("10.3.0", scales))
    assert cache.version_number == 100300 and cache.algorithm == "EntropyCalibration2"
    assert list(cache.scales) == list(scales)  # file order is the mapping's order
    for name, value in scales.items():
        assert cache.scales[name] == np.float32(value)


def test_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "calibration.cache"
    path.write_bytes(format_calibration_cache("10.13.0", {"images": 0.25}))
    assert read_calibration_cache(path) == (101300, "EntropyCalibration2", {"images": 0.25})
    with pytest.raises(ArtifactError, match="not found"):
        read_calibration_cache(tmp_path / "missing.cache")


@pytest.mark.parametrize("data", [b"", b"images 0.0 2.64\n", b"TRT-abc-Entropy\n", b"\xff\xfe",
                                  b"TRT-8601-EntropyCalibration2\nimages: 0.25\n",
                                  b"TRT-100300-EntropyCalibration2\nimages: 12zz\n"])
def test_bad_caches_are_artifact_errors(data: bytes) -> None:
    with pytest.raises(ArtifactError):
        parse_calibration_cache(data)


def test_errors_say_where() -> None:
    with pytest.raises(ArtifactError, match="not a TensorRT calibration cache"):
        parse_calibration_cache(b"images 0.0 2.64\n", source="ort.cache")  # onnxruntime's table
    with pytest.raises(ArtifactError, match="bad.cache line 3"):
        parse_calibration_cache(b"TRT-100300-EntropyCalibration2\nimages: 3c000000\nx: 12zz\n", source="bad.cache")


@pytest.mark.parametrize(("name", "scale"), [("a\nb", 1.0), ("", 1.0), (" padded", 1.0), ("x", 0.0),
                                             ("x", float("nan")), ("x", 1e39)])
def test_unwritable_entries_are_refused(name: str, scale: float) -> None:
    with pytest.raises(ArtifactError):
        format_calibration_cache("10.3.0", {name: scale})


def test_cache_from_another_version_is_refused() -> None:
    check_cache_version(8601, "8.6.1.6", source="c")
    check_cache_version(100300, "10.3.0.30", source="c")
    with pytest.raises(ArtifactError, match="another TensorRT version") as info:
        check_cache_version(8601, "10.3.0", source="c")
    assert "TRT-100300" in str(info.value)
    with pytest.raises(ArtifactError, match="another TensorRT version"):
        check_cache_version(10300, "10.3.0", source="c")  # the 8.x formula applied to 10.3.0
