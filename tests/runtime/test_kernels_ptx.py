"""The PTX shipped in edgeseg/runtime/kernels_ptx/ (built by scripts/build_kernels.py) and its loader, without a GPU.

The shipped files must come from the current kernels.cu (manifest hash), declare the target and PTX ISA they
claim and hold every kernel kernels.py looks up; the loader picks the highest arch <= the device's compute
capability, hands the PTX to ``module_from_buffer`` and falls back to nvcc (SourceModule) with a warning when
no shipped PTX fits. A fake ``pycuda.driver`` stands in for the GPU; the last test (marked gpu) loads the real
thing where there is one.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import re
import shutil
import sys
import warnings
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edgeseg.errors import ArtifactError
from edgeseg.runtime import cuda, kernels
from edgeseg.runtime.kernels import (
    KERNEL_NAMES,
    KERNEL_SOURCE,
    PTX_DIR,
    PTX_MANIFEST,
    GpuKernels,
    KernelFallbackWarning,
    ShippedPtxUnusable,
    select_arch,
    shipped_ptx,
)
from edgeseg.spec import InputSpec

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "build_kernels.py"
REGENERATE = ("regenerate the PTX: python scripts/build_kernels.py with the NVRTC 12 wheels in a separate venv "
              "(the script's docstring has the pip line)")
# the PTX ISA each arch may declare at most: 7.4 is CUDA 11.4's (JetPack 5's driver JIT), 7.8 the first with sm_90
MAX_ISA = {"compute_72": (7, 4), "compute_87": (7, 4), "compute_90": (7, 8)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return json.loads(PTX_MANIFEST.read_text())


def test_the_shipped_ptx_was_built_from_the_current_kernels_cu(manifest: dict[str, Any]) -> None:
    assert manifest["source_sha256"] == sha256(KERNEL_SOURCE), \
        f"kernels.cu changed since its shipped PTX was built: {REGENERATE}"


def test_every_shipped_file_matches_its_manifest_entry(manifest: dict[str, Any]) -> None:
    assert set(manifest["ptx"]) == set(MAX_ISA)
    for arch, entry in manifest["ptx"].items():
        path = PTX_DIR / entry["file"]
        assert entry["file"] == f"kernels.{arch}.ptx"
        assert sha256(path) == entry["sha256"] and path.stat().st_size == entry["bytes"], f"{path}: {REGENERATE}"
    listed = {entry["file"] for entry in manifest["ptx"].values()} | {PTX_MANIFEST.name}
    assert {p.name for p in PTX_DIR.iterdir() if p.name != "__pycache__"} == listed
    assert manifest["entries"] == list(KERNEL_NAMES)


@pytest.mark.parametrize("arch", sorted(MAX_ISA))
def test_each_ptx_declares_its_target_and_isa_and_holds_every_kernel(manifest: dict[str, Any], arch: str) -> None:
    entry = manifest["ptx"][arch]
    text = (PTX_DIR / entry["file"]).read_text()
    target = "sm_" + arch.split("_")[1]
    assert entry["target"] == target
    assert re.findall(r"^\.target (\S+)$", text, re.M) == [target]
    versions = re.findall(r"^\.version (\d+)\.(\d+)$", text, re.M)
    assert len(versions) == 1 and ".".join(versions[0]) == entry["ptx_isa"]
    assert tuple(map(int, versions[0])) <= MAX_ISA[arch], "older drivers cannot JIT a newer PTX ISA"
    assert re.findall(r"^\.address_size (\d+)$", text, re.M) == ["64"]
    assert sorted(re.findall(r"^\.visible \.entry (\w+)\(", text, re.M)) == sorted(KERNEL_NAMES)
    # FP64 runs at 1/32-1/64 rate on Jetson (test_kernels_float checks the source; this checks what ships)
    assert not re.search(r"\.f64\b|%fd\d", text)


def test_kernels_py_looks_up_only_the_shipped_kernel_names() -> None:
    looked_up = re.findall(r'get_function\("(\w+)"\)', Path(kernels.__file__).read_text())
    assert sorted(set(looked_up)) == sorted(KERNEL_NAMES)
    extern_c = KERNEL_SOURCE.read_text().split('extern "C" {', 1)[1]
    for name in KERNEL_NAMES:  # extern "C": the .entry names are the plain names, not mangled
        assert f"__global__ void {name}(" in extern_c


@pytest.mark.parametrize(("capability", "arch"), [
    ((7, 2), "compute_72"), ((7, 5), "compute_72"), ((8, 6), "compute_72"), ((8, 7), "compute_87"),
    ((8, 9), "compute_87"), ((9, 0), "compute_90"), ((10, 0), "compute_90"), ((12, 0), "compute_90"),
    ("8.7", "compute_87"), ("12.0", "compute_90"), ((6, 1), None), ((7, 0), None), ("6.1", None),
])
def test_the_highest_arch_not_above_the_device_is_chosen(manifest: dict[str, Any], capability: Any,
                                                         arch: str | None) -> None:
    assert select_arch(capability, manifest["ptx"]) == arch


@pytest.mark.parametrize(("capability", "arch"), [((7, 2), "compute_72"), ((8, 7), "compute_87"),
                                                   ((8, 9), "compute_87"), ((9, 0), "compute_90"),
                                                   ((12, 0), "compute_90")])
def test_shipped_ptx_returns_the_chosen_file(manifest: dict[str, Any], capability: tuple[int, int],
                                             arch: str) -> None:
    chosen, ptx = shipped_ptx(capability)
    assert chosen == arch and ptx == (PTX_DIR / manifest["ptx"][arch]["file"]).read_bytes()


def test_an_older_gpu_gets_no_shipped_ptx() -> None:
    with pytest.raises(ShippedPtxUnusable, match=r"no shipped PTX fits compute capability 6\.1"):
        shipped_ptx((6, 1))


def test_a_changed_kernels_cu_or_ptx_makes_the_shipped_ptx_unusable(tmp_path: Path,
                                                                    manifest: dict[str, Any]) -> None:
    folder = tmp_path / "kernels_ptx"
    shutil.copytree(PTX_DIR, folder)
    source = tmp_path / "kernels.cu"
    source.write_text(KERNEL_SOURCE.read_text() + "\n// edited\n")
    with pytest.raises(ShippedPtxUnusable, match="stale"):
        shipped_ptx((8, 7), folder, source)
    ptx = folder / manifest["ptx"]["compute_87"]["file"]
    ptx.write_text(ptx.read_text().replace("ret;", "exit;", 1))
    with pytest.raises(ShippedPtxUnusable, match="does not match its manifest hash"):
        shipped_ptx((8, 7), folder, KERNEL_SOURCE)
    assert shipped_ptx((9, 0), folder, KERNEL_SOURCE)[0] == "compute_90"  # the others are still fine
    (folder / PTX_MANIFEST.name).unlink()
    with pytest.raises(ShippedPtxUnusable, match="manifest"):
        shipped_ptx((9, 0), folder, KERNEL_SOURCE)


# ---- the loader, with a fake pycuda.driver ----

class FakeDriverError(Exception):
    """pycuda.driver.Error"""


class FakeModule:
    def __init__(self) -> None:
        self.looked_up: list[str] = []

    def get_function(self, name: str) -> Any:
        self.looked_up.append(name)
        return lambda *args, **kwargs: None


class FakeDevice:
    """pycuda's Device: hashable (by identity here, by CUdevice in pycuda), with its compute capability."""

    def __init__(self, capability: tuple[int, int]) -> None:
        self.capability = capability

    def compute_capability(self) -> tuple[int, int]:
        return self.capability


