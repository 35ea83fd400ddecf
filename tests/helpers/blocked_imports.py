"""Run Python code in a child process where some top-level modules cannot be imported.

The layer rules (docs/architecture.md) say which packages work without torch, onnx, TensorRT...;
the tests check that in a fresh interpreter, so nothing imported by the test process leaks in.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository root: edgeseg/ is imported from here

_PRELUDE = """\
import importlib.abc
import sys


class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(name + " is blocked by the test", name=name)
        return None


sys.meta_path.insert(0, _Blocked())
sys.path.insert(0, {root!r})
"""


def run_without(code: str, blocked: Iterable[str], *, timeout: float = 120, cwd: str | Path | None = None,
                python: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) with the top-level modules in ``blocked`` unimportable and the repository
    root first on sys.path (``sys`` is already imported); stdout and stderr are captured as text.
    ``python``: another interpreter (a Python 3.8, tests/test_python38.py) instead of this one."""
    names = tuple(sorted(set(blocked)))
    prelude = _PRELUDE.format(blocked=names, root=str(ROOT))
    return subprocess.run([str(python or sys.executable), "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)
