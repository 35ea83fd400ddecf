"""The only runtime module that calls TensorRT (layer 1; tensorrt and pycuda lazily).

``TensorRTSession`` checks the manifest (TensorRT version, GPU, engine hash) before
deserialising, then uses only the name-based API that exists from 8.5 to 11
(num_io_tensors, get_tensor_name/mode/shape/dtype, set_input_shape,
set_tensor_address, execute_async_v3 on a non-default stream). ``infer`` is the
Backend host path (its buffers and context are made on first use); ``execution(input_ptr,
output_ptr)`` gives the Segmenter a bound execution context to enqueue on its own streams
(one per buffer set). ``load_engine`` is the one place an engine is deserialised (the build's
inspection uses it too): the process-wide logger (``trt_logger``), host code allowed for
version-compatible engines, and the DLA core set for engines built for one. ``close()`` frees contexts,
engine and runtime in that order.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArtifactError, InputError, UsageError, require
from ..fileio import sha256_file
from ..manifest import Manifest, find_manifest
from . import cuda
from .compat import check_engine_compatibility, check_io_tensors
from .trt_logger import capture_log, enum_name, process_logger

if TYPE_CHECKING:  # the stubs type-check every TensorRT call below (tests/test_typecheck.py)
    import tensorrt

# TensorRT DataType member name -> numpy dtype name (bf16/fp8/int4 have no numpy twin)
DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
          "BOOL": "bool", "UINT8": "uint8"}


def dims_list(dims: tensorrt.Dims) -> list[int]:
    """Dims supports len() and indexing (not iteration, per the stubs)."""
    return [int(dims[i]) for i in range(len(dims))]


def engine_io_tensors(engine: tensorrt.ICudaEngine, trt: Any = None) -> list[dict[str, Any]]:
    """[{name, mode, shape, dtype}] of an ICudaEngine, in engine order."""
    tensors = []
    for index in range(int(engine.num_io_tensors)):
        name = engine.get_tensor_name(index)
        dtype = enum_name(engine.get_tensor_dtype(name))
        tensors.append({
            "name": name,
            "mode": enum_name(engine.get_tensor_mode(name)),
            "shape": dims_list(engine.get_tensor_shape(name)),
            "dtype": DTYPES.get(dtype, dtype.lower()),
        })
    return tensors


FIX_REBUILD = "rebuild the engine on this machine: edgeseg build ..."
NO_MANIFEST = " (or, for an engine built --version-compatible, keep its build's manifest.json beside it)"


def engine_is_version_compatible(manifest: Manifest | None) -> bool:
    """Whether the manifest says the engine was built version compatible (the build records both)."""
    if manifest is None:
        return False
    build = manifest.build
    return bool(build.get("version_compatible")) or "VERSION_COMPATIBLE" in (build.get("builder_flags") or ())


def allow_engine_host_code(runtime: tensorrt.Runtime, version_compatible: bool) -> bool:
    """A version-compatible engine embeds TensorRT's lean runtime, host code the Runtime must be allowed to
    run (TensorRT >= 8.6). 8.5 has neither such engines nor the attribute. True when it was allowed."""
    if version_compatible and hasattr(runtime, "engine_host_code_allowed"):
        runtime.engine_host_code_allowed = True
        return True
    return False


def engine_dla_core(manifest: Manifest | None) -> int | None:
    """The DLA core the engine was built for (the build records ``dla`` and ``config.dla_core``), else None."""
    build = manifest.build if manifest is not None else {}
    core = (build.get("config") or {}).get("dla_core")
    if not build.get("dla") or core is None:
        return None
    if isinstance(core, bool) or not isinstance(core, int) or core < 0:
        raise ArtifactError("the manifest records an invalid DLA core", expected="a core number (0, 1, ...)",
                            found=repr(core), fix="rebuild the folder: edgeseg build --force ...")
    return core


def use_dla_core(runtime: tensorrt.Runtime, core: int, what: str) -> None:
    """Run the engine about to be deserialised on DLA core ``core``, as it was built (TensorRT >= 8.5)."""
    cores = int(runtime.num_DLA_cores)
    if core >= cores:
        raise ArtifactError(f"{what} was built for DLA core {core}, which this device does not have",
                            expected=f"DLA core {core}", found=f"{cores} DLA core(s)",
                            fix="rebuild the engine on this device (for the GPU, or for one of its DLA cores)")
    runtime.DLA_core = core


def load_engine(trt: Any, data: bytes, *, version_compatible: bool, dla_core: int | None = None,
                what: str = "the engine", fix: str = FIX_REBUILD) -> tuple[tensorrt.Runtime, tensorrt.ICudaEngine]:
    """(runtime, engine) deserialised with the process logger; ArtifactError with TensorRT's errors if refused.
    ``dla_core``: the core an engine built for the DLA runs on (``engine_dla_core``), set before deserialising.

    The engine keeps its runtime alive; free the engine first (``del``), then the runtime."""
    with capture_log(trt) as log:
        runtime: tensorrt.Runtime = trt.Runtime(process_logger(trt))
        allow_engine_host_code(runtime, version_compatible)
        if dla_core is not None:
            use_dla_core(runtime, dla_core, what)
        engine: tensorrt.ICudaEngine | None = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise ArtifactError(f"TensorRT cannot deserialise {what}", found=log.tail() or "no error logged", fix=fix)
    return runtime, engine


class Execution:
    """One execution context with its tensor addresses bound once (one per buffer set)."""

    def __init__(self, context: tensorrt.IExecutionContext, input_name: str, output_name: str, input_ptr: int,
                 output_ptr: int) -> None:
        self.context: tensorrt.IExecutionContext | None = context
        context.set_tensor_address(input_name, int(input_ptr))
        context.set_tensor_address(output_name, int(output_ptr))

    def enqueue(self, stream: Any) -> bool:
        if self.context is None:
            raise UsageError("the TensorRT session was closed", fix="open the engine again")
        return bool(self.context.execute_async_v3(int(stream.handle)))

    @property
    def closed(self) -> bool:
        """True once released (by its holder or by ``TensorRTSession.close()``): a graph captured from it
        must not be replayed."""
        return self.context is None

    def release(self) -> None:
        """Destroy the execution context now (its activation memory goes with it); idempotent. Call with the
        CUDA context current, after the streams that used it are synchronised, before the engine goes."""
        self.context = None


class _HostPath:
    """``infer``'s stream, input/output buffers and execution context. Made on the first ``infer``: a session
    driven by the GpuLoop never calls it, and every execution context holds its own activation memory."""

    def __init__(self, session: TensorRTSession, mode: str) -> None:
        info = session.cuda.info
        self.stream: Any = cuda.new_stream()
        self.input = cuda.allocate(session.input_shape, session.input_dtype, mode, info)
        self.output = cuda.allocate(session.output_shape, session.output_dtype, mode, info)
        self.execution = session.execution(self.input.device_ptr, self.output.device_ptr)

    def close(self) -> None:
        """Free in dependency order (call with the CUDA context current)."""
        self.stream.synchronize()  # nothing in flight may still use what is freed below
        self.execution.release()
        self.input.free()
        self.output.free()
        self.stream = None  # pycuda destroys the stream when its last reference goes


class TensorRTSession:
    name = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike[str], *, manifest: Manifest | None = None,
                 trt: Any = None, cuda_context: Any = None, buffers: str = "auto") -> None:
        self.trt = trt if trt is not None else require("tensorrt", extra="trt", purpose="the TensorRT backend")
        self._closed = False
        self._host: _HostPath | None = None
        self._executions: weakref.WeakSet[Execution] = weakref.WeakSet()  # handed out, released by close()
        self._engine: tensorrt.ICudaEngine | None = None
        self._runtime: tensorrt.Runtime | None = None
        path = Path(engine_path)
        if not path.is_file():
            raise ArtifactError("TensorRT engine not found", expected=str(path), found="no such file",
                                fix="build it: edgeseg build ...")
        if manifest is None:  # the verifying reader: an edited manifest (checksum) is refused, not trusted
            manifest = find_manifest(path.parent)
        self.manifest = manifest
        self.cuda = cuda_context if cuda_context is not None else cuda.CudaContext.get()
        self._buffers = buffers
        cuda.choose_mode(buffers, self.cuda.info)  # a bad mode fails now, not at the first infer()
        if manifest is not None:
            check_engine_compatibility(manifest, str(self.trt.__version__), self.cuda.info.compute_capability)
            recorded = manifest.hashes.get("engine")
            if recorded and recorded != sha256_file(path):
                raise ArtifactError(f"{path} does not match its manifest (hash differs)",
                                    fix="rebuild the folder: edgeseg build --force ...")
        with self.cuda.active():
            fix = FIX_REBUILD if manifest is not None else FIX_REBUILD + NO_MANIFEST
            self._runtime, self._engine = load_engine(
                self.trt, path.read_bytes(), version_compatible=engine_is_version_compatible(manifest),
                dla_core=engine_dla_core(manifest), what=str(path), fix=fix)
            try:
                self._setup_io(manifest)
            except BaseException:
                self.close()  # free the engine now, not whenever the garbage collector gets to it
                raise

    @property
    def engine(self) -> tensorrt.ICudaEngine:
        if self._engine is None:
            raise UsageError("the TensorRT session was closed", fix="open the engine again")
        return self._engine

    def _setup_io(self, manifest: Manifest | None) -> None:
        io = engine_io_tensors(self.engine, self.trt)
        if manifest is not None:
            check_io_tensors(manifest, io)
        inputs = [t for t in io if t["mode"] == "INPUT"]
        outputs = [t for t in io if t["mode"] == "OUTPUT"]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ArtifactError("a segmentation engine has one input and one output",
                                found=f"{len(inputs)} input(s), {len(outputs)} output(s)")
        self.input_name, self.output_name = inputs[0]["name"], outputs[0]["name"]
        shape = tuple(inputs[0]["shape"])
        if any(d < 0 for d in shape):  # dynamic engine: run it at the manifest's input size
            if manifest is None:
                raise ArtifactError("the engine has a dynamic input shape and no manifest gives the size",
                                    fix="keep manifest.json beside model.engine")
            shape = manifest.input_spec.shape
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in shape)
        self.input_dtype = np.dtype(inputs[0]["dtype"])
        self.output_dtype = np.dtype(outputs[0]["dtype"])
        out_shape = [int(d) for d in outputs[0]["shape"]]
        if any(d < 0 for d in out_shape):  # only a context with the input shape set can say the output's
            probe: tensorrt.IExecutionContext = self.engine.create_execution_context()
            probe.set_input_shape(self.input_name, self.input_shape)
            out_shape = dims_list(probe.get_tensor_shape(self.output_name))
            del probe  # its activation memory goes now
        self.output_shape: tuple[int, ...] = tuple(out_shape)

    def execution(self, input_ptr: int, output_ptr: int) -> Execution:
        """A new execution context bound to these device addresses (call with the context active).

        ``close()`` releases it (before the engine) unless its holder released it first."""
        context: tensorrt.IExecutionContext = self.engine.create_execution_context()
        context.set_input_shape(self.input_name, self.input_shape)
        execution = Execution(context, self.input_name, self.output_name, input_ptr, output_ptr)
        self._executions.add(execution)
        return execution

    def infer(self, x: np.ndarray) -> np.ndarray:
        array = np.asarray(x)
        if array.shape != self.input_shape:
            raise InputError("input tensor has the wrong shape", expected=str(self.input_shape),
                             found=str(array.shape))
        if self._closed:
            raise UsageError("the TensorRT session was closed", fix="open the engine again")
        with self.cuda.active():
            if self._host is None:
                self._host = _HostPath(self, self._buffers)
            host = self._host
            np.copyto(host.input.host, array, casting="same_kind")
            host.input.to_device(host.stream)
            with capture_log(self.trt) as log:
                ok = host.execution.enqueue(host.stream)
            if not ok:
                raise ArtifactError("TensorRT failed to run the engine", found=log.tail() or "no error logged")
            host.output.to_host(host.stream)
            host.stream.synchronize()
            return host.output.host.astype(np.float32)

    def close(self) -> None:
        """Free everything now, with the CUDA context current, in dependency order: the host path (stream
        synchronised, context, buffers), every execution context handed out, the engine, the runtime.
        Idempotent. Close a GpuLoop built on this session first: it owns its slots' buffers and streams."""
        if self._closed:
            return
        self._closed = True
        with self.cuda.active():
            if self._host is not None:
                self._host.close()
                self._host = None
            for execution in list(self._executions):
                execution.release()
            self._executions.clear()
            self._engine = None  # the engine before the runtime that deserialised it
            self._runtime = None

    def __enter__(self) -> TensorRTSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
