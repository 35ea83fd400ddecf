"""User errors vs internal errors (layer 0: stdlib only).

A user error is something the user can fix: a wrong path, a bad image, an impossible
option. Its message says what was expected, what was found and what to run. The CLI
prints it without a traceback and exits 1 (``UsageError``: 2). Anything else that
escapes is a bug in edgeseg and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgesegError(Exception):
    """Base class of every error the user can act on."""

    exit_code = 1

    def __init__(
        self,
        problem: str,
        *,
        expected: str | None = None,
        found: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.expected = expected
        self.found = found
        self.fix = fix
        super().__init__(self.format())

    def format(self) -> str:
        lines = [self.problem]
        if self.expected:
            lines.append(f"  expected: {self.expected}")
        if self.found:
            lines.append(f"  found:    {self.found}")
        if self.fix:
            lines.append(f"  fix:      {self.fix}")
        return "\n".join(lines)


class UsageError(EdgesegError):
    """Invalid or conflicting command-line options (exit code 2)."""

    exit_code = 2


class ConfigError(EdgesegError):
    """An impossible configuration (precision, sizes, options)."""


class InputError(EdgesegError):
    """Bad user data: images, masks, folders."""


class ModelError(EdgesegError):
    """Unknown model name, incompatible weights, bad model options."""


class UnknownModelError(ModelError, UsageError):
    """A model name that is not registered: the value of an option (--model), so a bad option (exit 2),
    like an unknown dataset KIND or --precision."""


class ArtifactError(EdgesegError):
    """A missing, corrupt or mismatched artifact (ONNX, engine, manifest, cache)."""


class DependencyError(EdgesegError):
    """An optional dependency (tensorrt, pycuda, matplotlib...) is missing."""


class AccuracyError(EdgesegError):
    """A parity or accuracy gate failed."""


class InternalError(Exception):
    """A bug in edgeseg: should never happen, keeps its traceback."""


def close_names(name: str, choices: Iterable[str], n: int = 1) -> list[str]:
    """Up to ``n`` of ``choices`` most like ``name`` (case-insensitive, as spelled in ``choices``), for a
    "did you mean" in an error's fix."""
    lowered = {c.lower(): c for c in choices}
    return [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)]


DESKTOP_INSTALL = "pip install torch==2.13.0 && pip install 'edgeseg[desktop]'"  # torch first: no CUDA build
# Top-level import name -> the command that installs it (import names are not always pip names: PIL, cv2).
INSTALL_COMMANDS = {
    "torch": DESKTOP_INSTALL,
    "torchvision": DESKTOP_INSTALL,
    # build --onnx on a device needs onnx but not torch
    "onnx": "pip install 'edgeseg[jetson]' (on the device; the workstation: " + DESKTOP_INSTALL + ")",
    "onnxsim": DESKTOP_INSTALL,
    "onnxruntime": "pip install 'edgeseg[robot]'",
    "cv2": "pip install 'edgeseg[video]'",
    "matplotlib": "pip install 'edgeseg[report]'",
    "PIL": "pip install pillow",
}


def install_command(module: str, *, extra: str | None = None) -> str:
    """The pip command that provides ``module`` (its top-level name decides; ``extra`` for unlisted ones)."""
    top = module.split(".")[0]
    if top in INSTALL_COMMANDS:
        return INSTALL_COMMANDS[top]
    return f"pip install 'edgeseg[{extra}]'" if extra else f"pip install {top}"


def require(module: str, *, extra: str | None = None, purpose: str = ""):
    """Import an optional dependency or raise a DependencyError saying how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # The module that is really missing: importing edgeseg.models fails on torch, not on edgeseg.
        missing = exc.name if isinstance(exc, ModuleNotFoundError) and exc.name else module
        top = missing.split(".")[0]
        raise DependencyError(
            f"{top} is needed{' for ' + purpose if purpose else ''} but cannot be imported",
            found=f"{type(exc).__name__}: {exc}",
            fix=install_command(missing, extra=extra),
        ) from exc
