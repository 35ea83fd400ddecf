"""``edgeseg doctor``'s probes (layer 1): plain functions that each read one part of the machine through a
``Host`` and return its typed facts (``doctor_facts``). Every probe is safe: a failed import, a missing library
or a refusing driver becomes a fact, never a traceback; tensorrt, pycuda, cv2, onnxruntime and openvino are
imported only when a probe runs."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from ..trt_version import TrtVersion
from . import cuda
from .camera_sources import opencv_build_value, opencv_gstreamer
from .doctor_facts import (
    EXTRAS,
    IMPORT_NAMES,
    JETPACK_BY_L4T,
    OPENVINO_PRECISIONS,
    CudaInfo,
    ExtraStatus,
    GpuInfo,
    Host,
    JetsonInfo,
    KernelInfo,
    OnnxRuntimeInfo,
    OpenCvInfo,
    Package,
    PythonInfo,
    TensorRTInfo,
    TrtFeatures,
)
from .kernels import ShippedPtxUnusable, load_ptx_manifest, shipped_ptx


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


