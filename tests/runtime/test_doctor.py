"""``edgeseg doctor``'s probes (edgeseg/runtime/doctor.py) against fake machines: a Jetson on JetPack 5 and 6,
discrete GPUs with TensorRT 10 and 11, no GPU, broken and missing packages, OpenCV without GStreamer. Every fake
comes through ``Host`` (the importer, /etc/nv_tegra_release, the CUDA libraries, the PTX load), so nothing here
needs TensorRT, pycuda or a GPU; the last tests run the real probes on this machine."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.doctor_hosts import (
    ORIN,
    PASCAL,
    RTX,
    TEGRA,
    XAVIER,
    Importer,
    fake_module,
    gpu_machine,
    make_host,
    onnxruntime,
    opencv,
    pycuda,
)
from helpers.fake_tensorrt import make_fake_trt

from edgeseg.runtime import doctor_facts
from edgeseg.runtime.doctor import diagnose, report_lines
from edgeseg.runtime.doctor_facts import (
    ERROR,
    EXTRAS,
    INFO,
    MISSING,
    OK,
    WARN,
    DoctorReport,
    Finding,
    Host,
    TrtFeatures,
)
from edgeseg.runtime.doctor_probes import parse_tegra_release, probe_import
from edgeseg.trt_version import TrtVersion

ROOT = Path(__file__).resolve().parents[2]


def lines(report: DoctorReport, status: str | None = None) -> list[str]:
    return [f.text for f in report.findings if status is None or f.status == status]


def finding(report: DoctorReport, section: str, contains: str) -> Finding:
    matches = [f for f in report.findings if f.section == section and contains in f.text]
    assert matches, (section, contains, lines(report))
    return matches[0]


def capability(report: DoctorReport, prefix: str) -> bool:
    return next(c.available for c in report.capabilities if c.what.startswith(prefix))


# -- Jetsons ---------------------------------------------------------------------------------------------------------
def test_orin_on_jetpack_6_with_tensorrt_10_is_ready(tmp_path: Path) -> None:
    host = make_host(tmp_path, gpu_machine("10.3.0.30", ORIN, dla_cores=2), jetpack="6",
                     model="NVIDIA Jetson AGX Orin Developer Kit", gpu=ORIN)
    report = diagnose(host)

    assert report.exit_code == 0, lines(report, ERROR)
    assert lines(report, ERROR) == [] and lines(report, WARN) == []
    assert report.jetson is not None and (report.jetson.l4t, report.jetson.jetpack) == ("R36.4.0", "6")
    assert finding(report, "jetson", "NVIDIA Jetson AGX Orin Developer Kit: JetPack 6 (L4T R36.4.0)").status == OK
    power = finding(report, "jetson", "nvpmodel -m 0")
    assert power.status == INFO and "jetson_clocks" in power.text
    trt = finding(report, "tensorrt", "TensorRT 10.3.0.30")
    assert "strongly typed, DLA, version-compatible engines, implicit calibrators" in trt.text
    assert finding(report, "tensorrt", "DLA cores: 2").status == INFO
    gpu = finding(report, "gpu", "GPU 0: Orin")
    assert "compute capability 8.7" in gpu.text and "zero-copy mapped buffers" in gpu.text and "30720 MiB" in gpu.text
    assert report.gpus[0].buffers == "mapped"
    assert finding(report, "kernels", "compute_87 PTX loads").status == OK
    assert host.loaded and host.loaded[0][0] == 0 and b".target sm_87" in host.loaded[0][1]  # type: ignore[attr-defined]
    assert finding(report, "opencv", "GStreamer: YES (1.20.3)").status == OK
    assert finding(report, "cuda", "CUDA driver 12.2; runtime (libcudart) 12.2").status == OK
    assert finding(report, "cuda", "pycuda 2024.1 (built for CUDA 12.2)").status == OK
    assert capability(report, "TensorRT engines") and capability(report, "csi://")
    assert report.next_commands[0].startswith("edgeseg build --onnx DIR/model.int8.onnx --backend tensorrt")


def test_xavier_on_jetpack_5_with_tensorrt_8_5(tmp_path: Path) -> None:
    host = make_host(tmp_path, gpu_machine("8.5.2.2", XAVIER, dla_cores=2), jetpack="5",
                     model="Jetson-AGX", gpu=XAVIER, python=(3, 8, 10))
    report = diagnose(host)

    assert report.exit_code == 0, lines(report, ERROR)
    assert finding(report, "jetson", "JetPack 5 (L4T R35.4.1)").status == OK
    trt = finding(report, "tensorrt", "TensorRT 8.5.2.2")
    assert trt.text == ("TensorRT 8.5.2.2: DLA, implicit calibrators; "
                        "not in this release: strongly typed, version-compatible engines")
    features = report.tensorrt.features
    assert features == TrtFeatures.of(TrtVersion(8, 5, 2)) and features is not None and features.explicit_batch_flag
    assert finding(report, "kernels", "compute_72 PTX loads").status == OK


def test_jetson_without_tensorrt_in_a_plain_venv_warns_with_the_fix(tmp_path: Path) -> None:
    modules = {"onnxruntime": onnxruntime(), "cv2": opencv(gstreamer=False)}
    host = make_host(tmp_path, modules, jetpack="5", venv_system_site=False, python=(3, 10, 12))
    report = diagnose(host)

    assert report.exit_code == 0
    venv = finding(report, "python", "cannot see JetPack's Python packages")
    assert venv.status == WARN and venv.fix == "recreate it: python3 -m venv --system-site-packages VENV"
    trt = finding(report, "tensorrt", "tensorrt not installed")
    assert trt.status == WARN
    assert "python3-libnvinfer" in (trt.fix or "") and "use python3.8" in (trt.fix or "")
    assert "--system-site-packages" in (trt.fix or "")
    gst = finding(report, "opencv", "GStreamer: NO")
    assert gst.status == WARN and "JetPack's OpenCV" in (gst.fix or "")
    assert not capability(report, "csi://")
    assert finding(report, "cuda", "pycuda not installed").fix == doctor_facts.JETSON_PYCUDA_INSTALL


# -- discrete GPUs and TensorRT releases ---------------------------------------------------------------------------
def test_discrete_gpu_with_tensorrt_10_13_has_no_dla_and_stages_buffers(tmp_path: Path) -> None:
    host = make_host(tmp_path, gpu_machine("10.13.0.35", RTX), gpu=RTX, nvcc="/usr/local/cuda/bin/nvcc")
    report = diagnose(host)

    assert report.exit_code == 0, lines(report, ERROR)
    assert finding(report, "jetson", "not a Jetson").status == INFO
    trt = finding(report, "tensorrt", "TensorRT 10.13.0.35")
    assert "not in this release: DLA" in trt.text and "strongly typed" in trt.text.split(";")[0]
    gpu = finding(report, "gpu", "NVIDIA GeForce RTX 4090")
    assert "discrete: staged device buffers" in gpu.text and report.gpus[0].buffers == "device"
    assert finding(report, "kernels", "compute_87 PTX loads on compute capability 8.9").status == OK
    assert finding(report, "opencv", "GStreamer: YES").status == OK


@pytest.mark.parametrize(("version", "dla", "calibrators", "version_compatible"), [
    ("11.4.0", False, False, True), ("11.4.1", True, False, True), ("11.5.0", True, False, True),
])
def test_tensorrt_11_is_strongly_typed_without_calibrators(tmp_path: Path, version: str, dla: bool,
                                                           calibrators: bool, version_compatible: bool) -> None:
    host = make_host(tmp_path, gpu_machine(version, ORIN, dla_cores=2), jetpack="6", gpu=ORIN)
    report = diagnose(host)

    features = report.tensorrt.features
    assert features is not None and features.strongly_typed and not features.precision_flags
    assert (features.dla, features.implicit_calibrator, features.version_compatible) == (
        dla, calibrators, version_compatible)
    assert "implicit calibrators" in finding(report, "tensorrt", f"TensorRT {version}").text.split("not in")[1]
    if not dla:
        cores = finding(report, "tensorrt", "2 DLA core(s), but TensorRT 11.4.0 cannot build for them")
        assert "11.4.1 or later" in cores.text


def test_tensorrt_older_than_8_5_is_an_error(tmp_path: Path) -> None:
    report = diagnose(make_host(tmp_path, gpu_machine("8.4.3.1", XAVIER), jetpack="5", gpu=XAVIER))
    assert report.exit_code == 1
    assert finding(report, "tensorrt", "older than 8.5.0").status == ERROR
    assert not capability(report, "TensorRT engines")
    assert report.next_commands == ["fix the lines marked error above, then: edgeseg doctor"]


def test_tensorrt_without_pycuda_is_an_error(tmp_path: Path) -> None:
    modules = {"onnxruntime": onnxruntime(), "tensorrt": make_fake_trt("10.3.0")}
    report = diagnose(make_host(tmp_path, modules))
    assert report.exit_code == 1
    error = finding(report, "tensorrt", "TensorRT is installed but pycuda is not")
    assert error.status == ERROR and error.fix == "pip install 'edgeseg[trt]'"
    assert finding(report, "gpu", "not probed (needs pycuda)").status == INFO
    assert report.extras[[e.name for e in report.extras].index("trt")].missing == ["pycuda"]


def test_tensorrt_type_stubs_alone_are_not_installed_tensorrt(tmp_path: Path) -> None:
    stubs = fake_module("tensorrt")
    stubs.__path__ = ["/site-packages/tensorrt"]  # tensorrt-stubs: a namespace package of .pyi files
    report = diagnose(make_host(tmp_path, {"onnxruntime": onnxruntime(), "tensorrt": stubs}))
    assert report.exit_code == 0
    assert report.tensorrt.stubs_only and report.tensorrt.package.state == "absent"
    assert finding(report, "tensorrt", "only type stubs").status == MISSING


# -- no GPU ---------------------------------------------------------------------------------------------------------
def test_no_gpu_with_tensorrt_and_pycuda_is_an_error(tmp_path: Path) -> None:
    modules = {"onnxruntime": onnxruntime(), "tensorrt": make_fake_trt("10.3.0"),
               **pycuda(init_error=RuntimeError("cuInit failed: no CUDA-capable device is detected"))}
    report = diagnose(make_host(tmp_path, modules))
    assert report.exit_code == 1
    gpu = finding(report, "gpu", "no GPU visible to CUDA (RuntimeError: cuInit failed")
    assert gpu.status == ERROR and "nvidia-smi" in (gpu.fix or "")
    assert report.gpus == [] and report.kernels is None
    assert finding(report, "kernels", "not checked (no GPU visible)").status == INFO


def test_no_gpu_with_pycuda_alone_is_a_warning(tmp_path: Path) -> None:
    report = diagnose(make_host(tmp_path, {"onnxruntime": onnxruntime(), **pycuda(devices=0)}))
    assert report.exit_code == 0
    assert finding(report, "gpu", "no GPU visible to CUDA (0 devices)").status == WARN


def test_a_cpu_robot_can_run_onnxruntime(tmp_path: Path) -> None:
    report = diagnose(make_host(tmp_path, {"onnxruntime": onnxruntime(), "cv2": opencv(gstreamer=False, gui="NONE")}))
    assert report.exit_code == 0
    assert finding(report, "tensorrt", "tensorrt not installed").status == MISSING
    assert finding(report, "cuda", "CUDA driver: not found (no libcuda)").status == INFO
    assert finding(report, "opencv", "GStreamer: NO").status == INFO  # not a Jetson: CSI is not expected
    assert finding(report, "opencv", "GUI: NONE").status == INFO
    assert capability(report, "ONNX Runtime on the CPU") and not capability(report, "TensorRT engines")
    assert not capability(report, "build --onnx")  # no onnx
    assert report.next_commands[0].startswith("edgeseg run --artifacts engines/NAME")
    robot = report.extras[0]
    assert (robot.name, robot.complete, robot.installed) == ("robot", True, ["onnxruntime", "opencv-python-headless"])


def test_nothing_installed_says_to_install_the_robot_extra(tmp_path: Path) -> None:
    report = diagnose(make_host(tmp_path, {}))
    assert report.exit_code == 0
    assert finding(report, "onnxruntime", "onnxruntime not installed").fix == "pip install 'edgeseg[robot]'"
    assert finding(report, "opencv", "OpenCV (cv2) not installed").fix == "pip install 'edgeseg[video]'"
    assert finding(report, "packages", "rosbags not installed").fix == "pip install 'edgeseg[ros]'"
    assert finding(report, "packages", "openvino not installed").status == INFO  # not used by edgeseg
    assert report.next_commands == ["pip install 'edgeseg[robot]'   (the robot install), then: edgeseg doctor"]


# -- broken installs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("failure", [
    ImportError("libonnxruntime.so.1: cannot open shared object file"),
    ModuleNotFoundError("No module named 'numpy'", name="numpy"),  # a dependency of it, not the package itself
    RuntimeError("module compiled against API version 0x10 but this version of numpy is 0xe"),
])
def test_onnxruntime_installed_but_failing_to_import_is_an_error(tmp_path: Path, failure: Exception) -> None:
    report = diagnose(make_host(tmp_path, {"onnxruntime": failure}))
    assert report.exit_code == 1
    error = finding(report, "onnxruntime", "is installed but fails to import")
    assert error.status == ERROR and type(failure).__name__ in error.text and "pip install" in (error.fix or "")
    assert report.onnxruntime.package.state == "broken"
    assert finding(report, "extras", "[robot] broken: onnxruntime").status == INFO  # counted once, below


def test_broken_opencv_tensorrt_and_pycuda_are_errors(tmp_path: Path) -> None:
    modules = {"onnxruntime": onnxruntime(), "cv2": ImportError("libGL.so.1: cannot open shared object file"),
               "tensorrt": ImportError("libnvinfer.so.10: cannot open shared object file"),
               "pycuda.driver": ImportError("libcuda.so.1: cannot open shared object file")}
    report = diagnose(make_host(tmp_path, modules))
    assert report.exit_code == 1
    assert {f.section for f in report.findings if f.status == ERROR} == {"opencv", "tensorrt", "cuda"}


def test_broken_openvino_is_only_a_warning(tmp_path: Path) -> None:
    report = diagnose(make_host(tmp_path, {"onnxruntime": onnxruntime(), "openvino": ImportError("libtbb.so.12")}))
    assert report.exit_code == 0
    assert finding(report, "packages", "openvino is installed but fails to import").status == WARN


def test_onnxruntime_without_the_cpu_provider_is_an_error(tmp_path: Path) -> None:
    report = diagnose(make_host(tmp_path, {"onnxruntime": onnxruntime(providers=("TensorrtExecutionProvider",))}))
    assert report.exit_code == 1
    assert finding(report, "onnxruntime", "no CPUExecutionProvider").status == ERROR


def test_probe_import_tells_absent_from_broken() -> None:
    host = Host(importer=Importer({"a": ModuleNotFoundError("No module named 'a'", name="a"),
                                   "b": ModuleNotFoundError("No module named 'numpy'", name="numpy")}),
                dist_version=lambda dist: "9.9")
    assert probe_import("a", host)[0].state == "absent"
    broken, module = probe_import("b", host)
    assert (broken.state, broken.version, module) == ("broken", "9.9", None)
    assert broken.error == "ModuleNotFoundError: No module named 'numpy'"


# -- the GPU kernels -------------------------------------------------------------------------------------------------
def test_a_gpu_older_than_the_shipped_ptx_needs_nvcc(tmp_path: Path) -> None:
    with_nvcc = diagnose(make_host(tmp_path, gpu_machine("10.3.0", PASCAL), gpu=PASCAL, nvcc="/usr/bin/nvcc"))
    kernels = finding(with_nvcc, "kernels", "no shipped PTX fits compute capability 6.1")
    assert kernels.status == WARN and "compiled with /usr/bin/nvcc" in kernels.text
    assert with_nvcc.exit_code == 0 and capability(with_nvcc, "TensorRT engines")

    without = diagnose(make_host(tmp_path, gpu_machine("10.3.0", PASCAL), gpu=PASCAL))
    assert without.exit_code == 1
    error = finding(without, "kernels", "there is no nvcc to compile kernels.cu")
    assert error.status == ERROR and "nvcc" in (error.fix or "")
    assert without.kernels is not None and without.kernels.loads is False and without.kernels.arch is None
    assert not capability(without, "TensorRT engines")


def test_a_driver_that_refuses_the_ptx_is_reported(tmp_path: Path) -> None:
    refusal = RuntimeError("cuModuleLoadDataEx failed: the provided PTX was compiled with an unsupported toolchain")
    report = diagnose(make_host(tmp_path, gpu_machine("10.3.0", ORIN), jetpack="6", gpu=ORIN, ptx_error=refusal))
    assert report.exit_code == 1
    error = finding(report, "kernels", "the driver refused the shipped compute_87 PTX")
    assert "unsupported toolchain" in error.text


def test_a_stale_ptx_manifest_is_reported(tmp_path: Path) -> None:
    host = make_host(tmp_path, gpu_machine("10.3.0", ORIN), gpu=ORIN, nvcc="/usr/bin/nvcc")
    host.ptx_dir = tmp_path / "no_ptx_here"
    report = diagnose(host)
    kernels = finding(report, "kernels", "cannot be read")
    assert kernels.status == WARN and report.exit_code == 0


def test_dla_cores_reports_what_tensorrt_logged() -> None:
    trt = make_fake_trt("10.3.0", dla_cores=2)
    assert doctor_facts.dla_cores(trt) == 2

    class FailingRuntime:
        num_DLA_cores = 0

        def __init__(self, logger: Any) -> None:
            logger.log(trt.ILogger.Severity.ERROR, "CUDA initialization failure with error: 100")

    broken = fake_module("tensorrt", __version__="10.3.0", ILogger=trt.ILogger, Runtime=FailingRuntime)
    with pytest.raises(RuntimeError, match="CUDA initialization failure with error: 100"):
        doctor_facts.dla_cores(broken)


# -- small pieces ----------------------------------------------------------------------------------------------------
def test_parse_tegra_release() -> None:
    assert parse_tegra_release(TEGRA["5"]) == ("R35.4.1", "5")
    assert parse_tegra_release(TEGRA["6"]) == ("R36.4.0", "6")
    assert parse_tegra_release("# R38 (release), REVISION: 2.0, GCID: 1") == ("R38.2.0", "7")
    assert parse_tegra_release("# R99 (release), REVISION: 1.0") == ("R99.1.0", None)
    assert parse_tegra_release("garbage") == (None, None)


def test_an_unreadable_tegra_release_still_says_jetson(tmp_path: Path) -> None:
    host = make_host(tmp_path, {"onnxruntime": onnxruntime()})
    host.tegra_release.write_text("something else\n")
    report = diagnose(host)
    assert finding(report, "jetson", "unreadable L4T release ('something else')").text.startswith("unknown model")


def test_extras_table_matches_pyproject() -> None:
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, dists in EXTRAS.items():
        names = tuple(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0] for requirement in declared[extra])
        assert names == dists, extra
    assert set(declared) - set(EXTRAS) == {"dev"}


def test_json_report_has_every_probe_and_round_trips(tmp_path: Path) -> None:
    report = diagnose(make_host(tmp_path, gpu_machine("10.3.0", ORIN, dla_cores=2), jetpack="6", gpu=ORIN))
    data = json.loads(json.dumps(report.to_dict()))
    assert {"edgeseg", "python", "jetson", "extras", "onnxruntime", "tensorrt", "cuda", "gpus", "kernels", "opencv",
            "packages", "findings", "capabilities", "next_commands", "exit_code", "counts"} <= set(data)
    assert data["tensorrt"]["features"]["dla"] is True and data["tensorrt"]["dla_cores"] == 2
    assert data["gpus"][0]["buffers"] == "mapped" and data["kernels"]["arch"] == "compute_87"
    assert data["jetson"]["jetpack"] == "6" and data["exit_code"] == 0
    assert set(data["findings"][0]) == {"section", "status", "text", "fix"}


def test_report_lines_mark_each_status(tmp_path: Path) -> None:
    report = diagnose(make_host(tmp_path, {"onnxruntime": ImportError("boom")}))
    text = [line for _, line in report_lines(report)]
    assert any(line.startswith("  FAIL  onnxruntime") for line in text)
    assert any(line.startswith("        fix: ") for line in text)
    verdict = ("  1 error(s), 0 warning(s); not installed: cv2, matplotlib, onnx, onnxsim, pycuda, rosbags, "
               "safetensors, tensorrt, torch; exit 1")
    assert text[-4:] == ["Summary", verdict, "next:", "  fix the lines marked error above, then: edgeseg doctor"]


# -- this machine ----------------------------------------------------------------------------------------------------
def test_the_real_probes_run_here_without_raising() -> None:
    report = diagnose()
    assert report.python.version.startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
    assert report.exit_code in (0, 1) and report.findings
    json.dumps(report.to_dict())
    if report.tensorrt.version is None:  # no TensorRT here: nothing about it may be claimed
        assert report.tensorrt.features is None and report.tensorrt.dla_cores is None


def test_the_cuda_library_probes_return_a_version_or_none() -> None:
    for probe in (doctor_facts.cuda_driver_version, doctor_facts.cuda_runtime_version):
        value = probe()
        assert value is None or (isinstance(value, int) and value >= 1000)
