"""TensorRT's native calibration cache: format, exact float32 round trip, determinism."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeseg.errors import ArtifactError, ConfigError
from edgeseg.quant.trt_cache import format_cache, read_trt_cache, trt_version_number, write_trt_cache


def test_version_number() -> None:
    assert trt_version_number("10.3.0") == 10300
    assert trt_version_number("8.6.1") == 8601
    assert trt_version_number("10.7") == 10700
    for bad in ("11.0.0", "7.2.3", "ten", "10"):
        with pytest.raises(ConfigError):
            trt_version_number(bad)


def test_layout_matches_tensorrt(tmp_path: Path) -> None:
    amax = {"/backbone/conv1/Conv_output_0": 2.5, "images": 2.64}
    path = write_trt_cache(tmp_path / "calibration.cache", amax, order=["images", "/backbone/conv1/Conv_output_0"],
                           trt_version="8.6.1")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert lines[1].startswith("images: ") and lines[2].startswith("/backbone/conv1/Conv_output_0: ")
    expected = struct.pack(">f", np.float32(2.64) / np.float32(127)).hex()
    assert lines[1] == f"images: {expected}" and len(expected) == 8


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz/_.:0123456789", min_size=1, max_size=30),
                       st.floats(1e-6, 1e6, allow_nan=False), min_size=1, max_size=20))
def test_round_trip_is_exact_float32(amax: dict[str, float]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = write_trt_cache(Path(tmp) / "c.cache", amax)
        version, scales = read_trt_cache(path)
    assert version == 10300 and set(scales) == set(amax)
    for name, value in amax.items():
        assert scales[name] == np.float32(value) / np.float32(127)
        assert scales[name].dtype == np.float32


def test_deterministic_and_order_fixed(tmp_path: Path) -> None:
    amax = {f"t{i}": float(i + 1) for i in range(10)}
    shuffled = dict(reversed(list(amax.items())))
    assert format_cache(amax) == format_cache(shuffled)
    assert format_cache(amax, order=["t3", "t1"]).splitlines()[1:3] == [
        f"t3: {struct.pack('>f', np.float32(4.0) / np.float32(127)).hex()}",
        f"t1: {struct.pack('>f', np.float32(2.0) / np.float32(127)).hex()}"]


def test_onnxruntime_table_and_garbage_are_refused(tmp_path: Path) -> None:
    (tmp_path / "ort.cache").write_text("images 0.0 2.64\n")
    with pytest.raises(ArtifactError, match="not a TensorRT calibration cache"):
        read_trt_cache(tmp_path / "ort.cache")
    (tmp_path / "bad.cache").write_text("TRT-10300-EntropyCalibration2\nimages: 12zz\n")
    with pytest.raises(ArtifactError, match="line 2"):
        read_trt_cache(tmp_path / "bad.cache")
    with pytest.raises(ArtifactError):
        write_trt_cache(tmp_path / "x.cache", {"a\nb": 1.0})
