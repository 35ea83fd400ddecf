"""The robot install (README "Install", b): `pip install 'edgeseg[robot]'` into a bare venv — no torch, no onnx —
then `edgeseg validate`, `run` and `bench` on a build folder made here, and the desktop-only commands refusing
with the install line instead of a traceback.

Slow (creates a venv and downloads onnxruntime + OpenCV wheels, about a minute) but part of CI: this is the
only test that proves the robot's dependency list. Skipped only when the package index cannot be reached (probed
before the install); an install that fails while the index answers, such as an unsatisfiable pin, fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.package_index import index_unreachable

from edgeseg.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL = "shufflenetv2_x0_5_mdspp"

pytestmark = pytest.mark.slow


def run(args: list[str | Path], *, env: dict[str, str] | None = None, timeout: int = 600,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=cwd, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def robot_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    unreachable = index_unreachable()
    if unreachable:
        pytest.skip("the package index is unreachable: " + unreachable)
    venv = tmp_path_factory.mktemp("robot") / "venv"
    made = run([sys.executable, "-m", "venv", venv])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    # a copy of the tree without build outputs: pip builds a wheel from it, as from a release
    installed = run([python, "-m", "pip", "install", "-q", f"{ROOT}[robot]"], timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]  # the index answered: a failed install is a bug
    return venv


@pytest.fixture(scope="module")
def build_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An INT8 build folder and a folder of frames, made with the desktop install (this process)."""
    from edgeseg.data.generate import SynthConfig, write_synthetic_dataset

    data = tmp_path_factory.mktemp("data")
    write_synthetic_dataset(SynthConfig(out=data, num=6, height=128, width=128, seed=5))
    out = tmp_path_factory.mktemp("engines") / "tiny"
    result = CliRunner().invoke(main, ["build", "--model", MODEL, "--input-size", "128x128", "--calib",
                                       str(data / "images"), "--calib-images", "4", "--val", str(data),
                                       "--min-agreement", "0", "--max-miou-drop", "100", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, data / "images"


def edgeseg(venv: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    return run([venv / "bin" / "edgeseg", *args], env=env, cwd=cwd)


def test_robot_install_has_no_torch_and_no_onnx(robot_venv: Path) -> None:
    for module in ("torch", "onnx", "onnxsim", "matplotlib"):
        probe = run([robot_venv / "bin" / "python", "-c", f"import {module}"])
        assert probe.returncode != 0, f"{module} is installed by the robot extra"
    for module in ("onnxruntime", "cv2", "edgeseg.runtime"):
        probe = run([robot_venv / "bin" / "python", "-c", f"import {module}"])
        assert probe.returncode == 0, probe.stderr


def test_validate_run_and_bench_on_the_robot(robot_venv: Path, build_folder: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    out, frames = build_folder
    checked = edgeseg(robot_venv, "validate", "--candidate", out / "model.int8.ort.onnx", "--reference",
                      out / "reference.npz", "--out", tmp_path / "v", cwd=tmp_path)
    assert checked.returncode == 0 and "validation passed" in checked.stdout, checked.stdout + checked.stderr
    ran = edgeseg(robot_venv, "run", "--artifacts", out, "--source", frames, "--save", tmp_path / "ov",
                  "--max-frames", "3", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert len(list((tmp_path / "ov").glob("*.png"))) == 3 and "model.int8.ort.onnx (int8" in ran.stderr
    timed = edgeseg(robot_venv, "bench", "--artifacts", out, "--iterations", "3", "--warmup", "1",
                    "--out", tmp_path / "b", cwd=tmp_path)
    assert timed.returncode == 0, timed.stdout + timed.stderr
    assert "ort-int8" in timed.stdout and "Traceback" not in timed.stderr


@pytest.mark.parametrize("args", [["models"], ["export", "--model", MODEL, "--out", "x"],
                                  ["run", "--artifacts", "ENGINE", "--source", "x", "--backend", "torch",
                                   "--weights", "W"],
                                  ["build", "--onnx", "ENGINE/model.onnx", "--out", "x"]])
def test_desktop_commands_name_the_desktop_install(robot_venv: Path, build_folder: tuple[Path, Path],
                                                   tmp_path: Path, args: list[str]) -> None:
    out, _ = build_folder
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not used")
    args = [a.replace("ENGINE", str(out)) if a.startswith("ENGINE") else str(weights) if a == "W" else a
            for a in args]
    result = edgeseg(robot_venv, *args, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "edgeseg[desktop]" in result.stderr, result.stderr
    if args[0] == "build":  # building from ONNX on the device needs onnx, not torch
        assert "edgeseg[jetson]" in result.stderr
