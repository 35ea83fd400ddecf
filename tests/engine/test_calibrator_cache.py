"""The entropy calibrator's batches and its use of the native cache (format tests: tests/test_trt_cache_format.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from helpers.fake_tensorrt import make_fake_trt

from edgeseg.engine.calibrator import batches_as_float32, make_entropy_calibrator
from edgeseg.errors import ArtifactError, InputError
from edgeseg.trt_cache_format import format_calibration_cache


def test_batches_are_checked_and_made_contiguous_float32() -> None:
    good = np.arange(6, dtype=np.float64).reshape(1, 1, 2, 3)
    (out,) = list(batches_as_float32([good], (1, 1, 2, 3)))
    assert out.dtype == np.float32 and out.flags.c_contiguous
    with pytest.raises(InputError, match="batch 1"):
        list(batches_as_float32([good, np.zeros((1, 1, 3, 3))], (1, 1, 2, 3)))


FAKE_CUDA = SimpleNamespace(mem_alloc=lambda nbytes: 0, memcpy_htod=lambda device, array: None)
NO_CONTEXT = SimpleNamespace(active=contextlib.nullcontext)  # the CUDA context: tests/engine/test_calibrator_context.py


def calibrator(cache: Path, version: str) -> Any:
    return make_entropy_calibrator(make_fake_trt(version), [], input_shape=(1, 3, 2, 2), cache_path=cache,
                                   trt_version=version, cuda=FAKE_CUDA, context=NO_CONTEXT)


def test_cache_for_this_tensorrt_is_handed_to_tensorrt(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.cache"
    cache.write_bytes(format_calibration_cache("10.3.0", {"images": 0.02}))
    made = calibrator(cache, "10.3.0.30")
    assert made.read_calibration_cache() == cache.read_bytes() and made.errors == []
    assert calibrator(tmp_path / "none.cache", "10.3.0").read_calibration_cache() is None


@pytest.mark.parametrize(("content", "match"), [
    (format_calibration_cache("8.6.1", {"images": 0.02}), "another TensorRT version"),
    (b"TRT-10300-EntropyCalibration2\nimages: 3c000000\n", "another TensorRT version"),  # 10.3.0 by the 8.x rule
    (b"images 0.0 2.64\n", "not a TensorRT calibration cache"),
])
def test_bad_or_stale_cache_is_refused_before_tensorrt_calls_back(tmp_path: Path, content: bytes,
                                                                  match: str) -> None:
    cache = tmp_path / "calibration.cache"
    cache.write_bytes(content)
    with pytest.raises(ArtifactError, match=match):
        calibrator(cache, "10.3.0")


def test_cache_spoilt_during_the_build_is_kept_for_the_builder(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.cache"
    cache.write_bytes(format_calibration_cache("10.3.0", {"images": 0.02}))
    made = calibrator(cache, "10.3.0")
    cache.write_bytes(b"garbage\n")
    assert made.read_calibration_cache() is None  # nothing raised into TensorRT's C++ frames
    assert isinstance(made.errors[0], ArtifactError)  # build_engine re-raises it after the build
