"""A build folder holding a model.engine, written the way ``edgeseg build`` writes one (tests only).

The engine bytes first, then manifest.json through ``manifest.write_manifest`` (with its checksum), from the
given manifest alone: the folder's old manifest is never merged (``edgeseg build`` is its one writer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeseg.fileio import atomic_write_bytes, atomic_write_json, sha256_file
from edgeseg.manifest import Manifest, write_manifest

ENGINE_FILE = "model.engine"
LAYERS_FILE = "layers.json"


def write_engine_folder(folder: Path, engine_bytes: bytes, manifest: Manifest, *,
                        layers: dict[str, Any] | None = None) -> Path:
    """model.engine (+ layers.json) then manifest.json naming them with their hashes; returns the engine path."""
    folder = Path(folder)
    engine = atomic_write_bytes(folder / ENGINE_FILE, bytes(engine_bytes))
    manifest.artifacts["engine"] = ENGINE_FILE
    manifest.hashes["engine"] = sha256_file(engine)
    if layers is not None:
        atomic_write_json(folder / LAYERS_FILE, layers)
        manifest.artifacts["layers"] = LAYERS_FILE
    write_manifest(folder, manifest)
    return engine
