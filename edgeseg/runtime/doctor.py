"""``edgeseg doctor``'s probes: what this machine can run, and what to install for the rest (layer 1).

Plain probe functions, each returning a typed dataclass, and ``diagnose`` that runs them all into a
``DoctorReport`` (its ``findings`` are the lines ``edgeseg doctor`` prints, ``to_dict`` its ``--json``). Every
probe is safe: a failed import, a missing library or a refusing driver is a finding, never a traceback, and
tensorrt, pycuda, cv2, onnxruntime (and the rest) are imported only when a probe runs. Everything a probe
touches outside Python comes through a ``Host`` (the importer, /etc/nv_tegra_release, libcuda, libcudart,
nvcc on PATH, the PTX load), so the tests fake every branch.

Facts come from their owners: what a TensorRT release has from ``trt_version.TrtVersion``, GPU properties from
``cuda.device_info`` and the buffer choice from ``cuda.choose_mode``, which shipped PTX fits from
``kernels.shipped_ptx``, OpenCV's build information from ``camera_sources.opencv_build_value``, install commands
from ``errors.install_command``.

Statuses: ``ok``; ``info`` (a fact); ``missing`` (not installed: the fix says how); ``warn`` (works, with a
limit worth fixing); ``error``. The exit code is 1 when any finding is an error, and an error means something
installed cannot do what its extra promises:

- a package that is installed (found on the path) fails to import (onnxruntime, cv2, onnx, matplotlib,
  rosbags, tensorrt, pycuda);
- TensorRT is installed but pycuda is not (the ``trt`` extra: engines build but nothing can run them), or
  TensorRT is older than 8.5 / its version is unreadable;
- TensorRT and pycuda are installed but the CUDA driver shows no GPU;
- TensorRT, pycuda and a GPU, but the GPU kernels cannot load: no shipped PTX fits (or the driver refuses it)
  and there is no nvcc to compile kernels.cu.

Anything merely absent (no TensorRT on a laptop, no rosbags on the robot) is ``missing``, exit 0. On a Jetson,
TensorRT missing and OpenCV without GStreamer are warnings: JetPack has both, so a venv hides them.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..errors import install_command
from ..trt_version import DLA_RELEASES, TrtVersion
from .camera_sources import OPENCV_WITH_GSTREAMER
from .doctor_facts import (
    ERROR,
    IMPORTED,
    INFO,
    JETPACK_TRT_INSTALL,
    JETSON_PYCUDA_INSTALL,
    MIN_TENSORRT,
    MISSING,
    NOT_IMPORTED,
    NOT_USED,
    OK,
    POWER_HINT,
    PURPOSES,
    WARN,
    Capability,
    CudaInfo,
    DoctorReport,
    ExtraStatus,
    Finding,
    GpuInfo,
    Host,
    JetsonInfo,
    KernelInfo,
    OnnxRuntimeInfo,
    OpenCvInfo,
    Package,
    PythonInfo,
    TensorRTInfo,
)
from .doctor_probes import (
    probe_cuda,
    probe_extras,
    probe_found,
    probe_gpus,
    probe_import,
    probe_jetson,
    probe_kernels,
    probe_onnxruntime,
    probe_opencv,
    probe_openvino,
    probe_python,
    probe_tensorrt,
)


# -- the verdict --------------------------------------------------------------------------------------------------
def _broken(section: str, package: Package, fix: str, status: str = ERROR) -> Finding:
    name = f"{package.name} {package.version}" if package.version else package.name
    return Finding(section, status, f"{name} is installed but fails to import: {package.error}", fix)


def _python_findings(python: PythonInfo, jetson: JetsonInfo | None) -> list[Finding]:
    where = python.executable
    if python.venv:
        where += {True: ", a venv with system site-packages", False: ", a venv without system site-packages",
                  None: ", a venv"}[python.system_site_packages]
    findings = [Finding("python", OK, f"Python {python.version} ({where}) on {python.machine or 'unknown'}")]
    if jetson is not None and python.venv and python.system_site_packages is False:
        findings.append(Finding("python", WARN, "this venv cannot see JetPack's Python packages (TensorRT, OpenCV "
                                "with GStreamer live in /usr/lib/python3/dist-packages)",
                                "recreate it: python3 -m venv --system-site-packages VENV"))
    return findings


def _jetson_findings(jetson: JetsonInfo | None, host: Host) -> list[Finding]:
    if jetson is None:
        return [Finding("jetson", INFO, f"not a Jetson (no {host.tegra_release})")]
    release = f"L4T {jetson.l4t}" if jetson.l4t else f"unreadable L4T release ({jetson.raw!r})"
    jetpack = f"JetPack {jetson.jetpack}" if jetson.jetpack else "JetPack unknown"
    model = jetson.model or "unknown model"
    return [Finding("jetson", OK, f"{model}: {jetpack} ({release})"), Finding("jetson", INFO, POWER_HINT)]


def _extras_findings(extras: list[ExtraStatus]) -> list[Finding]:
    findings = []
    for extra in extras:
        if extra.broken:
            findings.append(Finding("extras", INFO, f"[{extra.name}] broken: {', '.join(extra.broken)} "
                                    "(the error is below)"))
        elif extra.complete:
            findings.append(Finding("extras", OK, f"[{extra.name}] complete: {', '.join(extra.installed)}"))
        elif extra.installed:
            findings.append(Finding("extras", MISSING, f"[{extra.name}] partly: missing {', '.join(extra.missing)}",
                                    extra.install))
        else:
            findings.append(Finding("extras", MISSING, f"[{extra.name}] not installed", extra.install))
    return findings


def _onnxruntime_findings(ort: OnnxRuntimeInfo) -> list[Finding]:
    package = ort.package
    fix = install_command("onnxruntime")
    if package.state == "absent":
        return [Finding("onnxruntime", MISSING, "onnxruntime not installed: no CPU backend (validate, run, bench)",
                        fix)]
    if package.state == "broken":
        return [_broken("onnxruntime", package, f"reinstall it: pip install --force-reinstall onnxruntime ({fix})")]
    gpu = [p for p in ort.providers if p != "CPUExecutionProvider"]
    text = f"onnxruntime {package.version}: providers {', '.join(ort.providers) or 'none'}"
    if "CPUExecutionProvider" not in ort.providers:
        return [Finding("onnxruntime", ERROR, text + " (no CPUExecutionProvider)",
                        f"reinstall it: pip install --force-reinstall onnxruntime ({fix})")]
    return [Finding("onnxruntime", OK, text + ("" if gpu else " (CPU only)"))]


def _tensorrt_fix(jetson: JetsonInfo | None, python: PythonInfo) -> str:
    if jetson is None:
        return install_command("tensorrt", extra="trt") + " (a GPU machine; or build on the Jetson itself)"
    fix = JETPACK_TRT_INSTALL
    if jetson.jetpack == "5" and not python.version.startswith("3.8."):
        fix += "; JetPack 5's TensorRT 8.5 bindings are for Python 3.8: use python3.8"
    if python.venv and python.system_site_packages is False:
        fix += "; and a venv made with --system-site-packages"
    return fix


def _tensorrt_findings(trt: TensorRTInfo, jetson: JetsonInfo | None, python: PythonInfo,
                       pycuda: Package) -> list[Finding]:
    package = trt.package
    fix = _tensorrt_fix(jetson, python)
    absent_status = WARN if jetson is not None else MISSING
    if trt.stubs_only:
        return [Finding("tensorrt", absent_status, "tensorrt: only type stubs (tensorrt-stubs), no TensorRT runtime: "
                        "no engines on this machine", fix)]
    if package.state == "absent":
        return [Finding("tensorrt", absent_status, "tensorrt not installed: no engines on this machine", fix)]
    if package.state == "broken":
        return [_broken("tensorrt", package, fix)]
    assert trt.version is not None and trt.features is not None
    version = TrtVersion.parse(trt.version)
    if version < MIN_TENSORRT:
        return [Finding("tensorrt", ERROR, f"TensorRT {package.version} is older than {MIN_TENSORRT}, the oldest "
                        "edgeseg builds for", fix)]
    features = trt.features
    named = (("strongly typed", features.strongly_typed), ("DLA", features.dla),
             ("version-compatible engines", features.version_compatible),
             ("implicit calibrators", features.implicit_calibrator))
    have = [name for name, flag in named if flag]
    lacks = [name for name, flag in named if not flag]
    text = f"TensorRT {package.version}: {', '.join(have) or 'none of the optional features'}"
    if lacks:
        text += f"; not in this release: {', '.join(lacks)}"
    findings = [Finding("tensorrt", OK, text)]
    if trt.dla_cores is not None:
        if trt.dla_cores and not features.dla:
            findings.append(Finding("tensorrt", INFO, f"{trt.dla_cores} DLA core(s), but TensorRT {version} cannot "
                                    f"build for them (DLA: {DLA_RELEASES})"))
        else:
            findings.append(Finding("tensorrt", INFO, f"DLA cores: {trt.dla_cores}"))
    elif trt.dla_error:
        findings.append(Finding("tensorrt", INFO, f"DLA cores: unknown (TensorRT could not make a Runtime: "
                                f"{trt.dla_error})"))
    if not pycuda.present:
        pycuda_fix = JETSON_PYCUDA_INSTALL if jetson is not None else install_command("pycuda", extra="trt")
        findings.append(Finding("tensorrt", ERROR, "TensorRT is installed but pycuda is not: engines build, but "
                                "validate, run and bench cannot run them", pycuda_fix))
    return findings


def _cuda_findings(info: CudaInfo, trt: TensorRTInfo, gpus: list[GpuInfo], gpu_error: str | None,
                   jetson: JetsonInfo | None) -> list[Finding]:
    findings = []
    pycuda = info.pycuda
    pycuda_fix = JETSON_PYCUDA_INSTALL if jetson is not None else install_command("pycuda", extra="trt")
    driver = f"CUDA driver {info.driver_version}" if info.driver_version else "CUDA driver: not found (no libcuda)"
    runtime = f"runtime (libcudart) {info.runtime_version}" if info.runtime_version else \
        "runtime (libcudart): not found"
    versions = f"{driver}; {runtime}"
    if pycuda.state == "absent":
        findings.append(Finding("cuda", MISSING, "pycuda not installed: no GPU buffers or kernels", pycuda_fix))
    elif pycuda.state == "broken":
        findings.append(_broken("cuda", pycuda, pycuda_fix + " (reinstall it against this machine's CUDA)"))
    else:
        findings.append(Finding("cuda", OK, f"pycuda {pycuda.version} (built for CUDA {info.pycuda_built_for or '?'})"))
    findings.append(Finding("cuda", OK if info.driver_version else INFO, versions))
    if pycuda.present:
        trt_ready = trt.package.present
        if info.error or not info.device_count:
            why = info.error or "0 devices"
            findings.append(Finding("gpu", ERROR if trt_ready else WARN, f"no GPU visible to CUDA ({why})",
                                    "check the driver: nvidia-smi (on a Jetson: the nvidia kernel modules, "
                                    "and run in a container with --runtime nvidia)"))
        for gpu in gpus:
            kind = "integrated: zero-copy mapped buffers" if gpu.buffers == "mapped" else \
                ("integrated" if gpu.integrated else "discrete") + ": staged device buffers (pinned copies)"
            findings.append(Finding("gpu", OK, f"GPU {gpu.ordinal}: {gpu.name}, compute capability "
                                    f"{gpu.compute_capability}, {gpu.memory_mib} MiB, {kind}"))
        if gpu_error:
            findings.append(Finding("gpu", ERROR if trt_ready else WARN,
                                    f"cannot read the GPU's properties: {gpu_error}"))
    else:
        findings.append(Finding("gpu", INFO, "GPU: not probed (needs pycuda)"))
    return findings


def _kernel_findings(kernels: KernelInfo | None, trt: TensorRTInfo) -> list[Finding]:
    if kernels is None:
        return [Finding("kernels", INFO, "GPU kernels: not checked (no GPU visible)")]
    if kernels.loads:
        return [Finding("kernels", OK, f"GPU kernels: the shipped {kernels.arch} PTX loads on compute capability "
                        f"{kernels.compute_capability} (no nvcc needed)")]
    if kernels.nvcc:
        return [Finding("kernels", WARN, f"GPU kernels: {kernels.reason}; kernels.cu will be compiled with "
                        f"{kernels.nvcc} on first use",
                        "regenerate the PTX (python scripts/build_kernels.py in a checkout) or update the driver")]
    return [Finding("kernels", ERROR if trt.package.present else WARN,
                    f"GPU kernels: {kernels.reason}, and there is no nvcc to compile kernels.cu",
                    "install the CUDA toolkit's nvcc (JetPack: /usr/local/cuda/bin on PATH), update the driver, "
                    "or reinstall edgeseg")]


def _opencv_findings(opencv: OpenCvInfo, jetson: JetsonInfo | None) -> list[Finding]:
    package = opencv.package
    fix = install_command("cv2")
    if package.state == "absent":
        return [Finding("opencv", MISSING, "OpenCV (cv2) not installed: no video files or cameras", fix)]
    if package.state == "broken":
        return [_broken("opencv", package, f"reinstall it ({fix}), or on a Jetson use JetPack's OpenCV")]
    findings = [Finding("opencv", OK, f"OpenCV {package.version} ({package.location or '?'})")]
    if opencv.has_gstreamer:
        findings.append(Finding("opencv", OK, f"GStreamer: {opencv.gstreamer} (csi://, gst:, rtsp:// through "
                                "GStreamer)"))
    else:
        findings.append(Finding("opencv", WARN if jetson is not None else INFO,
                                f"GStreamer: {opencv.gstreamer or 'NO'}; no csi:// or gst: sources (rtsp:// goes "
                                "through FFmpeg)", OPENCV_WITH_GSTREAMER if jetson is not None else
                                "only csi:// and gst: need it: an OpenCV built with -D WITH_GSTREAMER=ON (pip's wheels "
                                "have none)"))
    gui = opencv.gui or "NONE"
    if gui.upper() != "NONE":
        findings.append(Finding("opencv", OK, f"GUI: {gui} (run --show)"))
    else:
        findings.append(Finding("opencv", INFO, "GUI: NONE; run --show needs an OpenCV with a GUI (opencv-python, "
                                "or JetPack's) and a display"))
    return findings


def _openvino_findings(package: Package, devices: list[dict[str, Any]]) -> list[Finding]:
    """The OpenVINO section: each device and its precisions (only when openvino imports; absent and broken are
    lines of the packages section)."""
    if not package.present:
        return []
    if not devices or any(d.get("error") for d in devices):
        errors = "; ".join(str(d.get("error")) for d in devices if d.get("error")) or "no devices"
        return [Finding("openvino", WARN, f"openvino {package.version or '?'}: {errors}",
                        "reinstall it: pip install --force-reinstall openvino")]
    findings = [Finding("openvino", OK, f"openvino {package.version or '?'} ({PURPOSES['openvino']})")]
    for device in devices:
        untested = "" if str(device["name"]).startswith("CPU") else "; untested by edgeseg"
        precisions = ", ".join(device["precisions"]) or "no precision listed"
        findings.append(Finding("openvino", OK, f"{device['name']}: {device['full_name']}: {precisions}{untested}"))
    return findings


def _package_findings(packages: dict[str, Package]) -> list[Finding]:
    findings = []
    for name in ("onnx", "matplotlib", "rosbags", "safetensors", "torch", "onnxsim", "openvino"):
        package = packages[name]
        purpose = PURPOSES[name]
        if name == "openvino" and package.present:
            continue  # its own section lists its devices
        if package.state == "absent":
            fix = None if name in NOT_USED else install_command(name, extra="ros" if name == "rosbags" else None)
            if name == "openvino":
                fix = install_command("openvino", extra="openvino")
            findings.append(Finding("packages", MISSING if name not in NOT_USED else INFO,
                                    f"{name} not installed ({purpose})", fix))
        elif package.state == "broken":
            findings.append(_broken("packages", package, f"reinstall it: pip install --force-reinstall {name}",
                                    WARN if name in NOT_USED else ERROR))
        else:
            note = ", found, not imported" if not package.imported else ""
            findings.append(Finding("packages", OK, f"{name} {package.version or '?'}{note} ({purpose})"))
    return findings


def assess(parts: dict[str, Any], host: Host) -> list[Finding]:
    """Every finding, in the order printed."""
    python, jetson = parts["python"], parts["jetson"]
    trt, cuda_info = parts["tensorrt"], parts["cuda"]
    return [*_python_findings(python, jetson), *_jetson_findings(jetson, host),
            *_extras_findings(parts["extras"]), *_onnxruntime_findings(parts["onnxruntime"]),
            *_openvino_findings(parts["packages"]["openvino"], parts.get("openvino_devices") or []),
            *_tensorrt_findings(trt, jetson, python, cuda_info.pycuda),
            *_cuda_findings(cuda_info, trt, parts["gpus"], parts["gpu_error"], jetson),
            *_kernel_findings(parts["kernels"], trt), *_opencv_findings(parts["opencv"], jetson),
            *_package_findings(parts["packages"])]


def capabilities(parts: dict[str, Any]) -> list[Capability]:
    """What this machine can run, and what each missing capability needs."""
    packages: dict[str, Package] = parts["packages"]
    ort_ok = parts["onnxruntime"].package.present and "CPUExecutionProvider" in parts["onnxruntime"].providers
    trt: TensorRTInfo = parts["tensorrt"]
    trt_ok = trt.package.present and trt.version is not None and TrtVersion.parse(trt.version) >= MIN_TENSORRT
    gpu_ok = parts["cuda"].pycuda.present and bool(parts["gpus"])
    kernels: KernelInfo | None = parts["kernels"]
    kernels_ok = kernels is not None and bool(kernels.loads or kernels.nvcc)
    opencv: OpenCvInfo = parts["opencv"]
    torch_ok = packages["torch"].present and packages["onnx"].present and packages["onnxsim"].present

    def cap(what: str, ok: bool, needs: str) -> Capability:
        return Capability(what, ok, "" if ok else needs)

    return [
        cap("TensorRT engines: build --backend tensorrt, validate, run, bench on the GPU",
            trt_ok and gpu_ok and kernels_ok, "TensorRT, pycuda, a visible GPU and loadable GPU kernels"),
        cap("ONNX Runtime on the CPU: validate, run, bench", ort_ok, "onnxruntime"),
        cap("OpenVINO: validate, run, bench, build --backend openvino", bool(parts.get("openvino_devices"))
            and not any(d.get("error") for d in parts.get("openvino_devices") or []), "openvino (the openvino extra)"),
        cap("build --onnx DIR/model.int8.onnx on this machine", packages["onnx"].present and (ort_ok or trt_ok),
            "onnx, and TensorRT or onnxruntime"),
        cap("the whole pipeline: train, export, build from a checkpoint", torch_ok and ort_ok,
            "torch, onnx, onnxsim, onnxruntime (the desktop extra)"),
        cap("video files and cameras (OpenCV)", opencv.package.present, "OpenCV"),
        cap("csi:// and gst: cameras (OpenCV with GStreamer)", opencv.package.present and opencv.has_gstreamer,
            "an OpenCV built with GStreamer (JetPack's)"),
        cap("ROS bags (bag:PATH, .mcap outputs)", packages["rosbags"].present, "rosbags (Python 3.10+)"),
        cap("report plots", packages["matplotlib"].present, "matplotlib"),
    ]


def next_commands(parts: dict[str, Any], findings: list[Finding], caps: list[Capability]) -> list[str]:
    if any(f.status == ERROR for f in findings):
        return ["fix the lines marked error above, then: edgeseg doctor"]
    ready = {c.what.split(":")[0]: c.available for c in caps}
    if ready["TensorRT engines"]:
        return ["edgeseg build --onnx DIR/model.int8.onnx --backend tensorrt   (the Q/DQ ONNX from a workstation)"]
    if ready["the whole pipeline"]:
        return ["edgeseg build --int8   (the demo model: export, calibrate, build, validate)"]
    if ready["ONNX Runtime on the CPU"]:
        return ["edgeseg run --artifacts engines/NAME --source SRC   (a build folder made on a workstation)"]
    return [f"{install_command('onnxruntime')}   (the robot install), then: edgeseg doctor"]


def diagnose(host: Host | None = None) -> DoctorReport:
    """Run every probe (importing what is installed) and judge the result."""
    host = host if host is not None else Host()
    packages: dict[str, Package] = {}
    for name in IMPORTED:
        packages[name] = probe_import(name, host)[0]
    for name in NOT_IMPORTED:
        packages[name] = probe_found(name, host)
    onnxruntime = probe_onnxruntime(host)
    opencv = probe_opencv(host)
    tensorrt = probe_tensorrt(host)
    cuda_info = probe_cuda(host)
    packages.update({"onnxruntime": onnxruntime.package, "cv2": opencv.package, "tensorrt": tensorrt.package,
                     "pycuda": cuda_info.pycuda})
    gpus, gpu_error = probe_gpus(cuda_info, host)
    parts: dict[str, Any] = {
        "python": probe_python(host), "jetson": probe_jetson(host), "extras": probe_extras(packages),
        "onnxruntime": onnxruntime, "tensorrt": tensorrt, "cuda": cuda_info, "gpus": gpus, "gpu_error": gpu_error,
        "kernels": probe_kernels(gpus[0] if gpus else None, host), "opencv": opencv, "packages": packages,
        "openvino_devices": probe_openvino(packages["openvino"], host),
    }
    findings = assess(parts, host)
    caps = capabilities(parts)
    return DoctorReport(edgeseg=__version__, python=parts["python"], jetson=parts["jetson"], extras=parts["extras"],
                        onnxruntime=onnxruntime, tensorrt=tensorrt, cuda=cuda_info, gpus=gpus,
                        kernels=parts["kernels"], opencv=opencv, packages=packages, findings=findings,
                        capabilities=caps, next_commands=next_commands(parts, findings, caps),
                        openvino_devices=parts["openvino_devices"])


SECTION_TITLES = {"python": "Python", "jetson": "Jetson", "extras": "edgeseg extras (pip install 'edgeseg[X]')",
                  "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT", "cuda": "CUDA",
                  "gpu": "GPU",
                  "kernels": "GPU kernels", "opencv": "OpenCV", "packages": "Other packages"}
MARKS = {OK: "ok", INFO: "--", MISSING: "--", WARN: "warn", ERROR: "FAIL"}


def report_lines(report: DoctorReport) -> list[tuple[str, str]]:
    """(status, line) for the human report: sections, findings with their fixes, what runs, the verdict."""
    lines: list[tuple[str, str]] = []
    section = None
    for finding in report.findings:
        if finding.section != section:
            section = finding.section
            lines.append(("title", SECTION_TITLES.get(section, section)))
        lines.append((finding.status, f"  {MARKS[finding.status]:<4}  {finding.text}"))
        if finding.fix and finding.status != OK:
            lines.append(("fix", f"        fix: {finding.fix}"))
    lines.append(("title", "This machine runs"))
    for capability in report.capabilities:
        if capability.available:
            lines.append((OK, f"  yes   {capability.what}"))
        else:
            lines.append((MISSING, f"  no    {capability.what} (needs {capability.needs})"))
    counts = report.counts()
    missing = ", ".join(report.not_installed) or "nothing"
    verdict = f"{counts[ERROR]} error(s), {counts[WARN]} warning(s); not installed: {missing}; exit {report.exit_code}"
    lines.append(("title", "Summary"))
    lines.append((ERROR if report.exit_code else OK, f"  {verdict}"))
    lines.append(("title", "next:"))
    lines.extend(("info", f"  {command}") for command in report.next_commands)
    return lines
