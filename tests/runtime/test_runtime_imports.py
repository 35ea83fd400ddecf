"""``import edgeseg.runtime`` (and the engine package) work with torch, onnx, tensorrt, pycuda, onnxruntime absent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRELUDE = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "onnx", "onnxsim", "tensorrt", "pycuda", "onnxruntime"):
            raise ImportError(name + " is blocked")
sys.meta_path.insert(0, Block())
"""


@pytest.mark.parametrize("module", ["edgeseg.runtime", "edgeseg.runtime.segmenter", "edgeseg.runtime.trt",
                                    "edgeseg.runtime.cuda", "edgeseg.runtime.gpu_loop", "edgeseg.runtime.kernels",
                                    "edgeseg.runtime.torch_backend", "edgeseg.engine", "edgeseg.engine.trt_builder"])
def test_imports_without_heavy_dependencies(module: str) -> None:
    code = PRELUDE + f"import importlib; importlib.import_module({module!r})\n" \
        "from edgeseg.runtime import Segmenter\nprint('ok')\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_missing_pycuda_is_a_dependency_error() -> None:
    code = PRELUDE + (
        "from edgeseg.errors import DependencyError\n"
        "from edgeseg.runtime.cuda import CudaContext\n"
        "try:\n    CudaContext.get()\nexcept DependencyError as e:\n    print('pycuda' in str(e))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "True", result.stderr
