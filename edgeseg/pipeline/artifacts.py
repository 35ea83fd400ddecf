"""Finding and opening the artifacts of a build folder (layer 4; no torch).

Shared by ``validate`` and ``bench``: which file plays which role in a
build folder (from manifest.json, or the standard names when there is none), which
backend runs a candidate file (by suffix), the input spec a candidate was exported
with (its ONNX metadata, read by ``edgeseg.onnx_model``, else the manifest). The machine's
description lives in ``edgeseg.machine``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, ConfigError
from ..manifest import MANIFEST_FILE, Manifest, find_manifest
from ..onnx_model import OnnxModelInfo, read_onnx_model
from ..runtime.backend import backend_for_file
from ..runtime.backend import open_backend as open_registered
from ..spec import InputSpec

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")

# role -> standard file name(s) in engines/<name>/ when manifest.json is absent
STANDARD_NAMES: dict[str, tuple[str, ...]] = {
    "onnx": ("model.onnx",),
    "onnx_int8_trt": ("model.int8.onnx",),
    "onnx_int8_cpu": ("model.int8.ort.onnx", "model.int8.cpu.onnx", "model.int8.qoperator.onnx"),
    "onnx_int8_ov": ("model.int8.ov.onnx",),  # OpenVINO's Q/DQ file (quant/qdq_ov.py)
    "engine": ("model.engine",),
    "reference": ("reference.npz",),
    "calibration_cache": ("calibration.cache",),
    "ranges": ("ranges.json",),
}

def load_manifest(folder: str | os.PathLike[str]) -> Manifest | None:
    """The folder's manifest.json, or None when there is none (a corrupt or edited one is an error)."""
    return find_manifest(folder)


def discover_artifacts(folder: str | os.PathLike[str], manifest: Manifest | None = None) -> dict[str, Path]:
    """role -> existing file of a build folder: the manifest's roles first, then standard names."""
    root = Path(folder)
    if not root.is_dir():
        raise ArtifactError(
            f"build folder {root} does not exist" if not root.exists() else f"{root} is not a folder",
            expected="a build folder such as engines/NAME (manifest.json, model.onnx, ...)",
            found=str(root),
            fix="run edgeseg build first, or pass the ONNX files with --onnx",
        )
    manifest = manifest if manifest is not None else load_manifest(root)
    found: dict[str, Path] = {}
    if manifest is not None:
        for role, name in manifest.artifacts.items():
            if (root / name).is_file():
                found[role] = root / name
    for role, names in STANDARD_NAMES.items():
        if role in found:
            continue
        for name in names:
            if (root / name).is_file():
                found[role] = root / name
                break
    if "onnx_int8_cpu" not in found:  # another CPU INT8 layout: model.int8.<anything>.onnx
        extra = sorted(p for p in root.glob("model.int8.*.onnx")
                       if p.name not in ("model.int8.onnx", *STANDARD_NAMES["onnx_int8_ov"]))
        if extra:
            found["onnx_int8_cpu"] = extra[0]
    return found


def candidate_input_spec(path: str | os.PathLike[str], info: OnnxModelInfo | None = None
                         ) -> tuple[InputSpec | None, str]:
    """The input spec a candidate was built with, and where it came from ("" if unknown).

    ``info``: the candidate's ONNX facts when the caller has read them already (on the robot each
    read opens an ONNX Runtime session)."""
    candidate = Path(path)
    if candidate.suffix.lower() == ".onnx":
        spec = (info or read_onnx_model(candidate)).input_spec
        if spec is not None:
            return spec, f"{candidate.name} metadata"
    manifest = load_manifest(candidate.parent)
    if manifest is not None:
        return manifest.input_spec, f"{candidate.parent / MANIFEST_FILE}"
    return None, ""


def open_backend(path: str | os.PathLike[str], *, threads: int | None = None, backend: str = "auto",
                 **options: Any) -> Any:
    """A Backend for a candidate file: ``backend``, or by suffix the registry's choice (runtime/backend.py:
    .onnx -> ONNX Runtime, .engine -> TensorRT); ``options`` go to the backend's factory."""
    candidate = Path(path)
    if not candidate.is_file():
        raise ArtifactError("candidate model not found", expected=str(candidate), found="no such file",
                            fix="pass an existing model.onnx, model.int8*.onnx or model.engine")
    try:
        name = backend_for_file(candidate, backend)
    except ConfigError as exc:
        raise ArtifactError(exc.problem, expected=exc.expected, found=exc.found, fix=exc.fix) from None
    manifest = load_manifest(candidate.parent) if candidate.suffix.lower() in ENGINE_SUFFIXES else None
    return open_registered(name, candidate, threads=threads, manifest=manifest, folder=candidate.parent, **options)
