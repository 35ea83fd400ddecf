"""The only runtime module that calls TensorRT (layer 1; tensorrt and pycuda lazily).

``TensorRTSession`` checks the manifest (TensorRT version, GPU, engine hash) before
deserialising, then uses only the name-based API that exists from 8.5 to 11
(num_io_tensors, get_tensor_name/mode/shape/dtype, set_input_shape,
set_tensor_address, execute_async_v3 on a non-default stream). ``infer`` is the
Backend host path; ``execution(input_ptr, output_ptr)`` gives the Segmenter a bound
execution context to enqueue on its own streams (one per buffer set).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArtifactError, InputError, require
from ..fileio import read_json, sha256_file
from ..manifest import Manifest
from .compat import check_engine_compatibility, check_io_tensors

if TYPE_CHECKING:  # the stubs type-check every TensorRT call below (tests/test_typecheck.py)
    import tensorrt

# TensorRT DataType member name -> numpy dtype name (bf16/fp8/int4 have no numpy twin)
DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
          "BOOL": "bool", "UINT8": "uint8"}


def _name(member: Any) -> str:
    return str(getattr(member, "name", member)).split(".")[-1]


def dims_list(dims: tensorrt.Dims) -> list[int]:
    """Dims supports len() and indexing (not iteration, per the stubs)."""
    return [int(dims[i]) for i in range(len(dims))]


def engine_io_tensors(engine: tensorrt.ICudaEngine, trt: Any = None) -> list[dict[str, Any]]:
    """[{name, mode, shape, dtype}] of an ICudaEngine, in engine order."""
    tensors = []
    for index in range(int(engine.num_io_tensors)):
        name = engine.get_tensor_name(index)
        dtype = _name(engine.get_tensor_dtype(name))
        tensors.append({
            "name": name,
            "mode": _name(engine.get_tensor_mode(name)),
            "shape": dims_list(engine.get_tensor_shape(name)),
            "dtype": DTYPES.get(dtype, dtype.lower()),
        })
    return tensors


def make_runtime_logger(trt: Any) -> Any:
    class ErrorLogger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, level: Any, msg: str) -> None:
            if _name(level) in ("ERROR", "INTERNAL_ERROR"):
                self.errors.append(msg)

    return ErrorLogger()


class Execution:
    """One execution context with its tensor addresses bound once (one per buffer set)."""

    def __init__(self, context: tensorrt.IExecutionContext, input_name: str, output_name: str, input_ptr: int,
                 output_ptr: int) -> None:
        self.context = context
        context.set_tensor_address(input_name, int(input_ptr))
        context.set_tensor_address(output_name, int(output_ptr))

    def enqueue(self, stream: Any) -> bool:
        return bool(self.context.execute_async_v3(int(stream.handle)))


class TensorRTSession:
    name = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike[str], *, manifest: Manifest | None = None,
                 trt: Any = None, cuda_context: Any = None, buffers: str = "auto") -> None:
        from . import cuda

        self.trt = trt if trt is not None else require("tensorrt", extra="trt", purpose="the TensorRT backend")
        path = Path(engine_path)
        if not path.is_file():
            raise ArtifactError("TensorRT engine not found", expected=str(path), found="no such file",
                                fix="build it: edgeseg build ...")
        if manifest is None and (path.parent / "manifest.json").is_file():
            manifest = Manifest.from_dict(read_json(path.parent / "manifest.json", what="manifest"))
        self.manifest = manifest
        self.cuda = cuda_context if cuda_context is not None else cuda.CudaContext.get()
        if manifest is not None:
            check_engine_compatibility(manifest, str(self.trt.__version__), self.cuda.info.compute_capability)
            recorded = manifest.hashes.get("engine")
            if recorded and recorded != sha256_file(path):
                raise ArtifactError(f"{path} does not match its manifest (hash differs)",
                                    fix="rebuild the folder: edgeseg build --force ...")
        with self.cuda.active():
            self._logger = make_runtime_logger(self.trt)
            self._runtime: tensorrt.Runtime = self.trt.Runtime(self._logger)
            engine: tensorrt.ICudaEngine | None = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise ArtifactError(f"TensorRT cannot deserialise {path}",
                                    found="\n".join(self._logger.errors[-5:]) or "no error logged",
                                    fix="rebuild the engine on this machine: edgeseg build ...")
            self.engine: tensorrt.ICudaEngine = engine
            self._setup_io(manifest)
            self.stream = cuda.new_stream()
            self._host_in = cuda.allocate(self.input_shape, self.input_dtype, buffers, self.cuda.info)
            self._host_out = cuda.allocate(self.output_shape, self.output_dtype, buffers, self.cuda.info)
            self._host_exec = self.execution(self._host_in.device_ptr, self._host_out.device_ptr)

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
        probe: tensorrt.IExecutionContext = self.engine.create_execution_context()
        probe.set_input_shape(self.input_name, self.input_shape)
        self.output_shape: tuple[int, ...] = tuple(dims_list(probe.get_tensor_shape(self.output_name)))
        del probe

    def execution(self, input_ptr: int, output_ptr: int) -> Execution:
        """A new execution context bound to these device addresses (call with the context active)."""
        context: tensorrt.IExecutionContext = self.engine.create_execution_context()
        context.set_input_shape(self.input_name, self.input_shape)
        return Execution(context, self.input_name, self.output_name, input_ptr, output_ptr)

    def infer(self, x: np.ndarray) -> np.ndarray:
        array = np.asarray(x)
        if array.shape != self.input_shape:
            raise InputError("input tensor has the wrong shape", expected=str(self.input_shape),
                             found=str(array.shape))
        with self.cuda.active():
            np.copyto(self._host_in.host, array, casting="same_kind")
            self._host_in.to_device(self.stream)
            if not self._host_exec.enqueue(self.stream):
                raise ArtifactError("TensorRT failed to run the engine", found="\n".join(self._logger.errors[-5:]))
            self._host_out.to_host(self.stream)
            self.stream.synchronize()
            return self._host_out.host.astype(np.float32)

    def close(self) -> None:
        for attr in ("_host_exec", "engine", "_runtime"):
            if hasattr(self, attr):
                delattr(self, attr)
