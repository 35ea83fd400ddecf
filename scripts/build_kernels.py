#!/usr/bin/env python3
"""Regenerate the PTX of edgeseg/runtime/kernels.cu that the package ships (edgeseg/runtime/kernels_ptx/).

The robot loads these files with pycuda's module_from_buffer (edgeseg/runtime/kernels.py), so it needs no
nvcc, no preprocessing of cuda_fp16.h and no writable compiler cache. Run this after every change to
kernels.cu (tests/runtime/test_kernels_ptx.py fails until you do), in a separate virtual environment with
the CUDA 12 compiler wheels; no GPU is needed:

    python3 -m venv /tmp/nvrtc-venv
    /tmp/nvrtc-venv/bin/pip install nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 \\
        nvidia-cuda-nvcc-cu12==12.9.86
    /tmp/nvrtc-venv/bin/python scripts/build_kernels.py          # writes edgeseg/runtime/kernels_ptx/
    /tmp/nvrtc-venv/bin/python scripts/build_kernels.py --check  # compares instead of writing

Nothing is installed or downloaded at run time. Standard library only (the venv needs no numpy, no edgeseg).

What it does, per architecture (ARCHES):
1. NVRTC (libnvrtc.so.12 of nvidia-cuda-nvrtc-cu12, through ctypes) compiles kernels.cu unchanged to PTX for
   compute_XY, with cuda_fp16.h from nvidia-cuda-runtime-cu12 and the floating-point options nvcc uses by
   default (what pycuda's SourceModule used: no fast maths). CUDA 12 is required: CUDA 13 has no compute_72.
2. The PTX's ``.version`` line is lowered to the oldest PTX ISA that the target and the supported drivers
   need (PTX_ISA): the driver JIT-compiles PTX only up to its own ISA version, and NVRTC 12.9 writes 8.8,
   which JetPack 5 (CUDA 11.4: ISA 7.4) and JetPack 6 (CUDA 12.2/12.6: ISA 8.2/8.5) would refuse with
   CUDA_ERROR_UNSUPPORTED_PTX_VERSION. The kernels use no feature newer than that; ptxas proves it.
3. ptxas (nvidia-cuda-nvcc-cu12) assembles the lowered PTX for sm_XY: ptxas rejects any instruction or
   directive that the declared ISA version lacks ("Feature X requires PTX ISA .version N or later").
4. The PTX files and manifest.json (sha256 of kernels.cu and of each PTX, NVRTC/ptxas versions, options,
   kernel entry names) are written. No time stamps: the same inputs give byte-identical files.

No cubins are shipped: a CUDA 12.9 cubin needs a CUDA 12 driver (not JetPack 5), while PTX of ISA 7.4 runs
on every driver from CUDA 11.4 on and is JIT-compiled once per process (the driver caches the result in
~/.nv/ComputeCache when that is writable; when it is not, loading still works).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.metadata
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "edgeseg" / "runtime" / "kernels.cu"
OUT = ROOT / "edgeseg" / "runtime" / "kernels_ptx"
MANIFEST = "manifest.json"
# compute_XY -> the PTX ISA version the shipped file declares. 7.4 is CUDA 11.4's (JetPack 5's driver) and
# the first that knows sm_87; 7.8 (CUDA 11.8) is the first that knows sm_90. Dev GPUs between the shipped
# arches (8.0, 8.6, 8.9, 10.x, 12.x) run the PTX of the highest arch <= their compute capability.
PTX_ISA = {"compute_72": "7.4", "compute_87": "7.4", "compute_90": "7.8"}
ARCHES = tuple(PTX_ISA)
# nvcc's defaults, spelled out (pycuda's SourceModule ran nvcc without --use_fast_math): IEEE division and
# square root, no flush-to-zero; contraction into FMA is allowed, but kernels.cu rounds with __fmul_rn /
# __fadd_rn where it matters, and those are never contracted.
OPTIONS = ("--fmad=true", "--ftz=false", "--prec-div=true", "--prec-sqrt=true")
PIP_PACKAGES = "nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86"
INSTALL_HINT = (f"install the CUDA 12 compiler wheels into a separate venv and run this script with its python:\n"
                f"  python3 -m venv /tmp/nvrtc-venv && /tmp/nvrtc-venv/bin/pip install {PIP_PACKAGES}\n"
                f"  /tmp/nvrtc-venv/bin/python {Path(__file__).resolve().relative_to(ROOT)}")
ENTRY = re.compile(r"^\.visible \.entry (\w+)\(", re.M)
VERSION = re.compile(r"^\.version (\d+)\.(\d+)$", re.M)


class BuildError(Exception):
    """A missing tool or a failed step: printed without a traceback."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def site_dirs() -> list[Path]:
    return [Path(p) for p in sys.path if p and Path(p).is_dir()]


