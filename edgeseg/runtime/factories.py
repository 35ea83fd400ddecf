"""How the registry (backend.py) opens the TensorRT and PyTorch backends (layer 1; their modules lazily).

ONNX Runtime and OpenVINO keep their factory in their own module (ort_backend, openvino_backend).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .torch_backend import TorchBackend
from .trt import TensorRTSession


def open_tensorrt(path: str | os.PathLike[str], *, threads: int | None = None, manifest: Any = None,
                  folder: Path | None = None, buffers: str = "auto", **_: Any) -> Any:
    """A TensorRTSession on an engine (``threads`` has no meaning on the GPU; without ``manifest`` the session
    reads the engine folder's)."""
    return TensorRTSession(path, manifest=manifest, buffers=buffers)


def open_torch(path: str | os.PathLike[str] | None, *, threads: int | None = None, manifest: Any = None,
               folder: Path | None = None, device: str = "cpu", **_: Any) -> Any:
    """The PyTorch reference from the checkpoint ``path`` a build folder (its manifest) was built from."""
    if path is None or manifest is None:
        raise UsageError("the torch backend needs the checkpoint and the build folder's manifest",
                         fix="pass --weights CHECKPOINT (the file the folder was built from)")
    return TorchBackend.from_checkpoint(path, manifest.model, manifest.num_classes,
                                        tuple(manifest.input_spec.shape), device=device)
