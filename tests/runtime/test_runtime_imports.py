"""``import edgeseg.runtime`` (and the engine package) work with torch, onnx, tensorrt, pycuda, onnxruntime absent."""

from __future__ import annotations

import pytest
from helpers.blocked_imports import run_without

HEAVY = {"torch", "onnx", "onnxsim", "tensorrt", "pycuda", "onnxruntime"}


@pytest.mark.parametrize("module", ["edgeseg.runtime", "edgeseg.runtime.segmenter", "edgeseg.runtime.trt",
                                    "edgeseg.runtime.cuda", "edgeseg.runtime.gpu_loop", "edgeseg.runtime.kernels",
                                    "edgeseg.runtime.torch_backend", "edgeseg.engine", "edgeseg.engine.trt_builder"])
def test_imports_without_heavy_dependencies(module: str) -> None:
    code = f"""
        import importlib; importlib.import_module({module!r})
        from edgeseg.runtime import Segmenter
        print('ok')
    """
    result = run_without(code, HEAVY)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_missing_pycuda_is_a_dependency_error() -> None:
    code = (
        "from edgeseg.errors import DependencyError\n"
        "from edgeseg.runtime.cuda import CudaContext\n"
        "try:\n    CudaContext.get()\nexcept DependencyError as e:\n    print('pycuda' in str(e))\n")
    result = run_without(code, HEAVY)
    assert result.stdout.strip() == "True", result.stderr
