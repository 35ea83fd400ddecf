"""quant/ is layer 2 and runtime/ort_backend.py layer 1: neither may import torch, even when used."""

from __future__ import annotations

from pathlib import Path

from helpers.blocked_imports import run_without
from helpers.tiny_models import build_tiny_net
from helpers.tiny_onnx import write_images


def test_quant_modules_import_and_run_without_torch(tmp_path: Path) -> None:
    model = build_tiny_net(tmp_path / "model.onnx", height=32, width=64)  # torch is fine here, in the test process
    write_images(tmp_path / "images", 2)
    code = f"""
        import importlib, pkgutil, edgeseg.quant
        for info in pkgutil.iter_modules(edgeseg.quant.__path__):
            importlib.import_module("edgeseg.quant." + info.name)
        from edgeseg.quant.calibrate import CalibrateConfig, calibrate_model
        from edgeseg.runtime.ort_backend import OnnxRuntimeBackend
        result = calibrate_model({str(model)!r}, {str(tmp_path / "images")!r}, CalibrateConfig(calib_images=2))
        OnnxRuntimeBackend(result.ort_int8_path)
        assert "torch" not in sys.modules
        print("ok")
    """
    run = run_without(code, {"torch"}, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-2000:]
