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

import ctypes
import ctypes.util
import dataclasses
import importlib
import importlib.util
import platform
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..errors import install_command
from ..trt_version import DLA_RELEASES, TrtVersion
from . import cuda
from .camera_sources import OPENCV_WITH_GSTREAMER, opencv_build_value, opencv_gstreamer
from .kernels import PTX_DIR, ShippedPtxUnusable, load_ptx_manifest, shipped_ptx
from .trt_logger import capture_log, process_logger

OK, INFO, MISSING, WARN, ERROR = "ok", "info", "missing", "warn", "error"
STATUSES = (OK, INFO, MISSING, WARN, ERROR)
MIN_TENSORRT = TrtVersion(8, 5)

# pyproject.toml's extras as pip names (tests/runtime/test_doctor.py keeps this equal to pyproject.toml).
EXTRAS: dict[str, tuple[str, ...]] = {
    "robot": ("onnxruntime", "opencv-python-headless"),
    "jetson": ("onnxruntime", "opencv-python-headless", "onnx", "matplotlib"),
    "trt": ("tensorrt", "pycuda"),
    "report": ("matplotlib",),
    "ros": ("rosbags", "opencv-python-headless"),
    "video": ("opencv-python-headless",),
    "openvino": ("openvino",),
    "desktop": ("torch", "onnx", "onnxsim", "onnxruntime", "matplotlib", "opencv-python-headless",
                "safetensors", "rosbags"),
}
# pip name -> import name, where they differ (JetPack's OpenCV and TensorRT have no pip metadata: probe imports)
IMPORT_NAMES = {"opencv-python-headless": "cv2"}
# import name -> what edgeseg uses it for (the text of its line)
PURPOSES = {
    "onnx": "build --onnx on this machine, calibrate",
    "matplotlib": "report plots",
    "rosbags": "bag:PATH sources, calibration from bags, .mcap/.db3/.bag outputs",
    "safetensors": ".safetensors weights",
    "torch": "desktop: train, export, eval, build from a checkpoint",
    "onnxsim": "desktop: export",
    "openvino": "optional: the openvino backend for Intel CPUs, run/validate/bench/build --backend openvino",
}
IMPORTED = ("onnx", "matplotlib", "rosbags", "safetensors", "openvino")  # imported (onnxruntime, cv2, tensorrt
# and pycuda have probes of their own)
NOT_IMPORTED = ("torch", "onnxsim")  # desktop-only and slow to import: found on the path, not imported
NOT_USED = ("openvino",)  # optional: absent is information and broken a warning (only --backend openvino needs it)
OPENVINO_PRECISIONS = ("FP32", "BF16", "FP16", "INT8")  # of a device's OPTIMIZATION_CAPABILITIES, the ones shown
JETPACK_BY_L4T = {32: "4", 34: "5", 35: "5", 36: "6", 38: "7"}  # L4T major release -> JetPack major release
JETPACK_TRT_INSTALL = "sudo apt install python3-libnvinfer (JetPack's TensorRT bindings; part of nvidia-jetpack)"
JETSON_PYCUDA_INSTALL = ("pip install pycuda (it compiles against JetPack's CUDA: "
                         "export PATH=/usr/local/cuda/bin:$PATH first)")
POWER_HINT = ("before benchmarks: sudo nvpmodel -q shows the power mode; sudo nvpmodel -m 0 (the maximum on most "
              "modules) && sudo jetson_clocks pins the clocks")


# -- the host: everything a probe touches outside Python --------------------------------------------------------
def _spec_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that fails, or a module without __spec__
        return False


def _dist_version(dist: str) -> str | None:
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:  # PackageNotFoundError, or metadata that cannot be read
        return None


def _library_version(names: tuple[str, ...], function: str) -> int | None:
    """``function(int*)`` of the first of ``names`` ctypes can load (cuDriverGetVersion, cudaRuntimeGetVersion):
    CUDA's version number (12020 for 12.2), or None when no library loads or the call fails."""
    for name in names:
        path = ctypes.util.find_library(name) if "/" not in name and ".so" not in name else name
        if not path:
            continue
        try:
            library = ctypes.CDLL(path)
            value = ctypes.c_int()
            if getattr(library, function)(ctypes.byref(value)) == 0:
                return int(value.value)
        except (OSError, AttributeError):
            continue
    return None


