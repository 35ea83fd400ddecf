"""Legacy implicit INT8: TensorRT's native calibration cache and an entropy calibrator.

TensorRT <= 10 only (11 removed calibrators; ``BuildConfig.validate`` refuses it there).
The cache format (TENSORRT.md): a header ``TRT-<major*1000+minor*100+patch>-EntropyCalibration2``
then ``<tensor name>: <big-endian float32 scale as 8 hex digits>`` per line. The
calibrator copies each batch into one pycuda device buffer and hands TensorRT its address.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError
from ..io import atomic_write_bytes
from .versions import TrtVersion

ALGORITHM = "EntropyCalibration2"


def format_calibration_cache(trt_version: str | TrtVersion, scales: dict[str, float]) -> bytes:
    version = TrtVersion.parse(trt_version)
    lines = [f"TRT-{version.cache_number}-{ALGORITHM}"]
    for name, scale in scales.items():
        if "\n" in name:  # a colon is fine: the scale is read after the last one
            raise ArtifactError("tensor name cannot be written into a calibration cache", found=repr(name))
        lines.append(f"{name}: {struct.pack('>f', float(scale)).hex()}")
    return ("\n".join(lines) + "\n").encode()


def parse_calibration_cache(data: bytes, *, source: str = "calibration cache") -> tuple[int, str, dict[str, float]]:
    """(version number, algorithm, {tensor: scale}); ArtifactError for anything else (e.g. onnxruntime's table)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ArtifactError(f"{source} is not a TensorRT calibration cache", found="binary data") from None
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0].split("-", 2) if lines else []
    if len(header) != 3 or header[0] != "TRT" or not header[1].isdigit():
        raise ArtifactError(
            f"{source} is not a TensorRT calibration cache",
            expected="a first line like TRT-8601-EntropyCalibration2",
            found=repr(lines[0][:60]) if lines else "an empty file",
            fix="delete it and calibrate again (onnxruntime's calibration table is a different format)",
        )
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(":")
        value = value.strip()
        if not sep or len(value) != 8:
            raise ArtifactError(f"{source} line {number} is malformed", expected="name: 8 hex digits",
                                found=repr(line[:80]))
        try:
            scales[name.strip()] = struct.unpack(">f", bytes.fromhex(value))[0]
        except ValueError:
            raise ArtifactError(f"{source} line {number} has a bad scale", found=repr(value)) from None
    return int(header[1]), header[2], scales


def check_cache_version(cache_number: int, trt_version: str | TrtVersion, *, source: str) -> None:
    version = TrtVersion.parse(trt_version)
    if cache_number != version.cache_number:
        raise ArtifactError(
            f"{source} was written by another TensorRT version",
            expected=f"TRT-{version.cache_number}",
            found=f"TRT-{cache_number}",
            fix="delete the cache to calibrate again with this TensorRT",
        )


def batches_as_float32(batches: Iterable[np.ndarray], shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """Check every calibration batch up front of the copy: the calibrator cannot raise into TensorRT."""
    for index, batch in enumerate(batches):
        array = np.ascontiguousarray(batch, dtype=np.float32)
        if array.shape != tuple(shape):
            raise InputError(f"calibration batch {index} has the wrong shape", expected=str(tuple(shape)),
                             found=str(array.shape))
        yield array


def make_entropy_calibrator(
    trt: Any,
    batches: Iterable[np.ndarray],
    *,
    input_shape: tuple[int, ...],
    cache_path: Path | None,
    trt_version: str,
    cuda: Any = None,
) -> Any:
    """An ``IInt8EntropyCalibrator2`` fed from one pycuda device buffer; reads/writes the native cache."""
    if cuda is None:
        from ..errors import require

        cuda = require("pycuda.driver", extra="trt", purpose="INT8 calibration")
    base = trt.IInt8EntropyCalibrator2
    source = iter(batches_as_float32(batches, input_shape))
    nbytes = int(np.prod(input_shape)) * 4
    errors: list[BaseException] = []

    def init(self: Any) -> None:
        base.__init__(self)
        self.device = cuda.mem_alloc(nbytes)  # one buffer, reused for every batch
        self.count = 0

    def get_batch_size(self: Any) -> int:
        return int(input_shape[0])

    def get_batch(self: Any, names: list[str]) -> list[int] | None:
        try:
            array = next(source)
        except StopIteration:
            return None  # TensorRT's "no more data"
        except BaseException as exc:  # an exception must not cross into TensorRT's C++ frames
            errors.append(exc)
            return None
        cuda.memcpy_htod(self.device, array)
        self.count += 1
        return [int(self.device)]

    def read_calibration_cache(self: Any) -> bytes | None:
        if cache_path is None or not Path(cache_path).is_file():
            return None
        data = Path(cache_path).read_bytes()
        number, _, _ = parse_calibration_cache(data, source=str(cache_path))
        check_cache_version(number, trt_version, source=str(cache_path))
        return data

    def write_calibration_cache(self: Any, cache: Any) -> None:
        if cache_path is not None:
            atomic_write_bytes(cache_path, bytes(cache))

    namespace: dict[str, Callable[..., Any]] = {
        "__init__": init,
        "get_batch_size": get_batch_size,
        "get_batch": get_batch,
        "read_calibration_cache": read_calibration_cache,
        "write_calibration_cache": write_calibration_cache,
    }
    calibrator = type("EdgesegEntropyCalibrator", (base,), namespace)()
    calibrator.errors = errors  # the builder re-raises these after the build
    return calibrator
