"""The robot-side runtime (layer 1): numpy only at import; tensorrt, pycuda, onnxruntime and
torch are imported when a backend that needs them is created.

    from edgeseg.runtime import Segmenter
    seg = Segmenter.from_artifacts("engines/NAME")   # tensorrt on a GPU, onnxruntime otherwise
    mask = seg(frame)
"""

from __future__ import annotations

from .._lazy import lazy_exports
from .backend import BACKENDS, Backend

_LAZY = {
    "Segmenter": ".segmenter",
    "choose_backend": ".segmenter",
    "tensorrt_available": ".segmenter",
    "TensorRTSession": ".trt",
    "TorchBackend": ".torch_backend",
    "OnnxRuntimeBackend": ".ort_backend",
    "CudaContext": ".cuda",
    "MappedBuffer": ".cuda",
    "DeviceBuffer": ".cuda",
    "StagedBuffer": ".cuda",
    "CudaGraph": ".cuda",
    "GpuKernels": ".kernels",
    "numpy_argmax": ".kernels",
    "numpy_overlay": ".kernels",
    "check_engine_compatibility": ".compat",
}

__all__ = ["BACKENDS", "Backend", *_LAZY]

__getattr__ = lazy_exports(__name__, _LAZY)