class FakePtxDriver:
    """The part of pycuda.driver the loader uses: the current context's device and module_from_buffer."""

    Error = FakeDriverError

    def __init__(self, capability: tuple[int, int], refuse: bool = False) -> None:
        self.device = FakeDevice(capability)
        self.Context = SimpleNamespace(get_device=lambda: self.device)  # noqa: N815 (pycuda's name)
        self.refuse = refuse
        self.buffers: list[bytes] = []
        self.module = FakeModule()

    def module_from_buffer(self, buffer: bytes) -> FakeModule:
        self.buffers.append(bytes(buffer))
        if self.refuse:
            raise FakeDriverError("cuModuleLoadDataEx failed: the provided PTX was compiled with an unsupported "
                                  "toolchain.")
        return self.module


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install ``FakePtxDriver(capability, refuse)`` as edgeseg.runtime.cuda.driver(), with no module loaded yet."""
    monkeypatch.setattr(kernels, "_MODULES", {})
    monkeypatch.setattr(kernels, "_ORIGIN", None)

    def install(capability: tuple[int, int], refuse: bool = False) -> FakePtxDriver:
        fake = FakePtxDriver(capability, refuse)
        monkeypatch.setattr(cuda, "driver", lambda: fake)
        return fake

    return install


@pytest.fixture
def nvcc(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the SourceModule fallback; the list gets the reason of each call."""
    reasons: list[str] = []

    def source_module(reason: str) -> FakeModule:
        reasons.append(reason)
        return FakeModule()

    monkeypatch.setattr(kernels, "_source_module", source_module)
    return reasons


