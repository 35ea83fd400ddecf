"""``edgeseg doctor`` through click: text and --json, exit codes (0 unless something installed is broken, 2 for a
bad option), on fake machines (tests/runtime/test_doctor.py's hosts) and on this one."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers.doctor_hosts import ORIN, gpu_machine, make_host, onnxruntime

from edgeseg import __version__
from edgeseg.cli import main
from edgeseg.runtime import doctor, doctor_facts


def use_host(monkeypatch: pytest.MonkeyPatch, host: doctor_facts.Host) -> None:
    real = doctor.diagnose
    monkeypatch.setattr(doctor, "diagnose", lambda host_=None: real(host))


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["doctor", *args])


def test_a_ready_jetson_prints_each_section_and_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_host(monkeypatch, make_host(tmp_path, gpu_machine("10.3.0.30", ORIN, dla_cores=2), jetpack="6",
                                    model="NVIDIA Jetson AGX Orin Developer Kit", gpu=ORIN))
    result = invoke()
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.splitlines()[0] == f"edgeseg {__version__} doctor"
    for title in ("Python", "Jetson", "TensorRT", "CUDA", "GPU", "GPU kernels", "OpenCV", "This machine runs",
                  "Summary", "next:"):
        assert f"\n{title}\n" in out, title
    assert "  ok    TensorRT 10.3.0.30: strongly typed, DLA, version-compatible engines, implicit calibrators" in out
    assert "zero-copy mapped buffers" in out and "JetPack 6 (L4T R36.4.0)" in out
    assert "0 error(s), 0 warning(s)" in out
    assert out.rstrip().endswith("edgeseg build --onnx DIR/model.int8.onnx --backend tensorrt   "
                                 "(the Q/DQ ONNX from a workstation)")
    assert "Traceback" not in out


def test_broken_onnxruntime_exits_1_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_host(monkeypatch, make_host(tmp_path, {"onnxruntime": ImportError("libonnxruntime.so: cannot open")}))
    result = invoke()
    assert result.exit_code == 1, result.output
    assert "  FAIL  onnxruntime is installed but fails to import: ImportError: libonnxruntime.so" in result.output
    assert "fix: reinstall it: pip install --force-reinstall onnxruntime" in result.output
    assert "fix the lines marked error above, then: edgeseg doctor" in result.output
    assert "Traceback" not in result.output


def test_json_has_the_report_and_the_same_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    modules = {"onnxruntime": onnxruntime(), "tensorrt": gpu_machine("10.3.0", ORIN)["tensorrt"]}  # no pycuda
    use_host(monkeypatch, make_host(tmp_path, modules))
    result = invoke("--json")
    assert result.exit_code == 1
    data = json.loads(result.output)  # stdout is the JSON alone
    assert data["exit_code"] == 1 and data["counts"]["error"] == 1
    assert data["tensorrt"]["version"] == "10.3.0" and data["cuda"]["pycuda"]["state"] == "absent"
    assert [f["text"] for f in data["findings"] if f["status"] == "error"] == [
        "TensorRT is installed but pycuda is not: engines build, but validate, run and bench cannot run them"]
    assert "pycuda" in data["not_installed"]


def test_a_bad_option_is_a_usage_error() -> None:
    result = invoke("--bogus")
    assert result.exit_code == 2 and "No such option" in result.output


def test_doctor_is_listed_in_the_help() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "doctor" in result.output
    help_text = invoke("--help")
    assert help_text.exit_code == 0 and "--json" in help_text.output


def test_doctor_runs_on_this_machine() -> None:
    text = invoke()
    assert text.exit_code in (0, 1) and "Traceback" not in text.output and "\nSummary\n" in text.output
    data = json.loads(invoke("--json").output)
    assert data["exit_code"] == text.exit_code
    assert data["python"]["version"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
