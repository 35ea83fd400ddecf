"""Legacy implicit INT8: an entropy calibrator that reads and writes TensorRT's native cache.

TensorRT <= 10 only (11 removed calibrators; ``BuildConfig.validate`` refuses it there).
The calibrator copies each batch into one pycuda device buffer and hands TensorRT its address.
pycuda needs a current context for that, and none need be current on the building thread (TensorRT's own
is made current inside the build), so every allocation, copy and free runs inside the project's retained
primary context (``runtime.cuda.CudaContext``, the one TensorRT and the runtime share), pushed and popped.
An existing cache is checked (format and TensorRT version) by ``edgeseg.trt_cache_format``,
the one reader of that format, before TensorRT sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, require
from ..fileio import atomic_write_bytes
from ..runtime.cuda import CudaContext
from ..trt_cache_format import check_cache_version, parse_calibration_cache


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
    context: Any = None,
) -> Any:
    """An ``IInt8EntropyCalibrator2`` fed from one pycuda device buffer; reads/writes the native cache.

    ``cuda`` is pycuda.driver and ``context`` anything with an ``active()`` context manager (default:
    ``CudaContext.get()``, device 0); tests pass fakes. The buffer is allocated with the first batch (a
    cache-only build needs none) and freed once the batches run out, or by ``close()``.
    """
    base = trt.IInt8EntropyCalibrator2
    source = iter(batches_as_float32(batches, input_shape))
    nbytes = int(np.prod(input_shape)) * 4
    errors: list[BaseException] = []

    def checked_cache() -> bytes | None:
        """The existing cache's bytes once its format and TensorRT version are checked; None without one."""
        if cache_path is None or not Path(cache_path).is_file():
            return None
        data = Path(cache_path).read_bytes()
        cache = parse_calibration_cache(data, source=str(cache_path))
        check_cache_version(cache.version_number, trt_version, source=str(cache_path))
        return data

    checked_cache()  # a bad or stale cache is refused here, before TensorRT calls back
    if cuda is None:
        cuda = require("pycuda.driver", extra="trt", purpose="INT8 calibration")
    if context is None:
        context = CudaContext.get()  # a missing driver or GPU is reported now, not from inside the build

    def init(self: Any) -> None:
        base.__init__(self)
        self.device = None
        self.count = 0

    def get_batch_size(self: Any) -> int:
        return int(input_shape[0])

    def get_batch(self: Any, names: list[str]) -> list[int] | None:
        try:
            array = next(source, None)
            if array is None:
                close(self)  # TensorRT is done with the last batch: the buffer is never read again
                return None  # TensorRT's "no more data"
            with context.active():  # pycuda: "no currently active context" otherwise
                if self.device is None:
                    self.device = cuda.mem_alloc(nbytes)  # one buffer, reused for every batch
                cuda.memcpy_htod(self.device, array)  # synchronous: done before the context is popped
        except BaseException as exc:  # an exception must not cross into TensorRT's C++ frames
            errors.append(exc)
            return None
        self.count += 1
        return [int(self.device)]

    def close(self: Any) -> None:
        """Free the device buffer (idempotent); the build has no further use for it."""
        device, self.device = self.device, None
        if device is not None:
            with context.active():
                device.free()

    def read_calibration_cache(self: Any) -> bytes | None:
        try:
            return checked_cache()
        except BaseException as exc:  # an exception must not cross into TensorRT's C++ frames
            errors.append(exc)
            return None

    def write_calibration_cache(self: Any, cache: Any) -> None:
        if cache_path is not None:
            atomic_write_bytes(cache_path, bytes(cache))

    namespace: dict[str, Callable[..., Any]] = {
        "__init__": init,
        "get_batch_size": get_batch_size,
        "get_batch": get_batch,
        "close": close,
        "read_calibration_cache": read_calibration_cache,
        "write_calibration_cache": write_calibration_cache,
    }
    calibrator = type("EdgesegEntropyCalibrator", (base,), namespace)()
    calibrator.errors = errors  # the builder re-raises these after the build
    return calibrator