@pytest.mark.parametrize(("capability", "arch"), [((8, 7), "compute_87"), ((7, 2), "compute_72"),
                                                   ((12, 0), "compute_90")])
def test_the_loader_hands_the_shipped_ptx_to_module_from_buffer(fresh: Any, nvcc: list[str], manifest: dict[str, Any],
                                                                capability: tuple[int, int], arch: str) -> None:
    driver = fresh(capability)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpu = GpuKernels(InputSpec(64, 64))
        GpuKernels(InputSpec(32, 32))  # loaded once per process
    ptx = (PTX_DIR / manifest["ptx"][arch]["file"]).read_bytes()
    assert driver.buffers == [ptx + b"\0"]  # the PTX text, NUL-terminated as cuModuleLoadData wants
    assert kernels.kernels_origin() == f"shipped PTX {arch}" and nvcc == []
    assert sorted(set(driver.module.looked_up)) == sorted(KERNEL_NAMES)
    assert set(gpu._pre) == {np.dtype(np.float32), np.dtype(np.float16)}


def test_the_module_is_loaded_once_per_device_not_once_per_process(fresh: Any, nvcc: list[str]) -> None:
    """A module belongs to the context it was loaded in: a second GPU gets its own (issue #23 item 8)."""
    driver = fresh((8, 7))
    first = driver.device
    GpuKernels(InputSpec(64, 64))
    GpuKernels(InputSpec(32, 32))
    assert len(driver.buffers) == 1
    driver.device = FakeDevice((9, 0))  # a second GPU's context is current
    GpuKernels(InputSpec(64, 64))
    assert len(driver.buffers) == 2 and kernels.kernels_origin() == "shipped PTX compute_90"
    driver.device = first
    GpuKernels(InputSpec(64, 64))
    assert len(driver.buffers) == 2 and nvcc == []  # the first device's module is reused


def test_an_older_gpu_falls_back_to_nvcc_with_a_warning(fresh: Any, nvcc: list[str]) -> None:
    driver = fresh((6, 1))
    with pytest.warns(KernelFallbackWarning, match=r"no shipped PTX fits compute capability 6\.1.*build_kernels\.py"):
        GpuKernels(InputSpec(64, 64))
    assert driver.buffers == [] and len(nvcc) == 1 and "6.1" in nvcc[0]
    assert kernels.kernels_origin() == "kernels.cu via nvcc"


