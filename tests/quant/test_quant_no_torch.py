"""quant/ is layer 2 and runtime/onnxruntime.py layer 1: neither may import torch, even when used."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(name + " is blocked")
sys.meta_path.insert(0, Block())
sys.path.insert(0, ROOT)
"""


def test_quant_modules_import_and_run_without_torch(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_onnx import build_tiny_net, write_images  # torch is fine here, in the test process

    model = build_tiny_net(tmp_path / "model.onnx", height=32, width=64)
    write_images(tmp_path / "images", 2)
    code = PRELUDE.replace("ROOT", repr(str(ROOT))) + textwrap.dedent(f"""
        import importlib, pkgutil, edgeseg.quant
        for info in pkgutil.iter_modules(edgeseg.quant.__path__):
            importlib.import_module("edgeseg.quant." + info.name)
        from edgeseg.quant.pipeline import CalibrateConfig, calibrate_model
        from edgeseg.runtime.ort_backend import OnnxRuntimeBackend
        result = calibrate_model({str(model)!r}, {str(tmp_path / "images")!r}, CalibrateConfig(calib_images=2))
        OnnxRuntimeBackend(result.ort_int8_path)
        assert "torch" not in sys.modules
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-2000:]
