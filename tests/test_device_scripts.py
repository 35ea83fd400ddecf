"""The GPU device check's scripts, run here (issue #23 item 3): no GPU needed.

- ``tests/gpu/run_on_device.sh --dry-run`` runs end to end on a machine without a GPU: steps 1 and 2 report the
  machine (compiler, Python.h, libcuda) and the Python, steps 3-5 say "skipped: no GPU", all within a minute;
  without ``--dry-run`` the same run fails (nothing was checked on a GPU).
- ``tests/gpu/fetch_wheels.sh`` (slow; skipped only when no package index answers) fills ``.whl/`` of a
  temporary checkout with pycuda's sdist and the wheels it needs, and nothing built from source.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_DIR = ROOT / "tests" / "gpu"
GPU_STEPS = ("3. pycuda", "3b. CuPy kernel check (plan B)", "4. gpu tests", "5. benchmark")


def run_device_script(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str, float]:
    """run_on_device.sh with a failing nvidia-smi first on PATH (no GPU, even on a GPU machine)."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    smi = fake_bin / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed: no devices' >&2\nexit 9\n")
    smi.chmod(0o755)
    out = tmp_path / f"out{len(args)}"
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}", "OUT": str(out),
           "EDGESEG_GPU_WORK": str(tmp_path / "work"), "EDGESEG_WHEELS": str(tmp_path / "no-wheels"),
           "PYTHON": sys.executable}
    start = time.monotonic()
    result = subprocess.run(["bash", str(GPU_DIR / "run_on_device.sh"), *args], env=env, capture_output=True,
                            text=True, timeout=120)
    elapsed = time.monotonic() - start
    log = (out / "run_on_device.log").read_text()
    return result, log, elapsed


def test_the_device_check_runs_dry_without_a_gpu(tmp_path: Path) -> None:
    result, log, elapsed = run_device_script(tmp_path, "--dry-run")
    assert result.returncode == 0, log[-3000:]
    assert elapsed < 60
    for step in GPU_STEPS:
        assert f"{step}: skipped: no GPU" in log, step
    for probe in ("Python.h:", "libcuda (ldconfig):", "g++", "1. the machine", "2. the Python"):
        assert probe in log, probe
    assert log.rstrip().endswith("nothing was checked on a GPU")
    assert "pip install" not in log  # no venv, no index tried


def test_without_dry_run_a_machine_without_a_gpu_fails_the_check(tmp_path: Path) -> None:
    result, log, _ = run_device_script(tmp_path)
    assert result.returncode == 1
    assert "FAILED:" in log and "steps 3-5 skipped (no GPU): nothing was checked on a GPU" in log


def test_the_budgets_fit_one_ten_minute_call() -> None:
    text = (GPU_DIR / "run_on_device.sh").read_text()
    assert "DEADLINE_S=${EDGESEG_GPU_DEADLINE_S:-420}" in text
    assert 'timed "3. pycuda" 200' in text and 'timed "5. benchmark" 90' in text
    assert "budget > 150 )); then budget=150" in text and "-o faulthandler_timeout=100" in text
    assert 'CFLAGS="-g0' in text


# ---- fetch_wheels.sh (slow: pip prepares pycuda's metadata in an isolated build environment, ~1 minute) ----

def index_answers(tmp_path: Path) -> bool:
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--retries", "0",
                            "--timeout", "10", "-d", str(tmp_path / "probe"), "platformdirs"],
                           capture_output=True, text=True, timeout=60)
    return probe.returncode == 0


@pytest.mark.slow
def test_fetch_wheels_fills_the_wheels_folder_of_a_checkout(tmp_path: Path) -> None:
    if not index_answers(tmp_path):
        pytest.skip("no package index answers pip here")
    checkout = tmp_path / "checkout"
    (checkout / "tests" / "gpu").mkdir(parents=True)
    shutil.copy(GPU_DIR / "fetch_wheels.sh", checkout / "tests" / "gpu" / "fetch_wheels.sh")
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("DEST", None)
    result = subprocess.run(["bash", str(checkout / "tests" / "gpu" / "fetch_wheels.sh")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    wheels = checkout / ".whl"
    names = sorted(path.name for path in wheels.iterdir())
    assert [n for n in names if n.endswith(".tar.gz")] == ["pycuda-2026.1.tar.gz"], names  # the only sdist
    projects = {name.split("-")[0].lower() for name in names if name.endswith(".whl")}
    assert projects == {"pytools", "platformdirs", "mako", "markupsafe", "typing_extensions", "siphash24"}, names
    for name in names:
        if name.endswith(".whl"):  # pure, or built for the GPU machine's CPython 3.12 on x86_64
            assert "py3-none-any" in name or ("cp312" in name and "x86_64" in name), name
    assert sum(path.stat().st_size for path in wheels.iterdir()) < 5 << 20
    sys.path.insert(0, str(GPU_DIR))
    try:
        from build_pycuda import PURE_DEPS  # what build_pycuda.py installs from the folder
    finally:
        sys.path.remove(str(GPU_DIR))
    assert set(PURE_DEPS) <= projects