def find_in_wheels(relative: str) -> Path | None:
    """``relative`` (e.g. nvidia/cuda_nvrtc/lib/libnvrtc.so.12) under any sys.path entry of this python."""
    for base in site_dirs():
        candidate = base / relative
        if candidate.exists():
            return candidate
    return None


def wheel_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


class Nvrtc:
    """The few NVRTC calls needed, through ctypes."""

    def __init__(self, path: Path) -> None:
        try:
            self.lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise BuildError(f"cannot load NVRTC from {path}: {exc}\n{INSTALL_HINT}") from None
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version = (major.value, minor.value)
        self.path = path

    def error_string(self, status: int) -> str:
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        return self.lib.nvrtcGetErrorString(status).decode()

    def check(self, status: int, call: str) -> None:
        if status != 0:
            raise BuildError(f"{call} failed: {self.error_string(status)}")

    def compile_ptx(self, source: bytes, name: str, options: list[str]) -> tuple[str, str]:
        """(ptx, log) of ``source`` compiled with ``options``; BuildError with NVRTC's log on failure."""
        program = ctypes.c_void_p()
        self.check(self.lib.nvrtcCreateProgram(ctypes.byref(program), source, name.encode(), 0, None, None),
                   "nvrtcCreateProgram")
        try:
            encoded = [o.encode() for o in options]
            status = self.lib.nvrtcCompileProgram(program, len(encoded), (ctypes.c_char_p * len(encoded))(*encoded))
            size = ctypes.c_size_t()
            self.check(self.lib.nvrtcGetProgramLogSize(program, ctypes.byref(size)), "nvrtcGetProgramLogSize")
            log = ctypes.create_string_buffer(size.value)
            self.check(self.lib.nvrtcGetProgramLog(program, log), "nvrtcGetProgramLog")
            text = log.value.decode(errors="replace").strip()
            if status != 0:
                raise BuildError(f"NVRTC could not compile {name} ({self.error_string(status)}):\n{text}")
            self.check(self.lib.nvrtcGetPTXSize(program, ctypes.byref(size)), "nvrtcGetPTXSize")
            ptx = ctypes.create_string_buffer(size.value)
            self.check(self.lib.nvrtcGetPTX(program, ptx), "nvrtcGetPTX")
            return ptx.value.decode(), text
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(program))


def locate_tools(args: argparse.Namespace) -> tuple[Nvrtc, Path, Path]:
    """NVRTC, the folder with cuda_fp16.h and ptxas: from the command line or this python's wheels."""
    missing = []
    nvrtc_path = args.nvrtc or find_in_wheels("nvidia/cuda_nvrtc/lib/libnvrtc.so.12")
    if nvrtc_path is None:
        missing.append("NVRTC 12: libnvrtc.so.12 (pip package nvidia-cuda-nvrtc-cu12)")
    include = args.include or find_in_wheels("nvidia/cuda_runtime/include")
    if include is None or not (include / "cuda_fp16.h").is_file():
        missing.append("cuda_fp16.h (pip package nvidia-cuda-runtime-cu12)")
    ptxas = args.ptxas or find_in_wheels("nvidia/cuda_nvcc/bin/ptxas")
    if ptxas is None:
        missing.append("ptxas, which checks the PTX (pip package nvidia-cuda-nvcc-cu12)")
    if missing:
        raise BuildError(f"not found for {sys.executable}:\n  " + "\n  ".join(missing) + f"\n{INSTALL_HINT}")
    assert nvrtc_path is not None and include is not None and ptxas is not None
    nvrtc = Nvrtc(nvrtc_path)
    if nvrtc.version[0] != 12:
        raise BuildError(f"{nvrtc_path} is NVRTC {nvrtc.version[0]}.{nvrtc.version[1]}; CUDA 12 is needed "
                         f"(CUDA 13 dropped compute_72, the Xavier's arch).\n{INSTALL_HINT}")
    return nvrtc, include, ptxas


def ptxas_version(ptxas: Path) -> str:
    result = subprocess.run([str(ptxas), "--version"], capture_output=True, text=True)
    match = re.search(r"\bV(\d+\.\d+\.\d+)", result.stdout)
    if result.returncode != 0 or match is None:
        raise BuildError(f"{ptxas} --version failed:\n{result.stdout}{result.stderr}")
    return match.group(1)


def lower_isa(ptx: str, isa: str) -> str:
    """Declare PTX ISA ``isa`` instead of NVRTC's (never raising it); ptxas then checks that it holds."""
    versions = VERSION.findall(ptx)
    if len(versions) != 1:
        raise BuildError(f"expected one .version line in NVRTC's PTX, found {len(versions)}")
    written = tuple(int(v) for v in versions[0])
    wanted = tuple(int(v) for v in isa.split("."))
    if wanted > written:
        raise BuildError(f"NVRTC wrote PTX ISA {'.'.join(versions[0])}, older than the {isa} asked for")
    note = f"// edgeseg: .version lowered from {'.'.join(versions[0])} by scripts/build_kernels.py (ptxas-checked)\n"
    return VERSION.sub(lambda _: f"{note}.version {isa}", ptx, count=1)


