"""TensorRT's native calibration cache: format, parse, version check, bad files."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgeseg.engine.calibrator import (
    batches_as_float32,
    check_cache_version,
    format_calibration_cache,
    parse_calibration_cache,
)
from edgeseg.errors import ArtifactError, InputError


def test_format_matches_the_documented_layout() -> None:
    data = format_calibration_cache("8.6.1", {"images": 0.0078125, "/backbone/conv1/Conv_output_0": 0.04})
    lines = data.decode().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert lines[1] == "images: 3c000000"  # 2**-7 as big-endian float32
    assert lines[2] == f"/backbone/conv1/Conv_output_0: {struct.pack('>f', 0.04).hex()}"


def test_round_trip() -> None:
    scales = {"images": 0.02, "a:b/c": 1.5e-3, "logits": 0.3}
    number, algorithm, parsed = parse_calibration_cache(format_calibration_cache("10.3.0", scales))
    assert number == 10300 and algorithm == "EntropyCalibration2"
    assert parsed.keys() == scales.keys()
    np.testing.assert_allclose(list(parsed.values()), list(scales.values()), rtol=1e-7)


@pytest.mark.parametrize("text", [b"", b"images 0.1\n", b"TRT-abc-Entropy\n", b"\xff\xfe",
                                  b"TRT-8601-EntropyCalibration2\nimages: 0.25\n"])
def test_bad_caches_are_artifact_errors(text: bytes) -> None:
    with pytest.raises(ArtifactError):
        parse_calibration_cache(text)


def test_cache_from_another_version_is_refused() -> None:
    check_cache_version(8601, "8.6.1.6", source="c")
    with pytest.raises(ArtifactError, match="another TensorRT version"):
        check_cache_version(8601, "10.3.0", source="c")


def test_batches_are_checked_and_made_contiguous_float32() -> None:
    good = np.arange(6, dtype=np.float64).reshape(1, 1, 2, 3)
    (out,) = list(batches_as_float32([good], (1, 1, 2, 3)))
    assert out.dtype == np.float32 and out.flags.c_contiguous
    with pytest.raises(InputError, match="batch 1"):
        list(batches_as_float32([good, np.zeros((1, 1, 3, 3))], (1, 1, 2, 3)))
