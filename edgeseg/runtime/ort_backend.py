"""The ONNX Runtime backend (layer 1: numpy; onnxruntime imported when a backend is made).

Runs ``model.onnx`` (FP32) or ``model.int8.ort.onnx`` (INT8, CPU) on the CPU provider by
default, the CUDA provider when asked for and installed. The output buffer is allocated
once and bound with IOBinding, so ``infer`` allocates nothing per frame: the array it
returns is overwritten by the next call (copy it to keep it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, DependencyError, require
from .backend import Candidate, check_input, checked_model_path, static_shape_error

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _static_shape(shape: list[Any], what: str, path: Path) -> tuple[int, ...]:
    if not all(isinstance(d, int) and d > 0 for d in shape):
        raise static_shape_error(path, what, str(shape))
    return tuple(int(d) for d in shape)


class OnnxRuntimeBackend:
    """``Backend`` on an ONNX Runtime session (see edgeseg.runtime.backend)."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        ort = require("onnxruntime", purpose="the onnxruntime backend")
        self.path = checked_model_path(path, threads)
        wanted = providers or ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        missing = [p for p in wanted if p not in available]
        if missing:  # never fall back silently to another provider
            raise DependencyError(
                f"onnxruntime provider(s) not available: {', '.join(missing)}",
                expected=", ".join(wanted), found=", ".join(available),
                fix="install onnxruntime-gpu for CUDAExecutionProvider (it replaces onnxruntime), "
                    "or use the CPU provider",
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ArtifactError(
                f"onnxruntime cannot load {self.path}",
                found=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                fix="the file is corrupt or not an ONNX model: re-export or recalibrate it",
            ) from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ArtifactError(f"{self.path.name} must have one input and an output",
                                found=f"{len(inputs)} input(s), {len(outputs)} output(s)")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_shape = _static_shape(inputs[0].shape, "input", self.path)
        self.output_shape = _static_shape(outputs[0].shape, "output", self.path)
        self.input_dtype = _NUMPY_TYPES.get(inputs[0].type, np.float32)
        output_dtype = _NUMPY_TYPES.get(outputs[0].type, np.float32)
        self.providers = self.session.get_providers()
        self._output = np.empty(self.output_shape, dtype=output_dtype)
        self._binding = self.session.io_binding()
        self._binding.bind_output(self.output_name, "cpu", 0, output_dtype, self.output_shape,
                                  self._output.ctypes.data)

    def infer(self, x: np.ndarray) -> np.ndarray:
        """1x3xHxW float32 -> 1xCxHxW float32 logits (a reused buffer; copy to keep it)."""
        check_input(x, self.name, self.input_dtype, self.input_shape)
        self._binding.bind_cpu_input(self.input_name, np.ascontiguousarray(x))
        self.session.run_with_iobinding(self._binding)
        return self._output

    def close(self) -> None:
        self._binding = None  # type: ignore[assignment]
        self.session = None  # type: ignore[assignment]

    def __enter__(self) -> OnnxRuntimeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_onnxruntime(path: str | os.PathLike[str], *, threads: int | None = None, manifest: Any = None,
                     folder: Path | None = None, providers: list[str] | None = None, **_: Any) -> OnnxRuntimeBackend:
    """The registry's factory (edgeseg.runtime.backend)."""
    return OnnxRuntimeBackend(path, threads=threads, providers=providers)


def best_candidates() -> list[Any]:
    """What ``--precision best`` times with ONNX Runtime: model.onnx (FP32) and model.int8.ort.onnx (INT8)."""
    return [Candidate("onnxruntime", "onnx", "fp32"), Candidate("onnxruntime", "onnx_int8_cpu", "int8")]
