"""The inference backends: their interface and their one registry (layer 1, numpy only).

Host path (all backends): ``infer(x)`` takes the preprocessed 1x3xHxW float32 input and
returns 1xCxHxW logits as a numpy array. GPU backends additionally run on device
buffers inside the ``Segmenter`` without touching the host (see segmenter.py).

The registry is the one list of backends: name -> how to open one (a factory named as
``"module:function"`` under ``edgeseg.runtime``, imported only when a backend is opened), the
manifest roles (files) it runs, what it needs installed (the import and the pip extra), and how
"auto" ranks it. ``Segmenter``, ``edgeseg run/build/bench/validate`` and ``--precision best`` ask it.
Adding a backend is one module (its class and factory) plus one ``register_backend`` call below.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Union, runtime_checkable

import numpy as np

from ..errors import ArtifactError, ConfigError, DependencyError, InputError, install_command, require


@runtime_checkable
class Backend(Protocol):
    name: str  # a registered backend name (backend_names())
    input_name: str
    output_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    def infer(self, x: np.ndarray) -> np.ndarray:
        """1x3xHxW float32 -> 1xCxHxW float32 logits (a new array or a reused buffer)."""
        ...

    def close(self) -> None:
        ...


# "module:function" under edgeseg.runtime (imported when needed), or the function itself
Hook = Union[str, Callable[..., Any]]


@dataclass(frozen=True)
class Candidate:
    """One way a backend can run a build folder's file, for ``--precision best``: the manifest role of the
    file, the precision it then runs in, and the options the backend's factory takes for it."""

    backend: str
    role: str
    precision: str  # fp32 | int8 | bf16 | fp16 | int8+bf16 ...
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


@dataclass(frozen=True)
class BackendInfo:
    """A registered backend.

    ``factory(path, *, threads, manifest, folder, **options) -> Backend`` opens one on a file;
    ``roles``: the manifest roles of the files it runs, best first (empty: it runs no file of a build folder,
    like the PyTorch reference); ``suffixes``: the file suffixes it runs (``validate --candidate``);
    ``requires`` / ``extra``: the module it imports and the edgeseg extra that installs it;
    ``auto_rank``: "auto" takes the available backend with the lowest rank that can run the folder's files
    (None: only when named); ``probe() -> bool``: usable here (default: ``requires`` importable);
    ``builds``: ``edgeseg build --backend`` can target it; ``candidates() -> [Candidate]``: what
    ``--precision best`` validates and times on it here; ``gpu_loop``: the Segmenter runs it in the GPU loop.
    """

    name: str
    factory: Hook
    roles: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = (".onnx",)
    requires: str = ""
    extra: str = ""
    auto_rank: int | None = None
    probe: Hook | None = None
    builds: bool = False
    candidates: Hook | None = None
    gpu_loop: bool = False
    description: str = ""

    def installed(self) -> bool:
        if not self.requires:
            return True
        try:
            return importlib.util.find_spec(self.requires) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules (blocked), or a broken parent
            return False

    def available(self) -> bool:
        """Installed and usable on this machine (TensorRT: a GPU too)."""
        if self.probe is not None:
            try:
                return bool(_resolve(self.probe)())
            except Exception:
                return False
        return self.installed()

    def install_command(self) -> str:
        return install_command(self.requires, extra=self.extra or None) if self.requires else ""

    def runs(self, role: str) -> bool:
        return role in self.roles

    def best_candidates(self) -> list[Candidate]:
        if self.candidates is None:
            return []
        return list(_resolve(self.candidates)())


_REGISTRY: dict[str, BackendInfo] = {}


def _resolve(hook: Hook) -> Callable[..., Any]:
    if callable(hook):
        return hook
    module, _, attribute = hook.partition(":")
    return getattr(importlib.import_module(module, __package__), attribute)  # type: ignore[no-any-return]


def register_backend(info: BackendInfo, *, replace: bool = False) -> BackendInfo:
    """Add a backend to the registry (``replace``: overwrite one of the same name)."""
    if not info.name or info.name == "auto" or not info.name.replace("_", "").isalnum():
        raise ConfigError("a backend name is a plain word other than 'auto'", found=repr(info.name))
    if info.name in _REGISTRY and not replace:
        raise ConfigError(f"backend {info.name!r} is already registered", fix="pass replace=True to overwrite it")
    _REGISTRY[info.name] = info
    return info


