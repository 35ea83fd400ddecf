"""TensorRT's INT8 calibration cache (``calibration.cache``): the one writer and the one reader (layer 0: stdlib).

``edgeseg calibrate`` writes it (``quant.trt_cache``) and the build's entropy calibrator reads it back
(``engine.calibrator``); it lives beside ``trt_version``, whose number its header carries, so that neither
``quant`` nor ``engine`` imports the other. The format, as IInt8EntropyCalibrator2 writes and reads it
(TensorRT 8.x-10.x):

    TRT-100300-EntropyCalibration2
    images: 3c010a14
    /backbone/conv1/Conv_output_0: 3d2b1f82

The header holds ``TrtVersion.cache_number`` of the TensorRT that reads the cache (it refuses any other)
and the calibrator's name; each further line is an ONNX tensor name and the big-endian float32 bits of its
scale (amax / 127) as 8 hex digits. onnxruntime's calibration table (decimal ranges) is another format,
which TensorRT cannot read.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from .errors import ArtifactError
from .trt_version import TrtVersion

CALIBRATOR_NAME = "EntropyCalibration2"
_HEADER_RE = re.compile(r"TRT-(\d+)-(\w+)")
_LINE_RE = re.compile(r"(.+):\s*([0-9a-fA-F]{8})")


class CalibrationCache(NamedTuple):
    version_number: int  # TrtVersion.cache_number of the TensorRT it was written for
    algorithm: str  # e.g. EntropyCalibration2
    scales: dict[str, float]  # tensor name -> scale, each exactly a float32 value, in file order


def cache_header(trt_version: str | TrtVersion, algorithm: str = CALIBRATOR_NAME) -> str:
    """``"10.3.0"`` -> ``"TRT-100300-EntropyCalibration2"``; ConfigError for a TensorRT without caches."""
    return f"TRT-{TrtVersion.parse(trt_version).cache_number}-{algorithm}"


def format_calibration_cache(trt_version: str | TrtVersion, scales: Mapping[str, float], *,
                             algorithm: str = CALIBRATOR_NAME) -> bytes:
    """The cache file's bytes: the header, then one line per tensor in the mapping's order."""
    lines = [cache_header(trt_version, algorithm)]
    for name, scale in scales.items():
        if not name.strip() or name != name.strip() or "\n" in name or "\r" in name:
            raise ArtifactError("a tensor name cannot be written to a TensorRT calibration cache", found=repr(name))
        value = float(scale)
        if not (math.isfinite(value) and 0 < value <= 3.4e38):
            raise ArtifactError(f"tensor {name!r} has no valid calibration scale",
                                expected="a positive float32", found=repr(scale))
        lines.append(f"{name}: {struct.pack('>f', value).hex()}")
    return ("\n".join(lines) + "\n").encode()


def parse_calibration_cache(data: bytes, *, source: str = "calibration cache") -> CalibrationCache:
    """The cache in ``data``; ArtifactError for anything else (e.g. onnxruntime's calibration table)."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ArtifactError(f"{source} is not a TensorRT calibration cache", found="binary data") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    header = _HEADER_RE.fullmatch(lines[0][1]) if lines else None
    if header is None:
        raise ArtifactError(
            f"{source} is not a TensorRT calibration cache",
            expected="a first line like TRT-100300-EntropyCalibration2",
            found=repr(lines[0][1][:60]) if lines else "an empty file",
            fix="write it with `edgeseg calibrate` (onnxruntime's calibration table is another format), "
            "or delete it to calibrate during the build",
        )
    scales: dict[str, float] = {}
    for number, line in lines[1:]:
        match = _LINE_RE.fullmatch(line)
        if match is None:
            raise ArtifactError(f"{source} line {number} is malformed", expected="name: 8 hex digits",
                                found=repr(line[:80]))
        scales[match.group(1).strip()] = struct.unpack(">f", bytes.fromhex(match.group(2)))[0]
    return CalibrationCache(int(header.group(1)), header.group(2), scales)


def read_calibration_cache(path: str | os.PathLike[str]) -> CalibrationCache:
    """``parse_calibration_cache`` of a file; ArtifactError when it is missing."""
    target = Path(path)
    if not target.is_file():
        raise ArtifactError("calibration cache not found", expected=str(target), found="no such file")
    return parse_calibration_cache(target.read_bytes(), source=str(target))


def check_cache_version(version_number: int, trt_version: str | TrtVersion, *, source: str) -> None:
    """ArtifactError unless a cache with this header number was written for ``trt_version``."""
    version = TrtVersion.parse(trt_version)
    if version_number != version.cache_number:
        raise ArtifactError(
            f"{source} was written for another TensorRT version",
            expected=f"TRT-{version.cache_number} (TensorRT {version})",
            found=f"TRT-{version_number}",
            fix="delete the cache to calibrate again with this TensorRT, or rerun edgeseg calibrate "
            "with --trt-version set to this TensorRT",
        )
