"""The engine's manifest: written beside model.engine, checked before deserialisation.

A TensorRT engine only runs on the TensorRT version and GPU it was built for, unless it
was built version compatible (later releases of the same major version) or hardware
compatible (``ampere_plus``: any compute capability >= 8.0). Deserialising a mismatched
engine fails deep inside TensorRT with an opaque message; ``check_engine_compatibility``
says it first, in words, with the command that fixes it.

The checks themselves live in ``edgeseg.runtime.compat`` (layer 1: the runtime runs them
before deserialising, and cannot import this layer); they are re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from ..fileio import atomic_write_bytes, atomic_write_json, sha256_file
from ..manifest import Manifest, read_manifest, write_manifest
from ..runtime.compat import check_engine_compatibility, check_io_tensors
from ..spec import InputSpec

__all__ = ["check_engine_compatibility", "check_io_tensors", "engine_manifest", "load_manifest", "write_engine"]

ENGINE_FILE = "model.engine"
MANIFEST_FILE = "manifest.json"
LAYERS_FILE = "layers.json"


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


def write_engine(
    out_dir: str | os.PathLike[str],
    engine_bytes: bytes,
    manifest: Manifest,
    *,
    layers: dict[str, Any] | None = None,
) -> Path:
    """Write model.engine (+ layers.json) then manifest.json, all atomically; returns the engine path.

    An existing manifest.json in the folder (from export/calibrate) keeps its other
    artifacts, hashes and measurements; the engine's entries replace the old ones.
    The manifest is written last: a folder whose manifest names an engine has that engine.
    """
    folder = Path(out_dir)
    engine_path = atomic_write_bytes(folder / ENGINE_FILE, bytes(engine_bytes))
    manifest.artifacts["engine"] = ENGINE_FILE
    manifest.hashes["engine"] = sha256_file(engine_path)
    if layers is not None:
        atomic_write_json(folder / LAYERS_FILE, layers)
        manifest.artifacts["layers"] = LAYERS_FILE
    previous = folder / MANIFEST_FILE
    if previous.is_file():
        try:
            old = read_manifest(previous, verify=False)
        except ArtifactError:
            old = None  # an unreadable old manifest is replaced, not merged
        if old is not None:
            manifest.artifacts = {**old.artifacts, **manifest.artifacts}
            manifest.hashes = {**old.hashes, **manifest.hashes}
            manifest.calibration = manifest.calibration or old.calibration
            manifest.accuracy = manifest.accuracy or old.accuracy
            manifest.latency = manifest.latency or old.latency
            manifest.classes = manifest.classes or old.classes
    write_manifest(folder, manifest)
    return engine_path


def load_manifest(folder_or_file: str | os.PathLike[str]) -> Manifest:
    return read_manifest(folder_or_file)
