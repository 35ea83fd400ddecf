"""A small CUDA layer over pycuda (layer 1; pycuda imported lazily, never pycuda.autoinit).

- ``CudaContext``: the device's retained primary context (pycuda.autoprimaryctx
  semantics, shared with TensorRT and torch), ``with ctx.active():`` pushes/pops it for
  worker threads.
- Buffers, one interface (``host`` numpy view, ``device_ptr``, ``to_device``/``to_host``,
  ``__cuda_array_interface__``): ``MappedBuffer`` (pinned host memory mapped into the
  GPU: zero copy on integrated GPUs such as Jetson) and ``StagedBuffer`` (a
  ``DeviceBuffer`` plus a pinned ``HostBuffer`` and async copies: discrete GPUs).
  ``allocate(..., mode="auto")`` picks from the device attributes.
- ``CudaGraph``: stream capture through the driver API (pycuda has none), ctypes on
  libcuda; ``capture`` returns None when the driver refuses, and the caller enqueues
  normally.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, DependencyError, InternalError, require

BUFFER_MODES = ("auto", "mapped", "device")
CU_CTX_MAP_HOST = 0x08
CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1


def driver() -> Any:
    return require("pycuda.driver", extra="trt", purpose="GPU buffers")


@dataclass(frozen=True)
class DeviceInfo:
    ordinal: int
    name: str
    compute_capability: str  # "8.7"
    integrated: bool
    can_map_host_memory: bool
    total_memory: int

    @property
    def prefers_mapped(self) -> bool:
        """Integrated GPUs share DRAM with the CPU: mapped pinned memory costs no copy."""
        return self.integrated and self.can_map_host_memory


def device_info(ordinal: int = 0) -> DeviceInfo:
    cuda = driver()
    cuda.init()
    device = cuda.Device(ordinal)
    attr = cuda.device_attribute
    major, minor = device.compute_capability()
    return DeviceInfo(
        ordinal=ordinal,
        name=str(device.name()),
        compute_capability=f"{major}.{minor}",
        integrated=bool(device.get_attribute(attr.INTEGRATED)),
        can_map_host_memory=bool(device.get_attribute(attr.CAN_MAP_HOST_MEMORY)),
        total_memory=int(device.total_memory()),
    )


class CudaContext:
    """The retained primary context of one device; one instance per device per process."""

    _instances: dict[int, CudaContext] = {}
    _lock = threading.Lock()

    def __init__(self, ordinal: int) -> None:
        cuda = driver()
        cuda.init()
        self.ordinal = ordinal
        self.device = cuda.Device(ordinal)
        _set_primary_flags(ordinal, CU_CTX_MAP_HOST)  # before first activation; UVA implies it anyway
        self.context = self.device.retain_primary_context()
        self.info = device_info(ordinal)

    @classmethod
    def get(cls, ordinal: int = 0) -> CudaContext:
        with cls._lock:
            if ordinal not in cls._instances:
                cls._instances[ordinal] = cls(ordinal)
            return cls._instances[ordinal]

    @contextlib.contextmanager
    def active(self) -> Iterator[CudaContext]:
        """Make the context current on this thread for the block (worker threads need this)."""
        self.context.push()
        try:
            yield self
        finally:
            driver().Context.pop()


def _libcuda() -> Any:
    name = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError as exc:
        raise DependencyError("the CUDA driver library (libcuda) cannot be loaded", found=str(exc)) from None


def _cudart() -> Any | None:
    """The CUDA runtime library (libcudart) if one can be loaded, else None (pycuda itself needs none)."""
    names = [ctypes.util.find_library("cudart"), "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0",
             "libcudart.so"]
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def clear_last_runtime_error() -> int:
    """Read (and so clear) the CUDA runtime's last error on this thread; 0 when there was none or no libcudart.

    A failed stream capture leaves an error (e.g. cudaErrorStreamCaptureInvalidated) in the runtime API's
    per-thread last-error slot, where the next cudaGetLastError check, TensorRT's own included, would report it
    for a launch that did nothing wrong: trtexec's endCaptureOnError calls cudaGetLastError for this reason.
    Unverified on hardware: a TensorRT linked with its own static cudart keeps a separate slot, out of reach."""
    lib = _cudart()
    if lib is None or not hasattr(lib, "cudaGetLastError"):
        return 0
    return int(lib.cudaGetLastError())


def _set_primary_flags(ordinal: int, flags: int) -> None:
    try:
        lib = _libcuda()
        device = ctypes.c_int()
        if lib.cuDeviceGet(ctypes.byref(device), ordinal) == 0:
            lib.cuDevicePrimaryCtxSetFlags(device, ctypes.c_uint(flags))  # fails harmlessly if already active
    except (DependencyError, AttributeError):
        pass


def _typestr(dtype: np.dtype[Any]) -> str:
    return np.dtype(dtype).str


class _Buffer:
    """Shared part: shape/dtype, the host view and the CUDA array interface of the device side."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    host: np.ndarray
    device_ptr: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": tuple(self.shape), "typestr": _typestr(self.dtype), "data": (int(self.device_ptr), False),
                "version": 3, "strides": None}

    def to_device(self, stream: Any = None) -> None:
        """Make the host contents visible to the GPU (no-op for mapped memory)."""

    def to_host(self, stream: Any = None) -> None:
        """Make the GPU's results visible in ``host`` once the stream is synchronised."""

    def free(self) -> None:
        """Release the memory now (idempotent), pinned host pages included: call it on the thread that owns
        the CUDA context. pycuda frees a pinned allocation collected on another thread not at all (its
        scoped_context_activation refuses an out-of-thread context: "could not be cleaned up"), so no view
        of ``host`` may outlive this (GpuLoop hands out copies)."""
        free_pinned(self.host)
        self.host = np.empty(0, self.dtype)
        self.device_ptr = 0


