"""PyTorch -> ONNX (layer 3, torch): export_onnx with parity against ONNX Runtime, and the graph checks.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "ExportConfig": ".onnx_export",
    "ExportResult": ".onnx_export",
    "export_onnx": ".onnx_export",
    "read_onnx_metadata": ".onnx_export",
}

__all__ = [*_LAZY]
__getattr__ = lazy_exports(__name__, _LAZY)
