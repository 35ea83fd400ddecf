"""edgeseg doctor's OpenVINO section (issue #26 item 4): the version, each device with the precisions it runs,
absent as information with the install command, broken as a warning. A fake openvino module: no OpenVINO needed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from helpers.doctor_hosts import make_host, onnxruntime

from edgeseg.runtime.doctor import INFO, OK, WARN, diagnose, report_lines


class FakeCore:
    available_devices = ["CPU", "GPU"]
    properties = {("CPU", "FULL_DEVICE_NAME"): "Intel(R) Core(TM) Ultra 7 155H",
                  ("CPU", "OPTIMIZATION_CAPABILITIES"): ["FP32", "INT8", "BIN", "EXPORT_IMPORT"],
                  ("GPU", "FULL_DEVICE_NAME"): "Intel(R) Arc(TM) Graphics (iGPU)",
                  ("GPU", "OPTIMIZATION_CAPABILITIES"): ["FP32", "BIN", "FP16", "INT8", "EXPORT_IMPORT"]}

    def get_property(self, device: str, name: str) -> object:
        return self.properties[(device, name)]


def test_openvino_devices_and_their_precisions(tmp_path: Path) -> None:
    fake = SimpleNamespace(__version__="2026.4.1", Core=FakeCore)
    report = diagnose(make_host(tmp_path, {"onnxruntime": onnxruntime(), "openvino": fake}))
    lines = [f.text for f in report.findings if f.section == "openvino"]
    assert lines[0].startswith("openvino 2026.4.1")
    assert "CPU: Intel(R) Core(TM) Ultra 7 155H: fp32, int8" in lines
    assert "GPU: Intel(R) Arc(TM) Graphics (iGPU): fp32, fp16, int8; untested by edgeseg" in lines
    assert all(f.status == OK for f in report.findings if f.section == "openvino")
    assert report.to_dict()["openvino_devices"][1] == {"name": "GPU", "full_name": "Intel(R) Arc(TM) Graphics (iGPU)",
                                                       "precisions": ["fp32", "fp16", "int8"]}
    assert any(text == "OpenVINO" for status, text in report_lines(report) if status == "title")
    assert next(c for c in report.capabilities if c.what.startswith("OpenVINO")).available


def test_openvino_absent_is_information_with_the_install_command(tmp_path: Path) -> None:
    report = diagnose(make_host(tmp_path, {"onnxruntime": onnxruntime()}))
    absent = next(f for f in report.findings if f.section == "packages" and f.text.startswith("openvino"))
    assert absent.status == INFO and absent.fix == "pip install 'edgeseg[openvino]'"
    assert not [f for f in report.findings if f.section == "openvino"] and report.exit_code == 0


def test_openvino_whose_core_fails_is_a_warning(tmp_path: Path) -> None:
    def broken_core() -> object:
        raise RuntimeError("Cannot load library libopenvino_intel_cpu_plugin.so")

    fake = SimpleNamespace(__version__="2026.4.1", Core=broken_core)
    report = diagnose(make_host(tmp_path, {"onnxruntime": onnxruntime(), "openvino": fake}))
    warning = next(f for f in report.findings if f.section == "openvino")
    assert warning.status == WARN and "libopenvino_intel_cpu_plugin" in warning.text and report.exit_code == 0