def free_pinned(array: Any) -> None:
    """Free the pinned allocation behind ``array`` (pycuda's HostAllocation is its ``base``) now; a no-op for
    ordinary arrays and for memory already freed. Every view of it is invalid afterwards."""
    release = getattr(getattr(array, "base", None), "free", None)
    if callable(release):
        release()


class MappedBuffer(_Buffer):
    """Pinned host memory mapped into the device address space: written once, never copied."""

    kind = "mapped"

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        cuda = driver()
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        host: Any = cuda.pagelocked_empty(self.shape, self.dtype, mem_flags=cuda.host_alloc_flags.DEVICEMAP)
        self.host = host
        self.device_ptr = int(host.base.get_device_pointer())  # base: pycuda's HostAllocation


class HostBuffer:
    """Pinned (page-locked) host staging memory for async copies."""

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.array = driver().pagelocked_empty(tuple(shape), np.dtype(dtype))


class DeviceBuffer(_Buffer):
    """Device memory only; ``host`` is None-like (an empty array) and copies are the caller's."""

    kind = "device"

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.allocation = driver().mem_alloc(max(self.nbytes, 1))
        self.device_ptr = int(self.allocation)
        self.host = np.empty(0, self.dtype)

    def free(self) -> None:
        if self.allocation is not None:
            self.allocation.free()  # device memory is ours alone: free it now, not at garbage collection
            self.allocation = None
        super().free()


class StagedBuffer(_Buffer):
    """A DeviceBuffer with a pinned HostBuffer and async copies (discrete GPUs)."""

    kind = "device"

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.device = DeviceBuffer(self.shape, self.dtype)
        self.staging = HostBuffer(self.shape, self.dtype)
        self.host = self.staging.array
        self.device_ptr = self.device.device_ptr

    def free(self) -> None:
        self.device.free()
        self.staging.array = np.empty(0, self.dtype)
        super().free()  # frees the staging pages: ``host`` is the staging array

    def to_device(self, stream: Any = None) -> None:
        driver().memcpy_htod_async(self.device_ptr, self.host, stream)

    def to_host(self, stream: Any = None) -> None:
        driver().memcpy_dtoh_async(self.host, self.device_ptr, stream)


def choose_mode(mode: str, info: DeviceInfo | None) -> str:
    if mode not in BUFFER_MODES:
        raise ConfigError("unknown buffer mode", expected=" | ".join(BUFFER_MODES), found=repr(mode))
    if mode == "mapped" and info is not None and not info.can_map_host_memory:
        raise ConfigError(f"{info.name} cannot map host memory", found="buffers='mapped'",
                          fix="use buffers='device' or 'auto'")
    if mode != "auto":
        return mode
    return "mapped" if info is not None and info.prefers_mapped else "device"


def allocate(shape: tuple[int, ...], dtype: Any, mode: str = "auto", info: DeviceInfo | None = None) -> _Buffer:
    chosen = choose_mode(mode, info)
    return MappedBuffer(shape, dtype) if chosen == "mapped" else StagedBuffer(shape, dtype)


def new_stream() -> Any:
    """A non-default stream (TensorRT must never enqueue on the legacy default stream)."""
    return driver().Stream()


def new_event() -> Any:
    return driver().Event()


class CudaGraph:
    """A captured, instantiated CUDA graph replayed with one launch per frame."""

    def __init__(self, lib: Any, graph: ctypes.c_void_p, graph_exec: ctypes.c_void_p) -> None:
        self._lib, self._graph, self._exec = lib, graph, graph_exec

    @classmethod
    def capture(cls, stream: Any, enqueue: Callable[[], Any]) -> CudaGraph | None:
        """Record ``enqueue()``'s work on ``stream``; None (with the stream left usable) if not capturable."""
        try:
            lib = _libcuda()
            begin = getattr(lib, "cuStreamBeginCapture_v2", None) or lib.cuStreamBeginCapture
        except (DependencyError, AttributeError):
            return None
        handle = ctypes.c_void_p(int(stream.handle))
        if begin(handle, ctypes.c_int(CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)) != 0:
            return None
        graph = ctypes.c_void_p()
        try:
            ok = enqueue() is not False
        except Exception:
            ok = False
        ended = lib.cuStreamEndCapture(handle, ctypes.byref(graph)) == 0
        if not (ok and ended and graph.value):
            if graph.value:
                lib.cuGraphDestroy(graph)
            clear_last_runtime_error()  # the caller enqueues normally next: no stale capture error for it
            return None
        graph_exec = ctypes.c_void_p()
        if hasattr(lib, "cuGraphInstantiateWithFlags"):
            status = lib.cuGraphInstantiateWithFlags(ctypes.byref(graph_exec), graph, ctypes.c_ulonglong(0))
        else:
            status = lib.cuGraphInstantiate(ctypes.byref(graph_exec), graph, None, None, ctypes.c_size_t(0))
        if status != 0:
            lib.cuGraphDestroy(graph)
            clear_last_runtime_error()
            return None
        return cls(lib, graph, graph_exec)

    def launch(self, stream: Any) -> None:
        status = self._lib.cuGraphLaunch(self._exec, ctypes.c_void_p(int(stream.handle)))
        if status != 0:
            raise InternalError(f"cuGraphLaunch failed with CUDA error {status}")

    def close(self) -> None:
        if self._exec is not None:
            self._lib.cuGraphExecDestroy(self._exec)
            self._lib.cuGraphDestroy(self._graph)
            self._exec = None  # type: ignore[assignment]