def cuda_driver_version() -> int | None:
    """The CUDA driver's version (libcuda, no pycuda needed); None without a driver."""
    return _library_version(("cuda", "libcuda.so.1"), "cuDriverGetVersion")


def cuda_runtime_version() -> int | None:
    """libcudart's version (JetPack: /usr/local/cuda/lib64); None where no libcudart is found."""
    return _library_version(("cudart", "libcudart.so", "/usr/local/cuda/lib64/libcudart.so"), "cudaRuntimeGetVersion")


def load_ptx(ordinal: int, ptx: bytes) -> None:
    """Load PTX on GPU ``ordinal`` as ``kernels`` does (the driver JIT-compiles it); raises what the driver raises."""
    context = cuda.CudaContext.get(ordinal)
    with context.active():
        cuda.driver().module_from_buffer(ptx + b"\0")


def dla_cores(trt: Any) -> int:
    """The DLA cores TensorRT sees (a Runtime made with the process logger, as ``trt.load_engine`` makes one);
    RuntimeError with TensorRT's last error when it logged one (no GPU, a CUDA initialisation failure)."""
    with capture_log(trt) as log:
        cores = int(trt.Runtime(process_logger(trt)).num_DLA_cores)
    if log.errors:
        raise RuntimeError(log.tail(1))
    return cores


@dataclass
class Host:
    """What the probes read from the machine; the tests replace any of it."""

    importer: Callable[[str], Any] = importlib.import_module
    spec_exists: Callable[[str], bool] = _spec_exists
    dist_version: Callable[[str], str | None] = _dist_version
    tegra_release: Path = Path("/etc/nv_tegra_release")
    device_model: Path = Path("/proc/device-tree/model")
    which: Callable[[str], str | None] = shutil.which
    cuda_driver_version: Callable[[], int | None] = cuda_driver_version
    cuda_runtime_version: Callable[[], int | None] = cuda_runtime_version
    device_info: Callable[[int], cuda.DeviceInfo] = cuda.device_info
    load_ptx: Callable[[int, bytes], None] = load_ptx
    dla_cores: Callable[[Any], int] = dla_cores
    ptx_dir: Path = PTX_DIR
    python_version: tuple[int, int, int] = tuple(sys.version_info[:3])  # type: ignore[assignment]
    executable: str = sys.executable
    prefix: str = sys.prefix
    base_prefix: str = getattr(sys, "base_prefix", sys.prefix)
    machine: str = platform.machine()


# -- the facts ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Package:
    """One Python package: ``present`` (imports), ``absent`` (not installed) or ``broken`` (installed, fails)."""

    name: str  # the import name
    state: str
    version: str | None = None
    location: str | None = None
    error: str | None = None
    imported: bool = True  # False: found on the path, not imported (torch, onnxsim)

    @property
    def present(self) -> bool:
        return self.state == "present"


@dataclass(frozen=True)
class PythonInfo:
    version: str
    executable: str
    machine: str
    venv: bool
    system_site_packages: bool | None  # None outside a venv


@dataclass(frozen=True)
class JetsonInfo:
    l4t: str | None  # "R35.4.1"
    jetpack: str | None  # "5" (major release, from the L4T release)
    model: str | None  # /proc/device-tree/model: "NVIDIA Jetson AGX Orin Developer Kit"
    raw: str


@dataclass(frozen=True)
class ExtraStatus:
    name: str
    installed: list[str]
    missing: list[str]
    broken: list[str]
    install: str

    @property
    def complete(self) -> bool:
        return not self.missing and not self.broken


@dataclass(frozen=True)
class OnnxRuntimeInfo:
    package: Package
    providers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TrtFeatures:
    """What this TensorRT release has, as ``TrtVersion`` says."""

    strongly_typed: bool  # STRONGLY_TYPED flag (10.x) or always (11.x)
    dla: bool
    version_compatible: bool
    implicit_calibrator: bool
    precision_flags: bool
    explicit_batch_flag: bool

    @classmethod
    def of(cls, version: TrtVersion) -> TrtFeatures:
        return cls(strongly_typed=version.has_strongly_typed_flag or version.always_strongly_typed,
                   dla=version.has_dla, version_compatible=version.has_version_compatible,
                   implicit_calibrator=version.has_calibrator, precision_flags=version.has_precision_flags,
                   explicit_batch_flag=version.needs_explicit_batch)