def unregister_backend(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered_backends() -> tuple[BackendInfo, ...]:
    return tuple(_REGISTRY.values())


def backend_names(*, builds: bool = False, runs_files: bool = False) -> tuple[str, ...]:
    """Registered names (registration order); ``builds``: only those a build can target; ``runs_files``: only
    those that run a file (not the PyTorch reference)."""
    return tuple(info.name for info in _REGISTRY.values()
                 if (not builds or info.builds) and (not runs_files or info.roles))


def backend_choices(*, builds: bool = False, runs_files: bool = False) -> tuple[str, ...]:
    """What a ``--backend`` option accepts: ``auto`` and the registered names."""
    return ("auto",) + backend_names(builds=builds, runs_files=runs_files)


def backend_info(name: str) -> BackendInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError("unknown backend", expected=" | ".join(backend_choices()), found=repr(name)) from None


def ranked(names: tuple[str, ...] | None = None) -> list[BackendInfo]:
    """The backends "auto" may pick, best first."""
    chosen = [_REGISTRY[n] for n in (names if names is not None else tuple(_REGISTRY)) if n in _REGISTRY]
    return sorted((i for i in chosen if i.auto_rank is not None), key=lambda i: i.auto_rank or 0)


def choose_for_folder(requested: str, artifacts: dict[str, str], folder: Path, *, built_with: str = "",
                      validated_role: str | None = None) -> str:
    """The backend that runs a build folder: ``requested``, or for "auto" the backend the build chose
    (``built_with``) when it is available here, else the best-ranked available backend that can run one of the
    folder's files (ONNX Runtime when nothing else can: its error says what is missing)."""
    if requested != "auto":
        backend_info(requested)
        return requested
    present = {role for role, name in artifacts.items() if (folder / name).is_file()}
    own = _REGISTRY.get(built_with)
    validated_here = own is not None and own.auto_rank is not None and validated_role in present \
        and own.runs(validated_role or "")
    if validated_here and own is not None and own.available():
        return own.name
    for info in ranked():
        if present & set(info.roles) and info.available():
            if validated_here and own is not None and info.runs(validated_role or ""):
                # the file the build validated on its runtime would run on another one: not silently
                raise DependencyError(
                    f"the build validated {artifacts.get(validated_role or '', validated_role)} on {own.name}, "
                    f"which is not installed here", found=f"{own.requires or own.name} missing",
                    fix=f"{own.install_command()}, or pass --backend {info.name} to run that file on {info.name} "
                        "(not the runtime its gates were checked on)")
            return info.name
    return "onnxruntime"


def choose_for_build(requested: str) -> str:
    """The backend a build targets: ``requested`` (refused when it cannot run here), or for "auto" the
    best-ranked available backend that builds."""
    if requested == "auto":
        for info in ranked(backend_names(builds=True)):
            if info.available():
                return info.name
        return "onnxruntime"
    info = backend_info(requested)
    if not info.builds:
        raise ConfigError(f"a build cannot target the {requested} backend",
                          expected=" | ".join(backend_choices(builds=True)))
    if not info.available():
        raise ConfigError(f"--backend {requested} was asked for but it cannot run here",
                          found=f"{info.requires or requested} not usable",
                          fix=info.install_command() or "build on a machine that has it")
    return requested


def backend_for_file(path: Path, requested: str = "auto") -> str:
    """The backend that runs a candidate file: ``requested``, or by suffix the best-ranked registered backend
    that runs it and is installed (the first that runs it when none is)."""
    suffix = path.suffix.lower()
    if requested != "auto":
        info = backend_info(requested)
        if suffix not in info.suffixes:
            raise ConfigError(f"the {requested} backend does not run {path.name}",
                              expected=", ".join(info.suffixes), found=suffix or "no suffix")
        return requested
    runs = [i for i in ranked() if suffix in i.suffixes]
    for info in runs:
        if info.installed():
            return info.name
    if runs:
        return runs[0].name
    known = sorted({s for i in _REGISTRY.values() for s in i.suffixes})
    raise ConfigError(f"cannot tell which backend runs {path.name}", expected=", ".join(known),
                      found=suffix or "no suffix")


def open_backend(name: str, path: Any, *, threads: int | None = None, manifest: Any = None,
                 folder: Path | None = None, **options: Any) -> Any:
    """A backend instance of ``name`` on ``path`` (a DependencyError naming the extra when it is missing)."""
    info = backend_info(name)
    if info.requires:
        require(info.requires, extra=info.extra or None, purpose=f"the {name} backend")
    return _resolve(info.factory)(path, threads=threads, manifest=manifest, folder=folder, **options)


def best_candidates(names: tuple[str, ...] | None = None) -> list[Candidate]:
    """What ``--precision best`` validates and times here: every candidate of each available backend that
    builds (``names``: only these), in registration order."""
    found: list[Candidate] = []
    for info in _REGISTRY.values():
        if info.builds and (names is None or info.name in names) and info.available():
            found.extend(info.best_candidates())
    return found


# -- the backends -------------------------------------------------------------------------------------------
register_backend(BackendInfo(
    "tensorrt", ".factories:open_tensorrt", roles=("engine",), suffixes=(".engine", ".plan", ".trt"),
    requires="tensorrt", extra="trt", auto_rank=0, probe=".segmenter:tensorrt_available", builds=True,
    gpu_loop=True, description="TensorRT engine on an NVIDIA GPU (GPU preprocessing, CUDA graph)"))
register_backend(BackendInfo(
    "onnxruntime", ".ort_backend:open_onnxruntime", roles=("onnx_int8_cpu", "onnx_int8_trt", "onnx"),
    requires="onnxruntime", extra="robot", auto_rank=10, builds=True, candidates=".ort_backend:best_candidates",
    description="ONNX Runtime on the CPU: model.onnx, model.int8.ort.onnx (and the Q/DQ file as it is)"))
register_backend(BackendInfo(
    "openvino", ".openvino_backend:open_openvino", roles=("onnx_int8_ov", "onnx_int8_trt", "onnx"),
    suffixes=(".onnx", ".xml"),
    requires="openvino",
    extra="openvino", auto_rank=20, builds=True, candidates=".openvino_backend:best_candidates",
    description="OpenVINO on Intel CPUs (GPU/NPU devices untested): model.onnx, model.int8.ov.onnx (Q/DQ; "
                "model.int8.onnx too); an "
                "OpenVINO IR (.xml) for validate --candidate"))
register_backend(BackendInfo(
    "torch", ".factories:open_torch", roles=(), suffixes=(), requires="torch", extra="desktop",
    description="the PyTorch reference (needs the checkpoint)"))

# the registered names at import (the registry may grow later: ask backend_names())
BACKENDS = backend_names()


def checked_model_path(path: str | os.PathLike[str], threads: int | None) -> Path:
    """The model file a file-based backend opens, and its thread count, checked before the runtime loads."""
    target = Path(path)
    if not target.is_file():
        raise ArtifactError("ONNX model not found", expected=str(target),
                            found="a folder" if target.exists() else "no such file",
                            fix="export it first: edgeseg export --model NAME --out DIR")
    if threads is not None and threads < 1:
        raise InputError("threads must be at least 1", found=str(threads))
    return target


def static_shape_error(path: Path, what: str, found: str) -> ArtifactError:
    """A file-based backend's refusal of a dynamic input or output shape."""
    return ArtifactError(f"{path.name} has a dynamic {what} shape",
                         expected="static shapes (1x3xHxW in, 1xCxHxW out) as edgeseg export writes",
                         found=found, fix="re-export with edgeseg export")


def check_input(x: Any, backend: str, dtype: Any, shape: tuple[int, ...]) -> None:
    """A file-based backend's ``infer`` input: a ``dtype`` array of ``shape``, else InputError."""
    if not isinstance(x, np.ndarray) or x.dtype != dtype or tuple(x.shape) != shape:
        found = f"{x.dtype} array of shape {tuple(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__
        raise InputError(f"wrong input for the {backend} backend",
                         expected=f"{np.dtype(dtype).name} array of shape {shape}", found=found,
                         fix="preprocess frames with edgeseg.spec.preprocess")