def test_a_stale_package_falls_back_to_nvcc_with_a_warning(fresh: Any, nvcc: list[str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    edited = tmp_path / "kernels.cu"
    edited.write_text(KERNEL_SOURCE.read_text() + "\n// edited\n")
    monkeypatch.setattr(kernels, "shipped_ptx", lambda capability: shipped_ptx(capability, PTX_DIR, edited))
    driver = fresh((8, 7))
    with pytest.warns(KernelFallbackWarning, match="stale"):
        kernels._compiled()
    assert driver.buffers == [] and "stale" in nvcc[0]


def test_a_driver_that_refuses_the_ptx_falls_back_to_nvcc(fresh: Any, nvcc: list[str]) -> None:
    driver = fresh((8, 7), refuse=True)
    with pytest.warns(KernelFallbackWarning, match="the driver refused the shipped compute_87 PTX"):
        kernels._compiled()
    assert len(driver.buffers) == 1 and len(nvcc) == 1


def test_without_ptx_and_without_nvcc_the_error_names_the_script(fresh: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def source_module(*args: Any, **kwargs: Any) -> None:
        raise OSError("nvcc: not found")

    compiler = ModuleType("pycuda.compiler")
    compiler.SourceModule = source_module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda.compiler", compiler)
    fresh((6, 1))
    with pytest.warns(KernelFallbackWarning), pytest.raises(ArtifactError) as raised:
        GpuKernels(InputSpec(64, 64))
    message = str(raised.value)
    assert "no shipped PTX fits" in message and "nvcc: not found" in message
    assert "scripts/build_kernels.py" in message
    assert kernels._MODULES == {}  # a later call tries again


def test_the_package_data_ships_the_ptx() -> None:
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["edgeseg"]
    package = ROOT / "edgeseg"
    for path in [KERNEL_SOURCE, *PTX_DIR.iterdir()]:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), f"{relative} is not package data"


# ---- the regeneration script's own logic (it needs the CUDA wheels only to compile) ----

@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_kernels", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_builds_what_the_runtime_ships(script: ModuleType, manifest: dict[str, Any]) -> None:
    assert script.SOURCE == KERNEL_SOURCE and script.OUT == PTX_DIR and script.MANIFEST == PTX_MANIFEST.name
    assert {arch: tuple(map(int, isa.split("."))) for arch, isa in script.PTX_ISA.items()} == MAX_ISA
    assert manifest["options"][1:-1] == list(script.OPTIONS)


def test_the_script_lowers_the_ptx_isa_and_never_raises_it(script: ModuleType) -> None:
    ptx = "//\n.version 8.8\n.target sm_87\n.address_size 64\n"
    lowered = script.lower_isa(ptx, "7.4")
    assert re.findall(r"^\.version .*$", lowered, re.M) == [".version 7.4"] and ".target sm_87" in lowered
    with pytest.raises(script.BuildError, match="older than"):
        script.lower_isa(ptx.replace("8.8", "7.0"), "7.4")


def test_the_script_says_which_wheels_to_install(script: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(script, "find_in_wheels", lambda relative: None)
    assert script.main([]) == 1
    error = capsys.readouterr().err
    for package in ("nvidia-cuda-nvrtc-cu12", "nvidia-cuda-runtime-cu12", "nvidia-cuda-nvcc-cu12"):
        assert package in error
    assert "venv" in error


# ---- on a real GPU ----

@pytest.mark.gpu
def test_the_shipped_ptx_loads_on_this_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = cuda.CudaContext.get()
    monkeypatch.setattr(kernels, "_MODULES", {})
    monkeypatch.setattr(kernels, "_ORIGIN", None)
    with ctx.active(), warnings.catch_warnings():
        warnings.simplefilter("error", KernelFallbackWarning)
        module = kernels._compiled()
        for name in KERNEL_NAMES:
            module.get_function(name)
    arch = select_arch(ctx.info.compute_capability, json.loads(PTX_MANIFEST.read_text())["ptx"])
    assert kernels.kernels_origin() == f"shipped PTX {arch}"
