"""The TensorRT engine builder (layer 2; tensorrt, pycuda and onnx imported lazily, never torch).

    from edgeseg.engine import BuildConfig, build_engine
    engine_bytes, manifest = build_engine("engines/x/model.int8.onnx", BuildConfig(precision="int8"))

A build folder's manifest.json is written by ``edgeseg build`` alone (pipeline/build_steps.py).
"""

from __future__ import annotations

from .._lazy import lazy_exports
from .config import BuildConfig
from .versions import BuildPlan, OnnxFacts, TrtVersion, plan_build

_LAZY = {
    "build_engine": ".trt_builder",
    "BuildResult": ".trt_builder",
    "load_manifest": ".manifest",
    "check_engine_compatibility": ".manifest",
}

__all__ = ["BuildConfig", "BuildPlan", "OnnxFacts", "TrtVersion", "plan_build", *_LAZY]

__getattr__ = lazy_exports(__name__, _LAZY)
