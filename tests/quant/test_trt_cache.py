"""calibration.cache from ranges: amax / 127 in float32, line order, determinism (format: test_trt_cache_format.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeseg.errors import ArtifactError, ConfigError
from edgeseg.quant.trt_cache import DEFAULT_TRT_VERSION, cache_scales, write_trt_cache
from edgeseg.trt_cache_format import read_calibration_cache


def test_layout_matches_tensorrt(tmp_path: Path) -> None:
    amax = {"/backbone/conv1/Conv_output_0": 2.5, "images": 2.64}
    path = write_trt_cache(tmp_path / "calibration.cache", amax, order=["images", "/backbone/conv1/Conv_output_0"],
                           trt_version="8.6.1")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert lines[1].startswith("images: ") and lines[2].startswith("/backbone/conv1/Conv_output_0: ")
    expected = struct.pack(">f", np.float32(2.64) / np.float32(127)).hex()
    assert lines[1] == f"images: {expected}" and len(expected) == 8


def test_default_is_tensorrt_10_3_header(tmp_path: Path) -> None:
    assert DEFAULT_TRT_VERSION == "10.3.0"
    path = write_trt_cache(tmp_path / "c.cache", {"images": 1.0})
    assert path.read_text().splitlines()[0] == "TRT-100300-EntropyCalibration2"
    with pytest.raises(ConfigError, match="TensorRT 11"):
        write_trt_cache(tmp_path / "d.cache", {"images": 1.0}, trt_version="11.0.0")
    assert not (tmp_path / "d.cache").exists()


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz/_.:0123456789", min_size=1, max_size=30),
                       st.floats(1e-6, 1e6, allow_nan=False), min_size=1, max_size=20))
def test_round_trip_is_exact_float32(amax: dict[str, float]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = write_trt_cache(Path(tmp) / "c.cache", amax)
        cache = read_calibration_cache(path)
    assert cache.version_number == 100300 and set(cache.scales) == set(amax)
    for name, value in amax.items():
        assert cache.scales[name] == np.float32(value) / np.float32(127)


def test_deterministic_and_order_fixed() -> None:
    amax = {f"t{i}": float(i + 1) for i in range(10)}
    shuffled = dict(reversed(list(amax.items())))
    assert list(cache_scales(amax)) == list(cache_scales(shuffled)) == sorted(amax)
    assert cache_scales(amax) == cache_scales(shuffled)
    ordered = cache_scales(amax, order=["t3", "missing", "t1", "t3"])
    assert list(ordered)[:3] == ["t3", "t1", "t0"]  # order first, unknown names dropped, then the rest sorted
    assert ordered["t3"] == np.float32(4.0) / np.float32(127)


def test_unwritable_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError):
        write_trt_cache(tmp_path / "x.cache", {"a\nb": 1.0})
    assert not (tmp_path / "x.cache").exists()
