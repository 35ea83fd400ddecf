"""TensorRT's native calibration cache (``calibration.cache``) (layer 2, stdlib + numpy).

Format (what IInt8EntropyCalibrator2 writes and reads back, TensorRT <= 10):

    TRT-10300-EntropyCalibration2
    images: 3c010a14
    /backbone/conv1/Conv_output_0: 3d2b1f82

The header number is major*1000 + minor*100 + patch of the TensorRT that will read it;
each line is an ONNX tensor name and the big-endian float32 bit pattern of its scale
(amax / 127) as 8 hex digits. This is not onnxruntime's ``write_calibration_table``
format (decimal ranges), which TensorRT cannot read.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ConfigError
from ..io import atomic_write_text
from .qdq_trt import activation_scale

DEFAULT_TRT_VERSION = "10.3.0"
CALIBRATOR_NAME = "EntropyCalibration2"
_HEADER_RE = re.compile(r"^TRT-(\d+)-(\w+)$")
_LINE_RE = re.compile(r"^(.+): ([0-9a-fA-F]{8})$")


def trt_version_number(version: str) -> int:
    """``"10.3.0"`` -> 10300 (major*1000 + minor*100 + patch), as in the cache header."""
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)*", str(version).strip())
    if not match:
        raise ConfigError("cannot read the TensorRT version", expected="MAJOR.MINOR[.PATCH], e.g. 10.3.0",
                          found=repr(version))
    major, minor, patch = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    if major < 8 or major >= 11:
        raise ConfigError(
            "TensorRT calibration caches exist only for TensorRT 8.x-10.x (implicit INT8 was removed in 11)",
            expected="a version from 8.5 to 10.x", found=str(version),
            fix="use model.int8.onnx (explicit Q/DQ) with TensorRT 11",
        )
    if minor > 9 or patch > 99:
        raise ConfigError("TensorRT version out of range for the cache header", found=str(version))
    return major * 1000 + minor * 100 + patch


def scale_hex(amax: float) -> str:
    """8 hex digits: the big-endian float32 bits of amax / 127."""
    return struct.pack(">f", activation_scale(amax)).hex()


def format_cache(amax: Mapping[str, float], *, order: Sequence[str] | None = None,
                 trt_version: str = DEFAULT_TRT_VERSION) -> str:
    """The cache text; ``order`` (e.g. graph order) fixes the line order, else sorted names."""
    names = [n for n in order if n in amax] if order is not None else sorted(amax)
    names += sorted(set(amax) - set(names))
    for name in names:
        if "\n" in name or not name.strip():
            raise ArtifactError("a tensor name cannot be written to a TensorRT cache", found=repr(name))
    lines = [f"TRT-{trt_version_number(trt_version)}-{CALIBRATOR_NAME}"]
    lines += [f"{name}: {scale_hex(amax[name])}" for name in names]
    return "\n".join(lines) + "\n"


def write_trt_cache(path: str | os.PathLike[str], amax: Mapping[str, float], *,
                    order: Sequence[str] | None = None, trt_version: str = DEFAULT_TRT_VERSION) -> Path:
    """Write ``calibration.cache`` atomically."""
    return atomic_write_text(path, format_cache(amax, order=order, trt_version=trt_version))


def read_trt_cache(path: str | os.PathLike[str]) -> tuple[int, dict[str, np.float32]]:
    """(header version number, tensor name -> float32 scale) from a TensorRT cache."""
    target = Path(path)
    if not target.is_file():
        raise ArtifactError("calibration cache not found", expected=str(target), found="no such file")
    try:
        lines = target.read_text().splitlines()
    except UnicodeDecodeError:
        raise ArtifactError(f"{target} is not a text calibration cache", fix="recalibrate") from None
    header = _HEADER_RE.match(lines[0].strip()) if lines else None
    if header is None:
        raise ArtifactError(
            f"{target} is not a TensorRT calibration cache",
            expected="a first line like TRT-10300-EntropyCalibration2",
            found=repr(lines[0][:60]) if lines else "an empty file",
            fix="onnxruntime's calibration table is a different format; rerun edgeseg calibrate",
        )
    scales: dict[str, np.float32] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        match = _LINE_RE.match(line.rstrip())
        if match is None:
            raise ArtifactError(f"{target} line {number} is malformed", expected="name: 8 hex digits",
                                found=repr(line[:80]))
        scales[match.group(1)] = np.frombuffer(bytes.fromhex(match.group(2)), dtype=">f4")[0].astype(np.float32)
    return int(header.group(1)), scales
