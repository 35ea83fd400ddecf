"""The TensorRT engine builder (layer 2; tensorrt, pycuda and onnx imported lazily, never torch).

    from edgeseg.engine import BuildConfig, build_engine, write_engine
    engine_bytes, manifest = build_engine("engines/x/model.int8.onnx", BuildConfig(precision="int8"))
    write_engine("engines/x", engine_bytes, manifest)
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import BuildConfig
from .versions import BuildPlan, OnnxFacts, TrtVersion, plan_build

_LAZY = {
    "build_engine": ".trt_builder",
    "BuildResult": ".trt_builder",
    "write_engine": ".manifest",
    "load_manifest": ".manifest",
    "check_engine_compatibility": ".manifest",
}

__all__ = ["BuildConfig", "BuildPlan", "OnnxFacts", "TrtVersion", "plan_build", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeseg.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
