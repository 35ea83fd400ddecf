"""``edgeseg doctor``'s facts (layer 1): the statuses, the ``Host`` every probe reads the machine through (the
tests replace any of it) and the typed results of the probes (``doctor_probes``), which ``doctor`` turns into
findings. Nothing here imports tensorrt, pycuda, cv2 or onnxruntime."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import importlib
import importlib.util
import platform
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..trt_version import TrtVersion
from . import cuda
from .kernels import PTX_DIR
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


