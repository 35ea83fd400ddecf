"""The engine's manifest: what a build records of model.engine, checked before deserialisation.

A TensorRT engine only runs on the TensorRT version and GPU it was built for, unless it
was built version compatible (later releases of the same major version) or hardware
compatible (``ampere_plus``: any compute capability >= 8.0). Deserialising a mismatched
engine fails deep inside TensorRT with an opaque message; ``check_engine_compatibility``
says it first, in words, with the command that fixes it.

``engine_manifest`` describes an engine just built; the build folder's manifest.json has one
writer, ``edgeseg build`` (``manifest.write_manifest``, from that run's results only).

The checks themselves live in ``edgeseg.runtime.compat`` (layer 1: the runtime runs them
before deserialising, and cannot import this layer); they are re-exported here.
"""

from __future__ import annotations

import os
from typing import Any

from ..manifest import Manifest, read_manifest
from ..runtime.compat import check_engine_compatibility, check_io_tensors
from ..spec import InputSpec

__all__ = ["check_engine_compatibility", "check_io_tensors", "engine_manifest", "load_manifest"]

ENGINE_FILE = "model.engine"


def engine_manifest(
    *,
    model: str,
    num_classes: int,
    input_spec: InputSpec,
    precision: str,
    tensorrt_version: str,
    io_tensors: list[dict[str, Any]],
    gpu_name: str | None = None,
    compute_capability: str | None = None,
    classes: list[str] | None = None,
    hashes: dict[str, str] | None = None,
    build: dict[str, Any] | None = None,
) -> Manifest:
    return Manifest(
        model=model,
        num_classes=num_classes,
        input_spec=input_spec,
        classes=list(classes or []),
        precision=precision,
        backend="tensorrt",
        artifacts={"engine": ENGINE_FILE},
        hashes=dict(hashes or {}),
        tensorrt_version=tensorrt_version,
        gpu_name=gpu_name,
        compute_capability=compute_capability,
        io_tensors=io_tensors,
        build=dict(build or {}),
    )


def load_manifest(folder_or_file: str | os.PathLike[str]) -> Manifest:
    """The folder's manifest through the verifying reader (checksum and field types checked)."""
    return read_manifest(folder_or_file)
