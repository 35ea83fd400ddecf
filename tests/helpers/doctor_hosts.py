"""Fake machines for ``edgeseg doctor`` (edgeseg/runtime/doctor.py): a ``Host`` whose importer hands out fake
onnxruntime, OpenCV, TensorRT (helpers.fake_tensorrt) and pycuda modules, with an optional Jetson release file,
GPU, nvcc and PTX loader. Used by tests/runtime/test_doctor.py and tests/commands/test_cli_doctor.py."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from edgeseg.runtime.cuda import DeviceInfo
from edgeseg.runtime.doctor_facts import Host
from helpers.fake_tensorrt import make_fake_trt

ORIN = DeviceInfo(ordinal=0, name="Orin", compute_capability="8.7", integrated=True, can_map_host_memory=True,
                  total_memory=30 << 30)
XAVIER = DeviceInfo(ordinal=0, name="Xavier", compute_capability="7.2", integrated=True, can_map_host_memory=True,
                    total_memory=15 << 30)
RTX = DeviceInfo(ordinal=0, name="NVIDIA GeForce RTX 4090", compute_capability="8.9", integrated=False,
                 can_map_host_memory=True, total_memory=24 << 30)
PASCAL = DeviceInfo(ordinal=0, name="GTX 1080", compute_capability="6.1", integrated=False, can_map_host_memory=True,
                    total_memory=8 << 30)
TEGRA = {
    "5": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug 1 2023\n",
    "6": "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 2024\n",
}
BUILD_INFO = "General configuration for OpenCV 4.8.0\n  GUI:                           {gui}\n" \
             "  Video I/O:\n    FFMPEG:                      YES\n    GStreamer:                   {gst}\n"


def fake_module(name: str, **members: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in members.items():
        setattr(module, key, value)
    return module


def onnxruntime(providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> types.ModuleType:
    return fake_module("onnxruntime", __version__="1.19.2", get_available_providers=lambda: list(providers))


def opencv(gstreamer: bool = True, gui: str = "GTK3") -> types.ModuleType:
    info = BUILD_INFO.format(gui=gui, gst="YES (1.20.3)" if gstreamer else "NO")
    return fake_module("cv2", __version__="4.8.0", __file__="/usr/lib/python3/dist-packages/cv2/__init__.py",
                       getBuildInformation=lambda: info)


def pycuda(devices: int = 1, init_error: Exception | None = None) -> dict[str, types.ModuleType]:
    """Fake ``pycuda`` and ``pycuda.driver`` (built for CUDA 12.2) with ``devices`` GPUs."""

    def init() -> None:
        if init_error is not None:
            raise init_error

    device = types.SimpleNamespace(count=lambda: devices)
    driver = fake_module("pycuda.driver", init=init, Device=device, get_version=lambda: (12, 2, 0),
                         get_driver_version=lambda: 12020)
    return {"pycuda": fake_module("pycuda", VERSION_TEXT="2024.1"), "pycuda.driver": driver}


class Importer:
    """``Host.importer``: the given modules, an exception raised for a name mapped to one, and
    ModuleNotFoundError for every other name (as for a package that is not installed)."""

    def __init__(self, modules: dict[str, Any]) -> None:
        self.modules = modules
        self.calls: list[str] = []

    def __call__(self, name: str) -> Any:
        self.calls.append(name)
        found = self.modules.get(name)
        if isinstance(found, BaseException):
            raise found
        if found is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return found


def make_host(tmp_path: Path, modules: dict[str, Any], *, jetpack: str | None = None, model: str = "",
              gpu: DeviceInfo | None = None, found: tuple[str, ...] = (), nvcc: str | None = None,
              ptx_error: Exception | None = None, venv_system_site: bool | None = None,
              python: tuple[int, int, int] = (3, 10, 12)) -> Host:
    tegra = tmp_path / "nv_tegra_release"
    if jetpack is not None:
        tegra.write_text(TEGRA[jetpack])
    model_file = tmp_path / "model"
    if model:
        model_file.write_bytes(model.encode() + b"\0")
    prefix = base = "/usr"
    if venv_system_site is not None:
        prefix = str(tmp_path / "venv")
        Path(prefix).mkdir()
        Path(prefix, "pyvenv.cfg").write_text(f"home = /usr/bin\ninclude-system-site-packages = "
                                              f"{str(venv_system_site).lower()}\nversion = 3.10.12\n")
    loaded: list[tuple[int, bytes]] = []

    def load_ptx(ordinal: int, ptx: bytes) -> None:
        if ptx_error is not None:
            raise ptx_error
        loaded.append((ordinal, ptx))

    def device_info(ordinal: int) -> DeviceInfo:
        assert gpu is not None
        return gpu

    host = Host(importer=Importer(modules), spec_exists=lambda name: name in found,
                dist_version=lambda dist: {"torch": "2.4.0", "onnxsim": "0.4.36"}.get(dist),
                tegra_release=tegra, device_model=model_file,
                which=lambda name: nvcc if name in ("nvcc", "/usr/local/cuda/bin/nvcc") else None,
                cuda_driver_version=lambda: 12020 if gpu is not None else None,
                cuda_runtime_version=lambda: 12020 if gpu is not None else None,
                device_info=device_info, load_ptx=load_ptx, python_version=python,
                executable=f"{prefix}/bin/python3", prefix=prefix, base_prefix=base,
                machine="aarch64" if jetpack else "x86_64")
    host.loaded = loaded  # type: ignore[attr-defined]
    return host


def gpu_machine(trt_version: str, gpu: DeviceInfo, *, dla_cores: int = 0, gstreamer: bool = True,
                **extra: Any) -> dict[str, Any]:
    return {"onnxruntime": onnxruntime(), "cv2": opencv(gstreamer), "onnx": fake_module("onnx", __version__="1.16"),
            "tensorrt": make_fake_trt(trt_version, dla_cores=dla_cores), **pycuda(), **extra}