@dataclass(frozen=True)
class TensorRTInfo:
    package: Package
    stubs_only: bool = False  # tensorrt-stubs' namespace package: types, no runtime
    version: str | None = None
    features: TrtFeatures | None = None
    dla_cores: int | None = None
    dla_error: str | None = None


@dataclass(frozen=True)
class CudaInfo:
    pycuda: Package
    driver_version: str | None = None  # "12.2" (libcuda)
    runtime_version: str | None = None  # "12.2" (libcudart), None where not found
    pycuda_built_for: str | None = None  # the CUDA version pycuda was compiled against
    device_count: int | None = None  # None: not asked (no pycuda)
    error: str | None = None


@dataclass(frozen=True)
class GpuInfo:
    ordinal: int
    name: str
    compute_capability: str
    integrated: bool
    buffers: str  # "mapped" (zero copy) or "device" (staged through pinned memory)
    memory_mib: int


@dataclass(frozen=True)
class KernelInfo:
    """Whether the GPU pre/post-processing kernels load on GPU 0: the shipped PTX, else nvcc."""

    compute_capability: str
    shipped: list[str]
    arch: str | None = None  # the shipped PTX that fits
    loads: bool | None = None  # None: not tried (no pycuda or no GPU)
    reason: str | None = None  # why the shipped PTX is not used
    nvcc: str | None = None


@dataclass(frozen=True)
class OpenCvInfo:
    package: Package
    gstreamer: str | None = None  # the GStreamer line of cv2.getBuildInformation(): "YES (1.20.3)" / "NO"
    gui: str | None = None

    @property
    def has_gstreamer(self) -> bool:
        return bool(self.gstreamer) and str(self.gstreamer).upper().startswith("YES")


@dataclass(frozen=True)
class Finding:
    section: str
    status: str
    text: str
    fix: str | None = None


@dataclass(frozen=True)
class Capability:
    what: str
    available: bool
    needs: str  # what is missing, "" when available