def check_with_ptxas(ptxas: Path, ptx_file: Path, sm: str, scratch: Path) -> None:
    result = subprocess.run([str(ptxas), "--gpu-name", sm, str(ptx_file), "-o", str(scratch / f"{sm}.cubin")],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"ptxas rejected {ptx_file.name} for {sm}:\n{result.stdout}{result.stderr}")


def build(out: Path, nvrtc: Nvrtc, include: Path, ptxas: Path) -> dict[str, object]:
    """Write every PTX and the manifest into ``out``; returns the manifest."""
    source = SOURCE.read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("kernels.*.ptx"):  # an arch dropped from ARCHES must not linger
        old.unlink()
    ptx_entries: dict[str, dict[str, object]] = {}
    entries: list[str] | None = None
    with tempfile.TemporaryDirectory() as scratch:
        for arch in ARCHES:
            options = [f"--gpu-architecture={arch}", *OPTIONS, f"-I{include}"]
            ptx, log = nvrtc.compile_ptx(source, SOURCE.name, options)
            if log:
                print(f"{arch}: NVRTC says: {log}")
            target = "sm_" + arch.split("_")[1]
            if not re.search(rf"^\.target {target}$", ptx, re.M):
                raise BuildError(f"NVRTC's PTX for {arch} does not declare .target {target}")
            found = ENTRY.findall(ptx)
            if entries is not None and found != entries:
                raise BuildError(f"{arch} has the kernels {found}, the others {entries}")
            entries = found
            name = f"kernels.{arch}.ptx"
            data = lower_isa(ptx, PTX_ISA[arch]).encode()
            (Path(scratch) / name).write_bytes(data)
            check_with_ptxas(ptxas, Path(scratch) / name, target, Path(scratch))
            (out / name).write_bytes(data)
            ptx_entries[arch] = {"file": name, "target": target, "ptx_isa": PTX_ISA[arch], "sha256": sha256(data),
                                 "bytes": len(data)}
            print(f"{arch}: {name} ({len(data)} bytes, PTX ISA {PTX_ISA[arch]}, ptxas {target} ok)")
    manifest: dict[str, object] = {
        "generated_by": "scripts/build_kernels.py (do not edit: rerun it after changing kernels.cu)",
        "source": SOURCE.name,
        "source_sha256": sha256(source),
        "nvrtc": f"{nvrtc.version[0]}.{nvrtc.version[1]}",
        "nvrtc_wheel": wheel_version("nvidia-cuda-nvrtc-cu12"),
        "headers_wheel": wheel_version("nvidia-cuda-runtime-cu12"),
        "ptxas": ptxas_version(ptxas),
        "options": ["--gpu-architecture=<arch>", *OPTIONS, "-I<nvidia-cuda-runtime-cu12>/include"],
        "entries": entries,
        "ptx": ptx_entries,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def compare(built: Path, shipped: Path) -> list[str]:
    names = sorted({p.name for p in built.iterdir()} | {p.name for p in shipped.glob("*")})
    return [name for name in names
            if not (built / name).is_file() or not (shipped / name).is_file()
            or (built / name).read_bytes() != (shipped / name).read_bytes()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--check", action="store_true",
                        help="build into a temporary folder and compare with --out instead of writing it")
    parser.add_argument("--nvrtc", type=Path, help="libnvrtc.so.12 (default: the nvidia-cuda-nvrtc-cu12 wheel)")
    parser.add_argument("--include", type=Path,
                        help="folder with cuda_fp16.h (default: the nvidia-cuda-runtime-cu12 wheel's include/)")
    parser.add_argument("--ptxas", type=Path, help="ptxas (default: the nvidia-cuda-nvcc-cu12 wheel's)")
    args = parser.parse_args(argv)
    try:
        nvrtc, include, ptxas = locate_tools(args)
        print(f"NVRTC {nvrtc.version[0]}.{nvrtc.version[1]} ({nvrtc.path}), headers {include}, ptxas {ptxas}")
        if args.check:
            with tempfile.TemporaryDirectory() as folder:
                build(Path(folder), nvrtc, include, ptxas)
                differ = compare(Path(folder), args.out)
            if differ:
                print(f"{args.out} differs from a fresh build: {', '.join(differ)}", file=sys.stderr)
                return 1
            print(f"{args.out} matches a fresh build")
            return 0
        build(args.out, nvrtc, include, ptxas)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
