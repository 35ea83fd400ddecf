"""mypy on edgeseg/engine and edgeseg/runtime against tensorrt-stubs.

The stubs have two syntax errors mypy rejects (parameters named ``in``; a non-defaulted
``channel_axis`` after defaulted parameters in ``add_scale_nd``). They are fixed in a copy
under tmp_path, never in site-packages, and mypy reads the copy through MYPYPATH.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUB_PACKAGES = ("tensorrt", "tensorrt_bindings")


def find_stub_dirs() -> dict[str, Path]:
    """The installed stub packages: folders named tensorrt/ and tensorrt_bindings/ holding .pyi files."""
    candidates = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        candidates.append(site.getusersitepackages())
    found: dict[str, Path] = {}
    for base in dict.fromkeys(candidates):
        for package in STUB_PACKAGES:
            folder = Path(base) / package
            if package not in found and folder.is_dir() and any(folder.glob("*.pyi")):
                found[package] = folder
    return found


def fix_stub_text(text: str) -> str:
    """The two syntax fixes the stubs need (a parameter named ``in``; a non-default after defaults)."""
    text = re.sub(r"\bin: ", "in_: ", text)  # `in` is a keyword: rename the parameter
    return re.sub(r"(def add_scale_nd\([^)]*channel_axis: int)(?! = )", r"\1 = ...", text)


def test_fix_stub_text_repairs_both_errors() -> None:
    sample = "def f(self, in: int) -> None: ...\ndef add_scale_nd(self, a: int = 1, channel_axis: int) -> None: ..."
    fixed = fix_stub_text(sample)
    assert "in_: int" in fixed and "(self, in:" not in fixed
    assert "channel_axis: int = ..." in fixed
    compile(fixed, "<stub>", "exec")  # now valid Python syntax
    assert fix_stub_text(fixed) == fixed  # idempotent


def test_mypy_engine_and_runtime_against_tensorrt_stubs(tmp_path: Path) -> None:
    stubs = find_stub_dirs()
    if set(stubs) != set(STUB_PACKAGES):
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs==10.13.0.35.1)")
    if shutil.which("mypy") is None and subprocess.run([sys.executable, "-m", "mypy", "--version"],
                                                       capture_output=True).returncode != 0:
        pytest.skip("mypy is not installed (pip install 'edgeseg[dev]')")
    stub_root = tmp_path / "stubs"
    for package, folder in stubs.items():
        target = stub_root / package
        target.mkdir(parents=True)
        for pyi in folder.glob("*.pyi"):
            (target / pyi.name).write_text(fix_stub_text(pyi.read_text()))
    # --follow-imports silent: modules these import (quant/, spec...) are analysed for their types,
    # but only engine/ and runtime/ are held to zero errors here.
    env = {**os.environ, "MYPYPATH": str(stub_root)}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy_cache"),
         "--config-file", str(ROOT / "pyproject.toml"), "--follow-imports", "silent",
         "edgeseg/engine", "edgeseg/runtime"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
