"""Can this TensorRT and GPU run that engine? (layer 1: stdlib only, no tensorrt import).

A TensorRT engine only deserialises on the TensorRT version and GPU it was built for,
unless built version compatible (later releases of the same major version) or hardware
compatible (``ampere_plus``: compute capability >= 8.0). TensorRT's own failure is
opaque; these checks run first and say what to do. Versions are parsed and compared by
``edgeseg.trt_version.TrtVersion`` (stdlib only, so the robot imports it without extras).
"""

from __future__ import annotations

from typing import Any

from ..errors import ArtifactError
from ..manifest import Manifest
from ..trt_version import TrtVersion


def _cc_tuple(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        raise ArtifactError("cannot read the GPU compute capability", expected="e.g. 8.7", found=repr(text)) from None


def check_engine_compatibility(
    manifest: Manifest,
    trt_version: str,
    compute_capability: str | None,
) -> None:
    """ArtifactError unless this TensorRT and GPU can deserialise the manifest's engine."""
    fix = "rebuild the engine on this machine: edgeseg build ..."
    if not manifest.tensorrt_version:
        raise ArtifactError("the manifest records no TensorRT version: it does not describe a TensorRT engine",
                            fix=fix)
    built = TrtVersion.parse(manifest.tensorrt_version, error=ArtifactError)
    running = TrtVersion.parse(trt_version, error=ArtifactError)
    if manifest.build.get("version_compatible"):
        if running.major != built.major or running < built:
            raise ArtifactError(
                "the engine is version compatible, but not with this TensorRT",
                expected=f"TensorRT {built.major}.x at {built} or later",
                found=f"TensorRT {running}",
                fix=fix,
            )
    elif running != built:
        raise ArtifactError(
            "the engine was built for another TensorRT version (engines are version specific)",
            expected=f"TensorRT {built}",
            found=f"TensorRT {running}",
            fix=fix + " (or build with --version-compatible on TensorRT >= 8.6)",
        )
    if compute_capability is None or manifest.compute_capability is None:
        return  # unknown on one side: TensorRT itself will still refuse a wrong GPU
    level = manifest.build.get("hardware_compatibility", "none")
    want, have = _cc_tuple(manifest.compute_capability), _cc_tuple(compute_capability)
    if level == "ampere_plus":
        if have < (8, 0):
            raise ArtifactError("the engine is hardware compatible with Ampere and later GPUs only",
                                expected="compute capability >= 8.0", found=compute_capability, fix=fix)
    elif want != have:
        raise ArtifactError(
            "the engine was built for another GPU (engines are GPU specific)",
            expected=f"compute capability {manifest.compute_capability} ({manifest.gpu_name or 'unknown GPU'})",
            found=f"compute capability {compute_capability}",
            fix=fix,
        )


def check_io_tensors(manifest: Manifest, found: list[dict[str, Any]]) -> None:
    """The engine's I/O (name, mode, shape, dtype) must be what the manifest promised."""
    if not manifest.io_tensors:
        return
    def key(t: dict[str, Any]) -> tuple[str, str, tuple[int, ...], str]:
        return str(t["name"]), str(t["mode"]), tuple(int(d) for d in t["shape"]), str(t["dtype"])

    expected = sorted(key(t) for t in manifest.io_tensors)
    actual = sorted(key(t) for t in found)
    if expected != actual:
        raise ArtifactError(
            "the engine's inputs/outputs differ from its manifest (engine and manifest from different builds?)",
            expected=str(expected),
            found=str(actual),
            fix="rebuild the folder: edgeseg build --force ...",
        )