@dataclass(frozen=True)
class DoctorReport:
    edgeseg: str
    python: PythonInfo
    jetson: JetsonInfo | None
    extras: list[ExtraStatus]
    onnxruntime: OnnxRuntimeInfo
    tensorrt: TensorRTInfo
    cuda: CudaInfo
    gpus: list[GpuInfo]
    kernels: KernelInfo | None
    opencv: OpenCvInfo
    packages: dict[str, Package]
    findings: list[Finding]
    capabilities: list[Capability]
    next_commands: list[str]
    openvino_devices: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # name, full_name, precisions

    @property
    def exit_code(self) -> int:
        return 1 if any(f.status == ERROR for f in self.findings) else 0

    @property
    def not_installed(self) -> list[str]:
        """The packages edgeseg can use that are not installed (import names)."""
        return sorted(name for name, package in self.packages.items()
                      if package.state == "absent" and name not in NOT_USED)

    def counts(self) -> dict[str, int]:
        return {status: sum(1 for f in self.findings if f.status == status) for status in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["exit_code"] = self.exit_code
        data["counts"] = self.counts()
        data["not_installed"] = self.not_installed
        return data


# -- probes -------------------------------------------------------------------------------------------------------
def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def probe_import(name: str, host: Host, dist: str | None = None) -> tuple[Package, Any]:
    """(Package, the module or None). Not installed: the module itself is not found; anything else that
    goes wrong on import (a missing dependency or shared library, an exception in the package) is broken."""
    top = name.split(".")[0]
    try:
        module = host.importer(name)
    except ModuleNotFoundError as exc:
        if (exc.name or top).split(".")[0] == top:
            return Package(top, "absent"), None
        return Package(top, "broken", version=host.dist_version(dist or top), error=_error_text(exc)), None
    except Exception as exc:  # ImportError on a shared library, OSError, RuntimeError, ...
        return Package(top, "broken", version=host.dist_version(dist or top), error=_error_text(exc)), None
    root = module
    if "." in name:
        try:
            root = host.importer(top)  # the package holds the version: pycuda.VERSION_TEXT, not pycuda.driver
        except Exception:
            root = module
    version = getattr(root, "__version__", None) or getattr(root, "VERSION_TEXT", None) or host.dist_version(
        dist or top)
    location = getattr(root, "__file__", None)
    if location is None:
        paths = list(getattr(root, "__path__", []) or [])
        location = str(paths[0]) if paths else None
    return Package(top, "present", version=str(version) if version else None,
                   location=str(location) if location else None), module


def probe_found(name: str, host: Host, dist: str | None = None) -> Package:
    """A package found on the path, not imported (torch, onnxsim)."""
    if not host.spec_exists(name):
        return Package(name, "absent", imported=False)
    return Package(name, "present", version=host.dist_version(dist or name), imported=False)


def probe_python(host: Host) -> PythonInfo:
    venv = host.prefix != host.base_prefix
    system_site: bool | None = None
    if venv:
        system_site = False
        try:
            for line in (Path(host.prefix) / "pyvenv.cfg").read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "include-system-site-packages":
                    system_site = value.strip().lower() == "true"
        except OSError:
            system_site = None
    return PythonInfo(version=".".join(str(p) for p in host.python_version), executable=host.executable,
                      machine=host.machine, venv=venv, system_site_packages=system_site)


_TEGRA_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")


def parse_tegra_release(text: str) -> tuple[str | None, str | None]:
    """(L4T release "R35.4.1", JetPack major "5") from /etc/nv_tegra_release ((None, None) when unreadable)."""
    match = _TEGRA_RE.search(text)
    if not match:
        return None, None
    major = int(match.group(1))
    return f"R{major}.{match.group(2)}", JETPACK_BY_L4T.get(major)


def probe_jetson(host: Host) -> JetsonInfo | None:
    """None off a Jetson (no /etc/nv_tegra_release)."""
    try:
        raw = host.tegra_release.read_text(errors="replace")
    except OSError:
        return None
    l4t, jetpack = parse_tegra_release(raw)
    try:
        model: str | None = host.device_model.read_bytes().replace(b"\0", b"").decode(errors="replace").strip()
    except OSError:
        model = None
    return JetsonInfo(l4t=l4t, jetpack=jetpack, model=model or None, raw=raw.strip().splitlines()[0] if raw else "")


def probe_onnxruntime(host: Host) -> OnnxRuntimeInfo:
    package, module = probe_import("onnxruntime", host)
    if module is None:
        return OnnxRuntimeInfo(package)
    try:
        providers = [str(p) for p in module.get_available_providers()]
    except Exception as exc:
        return OnnxRuntimeInfo(dataclasses.replace(package, state="broken", error=_error_text(exc)))
    return OnnxRuntimeInfo(package, providers)


def probe_tensorrt(host: Host) -> TensorRTInfo:
    package, trt = probe_import("tensorrt", host)
    if trt is None:
        return TensorRTInfo(package)
    raw = getattr(trt, "__version__", None)
    if raw is None and not hasattr(trt, "Runtime"):  # tensorrt-stubs: a namespace package of .pyi files
        return TensorRTInfo(dataclasses.replace(package, state="absent", version=None), stubs_only=True)
    try:
        version = TrtVersion.parse(str(raw))
    except Exception as exc:
        return TensorRTInfo(dataclasses.replace(package, state="broken", error=f"unreadable version {raw!r}: {exc}"))
    cores: int | None = None
    dla_error: str | None = None
    try:
        cores = host.dla_cores(trt)
    except Exception as exc:  # no GPU, no CUDA: TensorRT cannot make a Runtime
        dla_error = _error_text(exc)
    return TensorRTInfo(dataclasses.replace(package, version=str(raw)), version=str(version),
                        features=TrtFeatures.of(version), dla_cores=cores, dla_error=dla_error)


def _cuda_version_text(number: int | None) -> str | None:
    if not number:
        return None
    return f"{number // 1000}.{number % 1000 // 10}"


def probe_cuda(host: Host) -> CudaInfo:
    pycuda, driver = probe_import("pycuda.driver", host)
    driver_version = _cuda_version_text(host.cuda_driver_version())
    runtime_version = _cuda_version_text(host.cuda_runtime_version())
    if driver is None:
        return CudaInfo(pycuda, driver_version, runtime_version)
    built_for: str | None = None
    try:
        built = driver.get_version()
        built_for = ".".join(str(p) for p in tuple(built)[:2])
    except Exception:
        built_for = None
    try:
        driver.init()
        count = int(driver.Device.count())
        if driver_version is None:
            driver_version = _cuda_version_text(int(driver.get_driver_version()))
    except Exception as exc:  # cuInit fails: no driver, no device, a driver/kernel module mismatch
        return CudaInfo(pycuda, driver_version, runtime_version, built_for, 0, _error_text(exc))
    return CudaInfo(pycuda, driver_version, runtime_version, built_for, count)


def probe_gpus(cuda_info: CudaInfo, host: Host) -> tuple[list[GpuInfo], str | None]:
    """Every GPU pycuda sees (empty without pycuda), and the error that stopped the listing."""
    gpus: list[GpuInfo] = []
    for ordinal in range(cuda_info.device_count or 0):
        try:
            info = host.device_info(ordinal)
            buffers = cuda.choose_mode("auto", info)
        except Exception as exc:
            return gpus, _error_text(exc)
        gpus.append(GpuInfo(ordinal=ordinal, name=info.name, compute_capability=info.compute_capability,
                            integrated=info.integrated, buffers=buffers, memory_mib=info.total_memory // (1 << 20)))
    return gpus, None


def probe_kernels(gpu: GpuInfo | None, host: Host) -> KernelInfo | None:
    """Which shipped PTX fits GPU 0 and whether the driver loads it (tried only where a GPU is visible)."""
    if gpu is None:
        return None
    nvcc = host.which("nvcc") or (host.which("/usr/local/cuda/bin/nvcc"))
    try:
        shipped = sorted(load_ptx_manifest(host.ptx_dir / "manifest.json")["ptx"])
    except ShippedPtxUnusable as exc:
        return KernelInfo(gpu.compute_capability, [], reason=str(exc), loads=False, nvcc=nvcc)
    try:
        arch, ptx = shipped_ptx(gpu.compute_capability, host.ptx_dir)
    except (ShippedPtxUnusable, ValueError, OSError) as exc:
        return KernelInfo(gpu.compute_capability, shipped, reason=str(exc), loads=False, nvcc=nvcc)
    try:
        host.load_ptx(gpu.ordinal, ptx)
    except Exception as exc:  # CUDA_ERROR_UNSUPPORTED_PTX_VERSION (a driver older than the PTX), ...
        return KernelInfo(gpu.compute_capability, shipped, arch=arch, loads=False,
                          reason=f"the driver refused the shipped {arch} PTX: {_error_text(exc)}", nvcc=nvcc)
    return KernelInfo(gpu.compute_capability, shipped, arch=arch, loads=True, nvcc=nvcc)


def probe_opencv(host: Host) -> OpenCvInfo:
    package, cv2 = probe_import("cv2", host, dist="opencv-python-headless")
    if cv2 is None:
        return OpenCvInfo(package)
    try:
        info = str(cv2.getBuildInformation())
    except Exception as exc:
        return OpenCvInfo(package, gstreamer=f"unknown ({_error_text(exc)})")
    return OpenCvInfo(package, gstreamer=opencv_gstreamer(info), gui=opencv_build_value(info, "GUI") or None)


def probe_extras(packages: dict[str, Package]) -> list[ExtraStatus]:
    """Each extra's packages as installed, missing or broken (by import name; TensorRT stubs count as missing)."""
    extras = []
    for extra, dists in EXTRAS.items():
        states = {dist: packages[IMPORT_NAMES.get(dist, dist)].state for dist in dists}
        extras.append(ExtraStatus(name=extra, installed=[d for d, s in states.items() if s == "present"],
                                  missing=[d for d, s in states.items() if s == "absent"],
                                  broken=[d for d, s in states.items() if s == "broken"],
                                  install=f"pip install 'edgeseg[{extra}]'"))
    return extras


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


def probe_openvino(package: Package, host: Host) -> list[dict[str, Any]]:
    """OpenVINO's devices with their full names and the precisions they run (OPTIMIZATION_CAPABILITIES);
    [] when openvino does not import. GPU and NPU devices are listed as OpenVINO reports them (untested by edgeseg)."""
    if not package.present:
        return []
    devices = []
    try:
        core = host.importer("openvino").Core()
        for name in core.available_devices:
            try:
                full = str(core.get_property(name, "FULL_DEVICE_NAME"))
                capabilities = [str(c).upper() for c in core.get_property(name, "OPTIMIZATION_CAPABILITIES")]
            except Exception as exc:
                devices.append({"name": str(name), "full_name": "", "precisions": [], "error": _error_text(exc)})
                continue
            devices.append({"name": str(name), "full_name": full,
                            "precisions": [p.lower() for p in OPENVINO_PRECISIONS if p in capabilities]})
    except Exception as exc:
        return [{"name": "", "full_name": "", "precisions": [], "error": _error_text(exc)}]
    return devices


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
