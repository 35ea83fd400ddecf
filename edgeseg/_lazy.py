"""The one way a package exports names lazily (layer 0, stdlib).

A package's ``__init__`` lists ``_LAZY = {name: ".module"}`` and sets
``__getattr__ = lazy_exports(__name__, _LAZY)``: ``from edgeseg.runtime import Segmenter``
imports ``edgeseg.runtime.segmenter`` only then, so importing a package stays cheap (no torch,
onnx or tensorrt) and the robot can import the parts it needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``names[name]`` (relative to ``package``) on first use."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    return __getattr__
