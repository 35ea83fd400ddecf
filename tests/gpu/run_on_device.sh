#!/usr/bin/env bash
# Every gpu test and the GPU loop benchmark on a GPU machine, inside 7 minutes (EDGESEG_GPU_DEADLINE_S=420): one
# 10-minute device call with room to rerun.
#
#   bash tests/gpu/fetch_wheels.sh        # once, where pip works: pycuda's sdist etc. into .whl/ (git-ignored)
#   bash tests/gpu/run_on_device.sh       # on the GPU machine (the device tool: carry [".whl"], timeout_s 600)
#   bash tests/gpu/run_on_device.sh --dry-run   # anywhere: every step runs or says "skipped: no GPU" (< 1 min)
#
# Steps, each under `timeout` and all under the deadline (a step that would pass it gets what is left):
#   1. the machine: nvidia-smi, nvcc, the Python and its CUDA/torch/onnx/tensorrt/pycuda/cupy packages, and what
#      a pycuda build needs: the C/C++ compiler, the Python's Python.h, libcuda
#   2. the Python: $PYTHON, else the first python3/python/conda Python that imports torch (the lent GPU image's),
#      else python3, where it has numpy, click, pillow and pytest. Otherwise a venv in $WORK from $EDGESEG_WHEELS,
#      or from the package index only when a quick probe reaches one (the lent machines have none: it fails fast
#      instead). edgeseg itself runs from this checkout (PYTHONPATH), uninstalled.
#   3. pycuda (tests/gpu/build_pycuda.py, CFLAGS=-g0, at most 200 s): kept if it imports, else built from the sdist
#      in $EDGESEG_WHEELS against the CUDA headers it finds, into $WORK/site (on PYTHONPATH), then checked.
#   3b. plan B when pycuda is missing and CuPy is there: tests/gpu/cupy_kernels.py loads the shipped PTX with
#      cupy.RawModule and checks the kernels and a CUDA-graph replay against the numpy references (at most 90 s).
#   4. python -m pytest -q -m gpu on every test file with gpu tests (at most 150 s, faulthandler after 100 s; the
#      files, not all of tests/: one test module that cannot be imported there would stop the whole collection)
#   5. python benchmarks/gpu_loop.py --out benchmarks/results/gpu.md (at most 90 s; writes gpu.json beside it)
# Without a GPU (nvidia-smi -L fails) steps 3-5 say "skipped: no GPU". Logs and results are copied to $OUT when it
# is set (the device tool brings back what is there): this log (run_on_device.log), pycuda-build.log,
# pytest-gpu.xml, cupy_kernels.json, gpu.md, gpu.json.
# Exit status 0 only if every step passed (with --dry-run: if every step ran or was skipped); the failures are
# listed at the end. Settings (environment): PYTHON, EDGESEG_WHEELS, EDGESEG_GPU_WORK (/tmp/edgeseg-gpu),
# EDGESEG_GPU_DEADLINE_S (420), EDGESEG_GPU_JOBS (compiler processes for pycuda; 0 = all cores),
# EDGESEG_GPU_DRY_RUN=1 (as --dry-run), OUT.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
DRY=${EDGESEG_GPU_DRY_RUN:-0}
for arg in "$@"; do
    case $arg in
        --dry-run) DRY=1 ;;
        -h | --help) sed -n '2,31p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "unknown argument: $arg (expected --dry-run or --help)" >&2; exit 2 ;;
    esac
done
T0=$SECONDS
DEADLINE_S=${EDGESEG_GPU_DEADLINE_S:-420}
WORK=${EDGESEG_GPU_WORK:-/tmp/edgeseg-gpu}
WHEELS=${EDGESEG_WHEELS:-$ROOT/.whl}
SITE=$WORK/site
RESULTS=${OUT:-$WORK/out}
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
mkdir -p "$WORK" "$SITE" "$RESULTS"
touch "$WORK/.started"
exec > >(tee "$RESULTS/run_on_device.log") 2>&1
TEE_PID=$!

FAILED=()
left() { echo $(( DEADLINE_S - (SECONDS - T0) )); }
header() { echo; echo "==> [$(( SECONDS - T0 ))s] $*"; }
fail() { FAILED+=("$1"); echo "!! $1"; }

# pick_python: $PYTHON, else the first Python that imports torch (the GPU image's), else python3
pick_python() {
    if [[ -n ${PYTHON:-} ]]; then echo "$PYTHON"; return; fi
    local candidate
    for candidate in python3 python /opt/conda/bin/python /usr/local/bin/python3 /usr/bin/python3; do
        if command -v "$candidate" >/dev/null 2>&1 && timeout 60 "$candidate" -c 'import torch' >/dev/null 2>&1; then
            command -v "$candidate"
            return
        fi
    done
    echo python3
}
PY=$(pick_python)

GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && timeout 30 nvidia-smi -L >/dev/null 2>&1; then GPU=1; fi
SKIP=""  # why steps 3-5 do not run ("" = they run)
if (( ! GPU )); then SKIP="no GPU"; elif (( DRY )); then SKIP="dry run"; fi
skipped() { header "$1: skipped: $SKIP"; }

# timed NAME SECONDS COMMAND...: COMMAND under timeout, given at most what is left of the deadline
timed() {
    local name=$1 budget=$2 rest rc=0 t0=$SECONDS
    shift 2
    rest=$(left)
    if (( rest < budget )); then budget=$rest; fi
    if (( budget < 10 )); then
        fail "$name: not run, the ${DEADLINE_S}s budget is spent"
        return 1
    fi
    header "$name (at most ${budget}s)"
    timeout --kill-after=10 "$budget" "$@" || rc=$?
    if (( rc == 124 || rc == 137 )); then
        fail "$name: timed out after ${budget}s"
    elif (( rc != 0 )); then
        fail "$name: exit $rc"
    fi
    echo "<== $name: exit $rc after $(( SECONDS - t0 ))s"
    return "$rc"
}

finish() {
    local rc=$?
    for file in benchmarks/results/gpu.md benchmarks/results/gpu.json; do
        if [[ -f $file && $file -nt $WORK/.started ]]; then cp "$file" "$RESULTS/"; fi
    done
    echo
    echo "==> [$(( SECONDS - T0 ))s] done; results in $RESULTS: $(cd "$RESULTS" && echo *)"
    if (( rc != 0 )) && (( ${#FAILED[@]} == 0 )); then FAILED+=("the script stopped with exit $rc"); fi
    if (( ! DRY )) && [[ -n $SKIP ]]; then FAILED+=("steps 3-5 skipped ($SKIP): nothing was checked on a GPU"); fi
    if (( ${#FAILED[@]} )); then
        echo "FAILED:"
        printf '  - %s\n' "${FAILED[@]}"
        rc=1
    elif [[ -n $SKIP ]]; then
        echo "dry run: every step ran or was skipped ($SKIP); nothing was checked on a GPU"
        rc=0
    else
        echo "every step passed"
        rc=0
    fi
    exec 1>&- 2>&-  # let tee write the log's end before the device tool collects $OUT
    wait "$TEE_PID" 2>/dev/null || true
    exit "$rc"
}
trap finish EXIT

# ---- 1. the machine
header "1. the machine (deadline ${DEADLINE_S}s; work folder $WORK; wheels $WHEELS; GPU: $([[ $GPU == 1 ]] && echo yes || echo no))"
(
    set +e
    echo "--- nvidia-smi"
    if (( GPU )); then
        timeout 30 nvidia-smi
        timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,pcie.link.gen.current \
            --format=csv 2>/dev/null
    else
        echo "no GPU: nvidia-smi is missing or lists none"
    fi
    echo "--- nvcc"
    if command -v nvcc; then timeout 30 nvcc --version; else echo "no nvcc on PATH"; fi
    ls -d /usr/local/cuda* 2>/dev/null || echo "no /usr/local/cuda*"
    echo "CUDA_HOME=${CUDA_HOME:-} CUDA_ROOT=${CUDA_ROOT:-} LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    echo "--- python: $PY"
    command -v "$PY"
    "$PY" -c 'import sys; print(sys.version.replace("\n", " ")); print("executable", sys.executable, "prefix", sys.prefix)'
    timeout 60 "$PY" -m pip list 2>/dev/null \
        | grep -i -E "cuda|cupy|torch|onnx|tensorrt|pycuda|numpy|pytest|pillow|click|setuptools" \
        || echo "(pip list failed or matched nothing)"
    echo "--- what a pycuda build needs"
    for tool in c++ g++ gcc; do
        if command -v "$tool" >/dev/null; then echo "$tool: $(command -v "$tool"): $("$tool" --version | head -1)"
        else echo "$tool: not on PATH"; fi
    done
    "$PY" - <<'EOF'
import sys, sysconfig
from pathlib import Path
include = Path(sysconfig.get_paths()["include"])
print(f"Python.h: {include / 'Python.h'} {'found' if (include / 'Python.h').is_file() else 'MISSING'}; "
      f"sysconfig CC={sysconfig.get_config_var('CC')!r}")
EOF
    libcuda=$(ldconfig -p 2>/dev/null | grep -E 'libcuda\.so(\.1)? ' | head -3)
    echo "libcuda (ldconfig): ${libcuda:-none}"
    ls -l /usr/local/cuda/lib64/stubs/libcuda.so /usr/lib/x86_64-linux-gnu/libcuda.so* 2>/dev/null \
        || echo "no libcuda in /usr/local/cuda/lib64/stubs or /usr/lib/x86_64-linux-gnu"
    echo "--- host"
    uname -srm
    echo "cores: $(nproc)"
    free -g 2>/dev/null | head -2
    df -h "$WORK" 2>/dev/null | tail -1
    ls -la "$WHEELS" 2>/dev/null || echo "no wheels folder $WHEELS (tests/gpu/fetch_wheels.sh makes it)"
) || true

# ---- 2. the Python
header "2. the Python"
PACKAGES=(numpy click pillow pytest)
if "$PY" -c 'import numpy, click, PIL, pytest' 2>/dev/null; then
    echo "using $PY: numpy, click, pillow and pytest are there"
elif [[ -n $SKIP ]]; then
    echo "$PY lacks numpy, click, pillow or pytest; skipped: $SKIP (a GPU run would make a venv in $WORK/venv)"
else
    echo "$PY lacks numpy, click, pillow or pytest: making a venv in $WORK/venv (it sees $PY's packages)"
    timed "2a. venv" 60 "$PY" -m venv --system-site-packages "$WORK/venv"
    VENV_PY=$WORK/venv/bin/python
    if [[ -d $WHEELS ]] && timeout 120 "$VENV_PY" -m pip install -q --no-index --find-links "$WHEELS" "${PACKAGES[@]}"; then
        echo "installed ${PACKAGES[*]} from $WHEELS"
    elif timeout 20 "$VENV_PY" -m pip download -q --no-deps --retries 0 --timeout 5 -d "$WORK/probe" click \
            >/dev/null 2>&1; then
        timed "2b. pip install from the index" 120 "$VENV_PY" -m pip install -q --retries 1 --timeout 20 \
            "${PACKAGES[@]}"
    else
        fail "2. the Python: $PY lacks ${PACKAGES[*]}, $WHEELS has no wheels for them and no package index answers"
        echo "fix: PYTHON=<a Python with them> bash tests/gpu/run_on_device.sh, or carry their wheels in $WHEELS"
        exit 1
    fi
    PY=$VENV_PY
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import edgeseg, numpy; print("edgeseg", edgeseg.__version__, "from", edgeseg.__file__, "| numpy", numpy.__version__)'
"$PY" -c 'import onnxruntime; print("onnxruntime", onnxruntime.__version__)' 2>/dev/null || echo "no onnxruntime (optional)"

# ---- 3. pycuda (3b: CuPy when pycuda cannot be had)
PYCUDA_OK=0
if [[ -n $SKIP ]]; then
    skipped "3. pycuda"
    skipped "3b. CuPy kernel check (plan B)"
else
    export CFLAGS="-g0${CFLAGS:+ $CFLAGS}"  # no debug info: a faster build of pycuda's ~40 C++ files
    if timed "3. pycuda" 200 "$PY" tests/gpu/build_pycuda.py --wheels "$WHEELS" --site "$SITE" --work "$WORK" \
            --log "$RESULTS/pycuda-build.log" --jobs "${EDGESEG_GPU_JOBS:-0}"; then
        PYCUDA_OK=1
    elif "$PY" -c 'import cupy' 2>/dev/null; then
        timed "3b. CuPy kernel check (plan B)" 90 "$PY" tests/gpu/cupy_kernels.py --out "$RESULTS/cupy_kernels.json" \
            || true
    else
        fail "3b. CuPy kernel check (plan B): not run, $PY has no cupy either"
    fi
fi

# ---- 4. the gpu tests
if [[ -n $SKIP ]]; then
    skipped "4. gpu tests"
elif (( PYCUDA_OK )); then
    mapfile -t GPU_TESTS < <(grep -rlE --include='test_*.py' 'pytest\.mark\.gpu' tests | sort)
    echo "test files with gpu tests: ${GPU_TESTS[*]}"
    if (( ${#GPU_TESTS[@]} == 0 )); then fail "4. gpu tests: no test file under tests/ has pytest.mark.gpu"; fi
    rest=$(left)
    budget=$(( rest - 60 ))  # keep a minute for the benchmark
    if (( budget > 150 )); then budget=150; fi
    rm -f "$RESULTS/pytest-gpu.xml"
    if (( ${#GPU_TESTS[@]} )); then
        timed "4. gpu tests" "$budget" "$PY" -m pytest -q -m gpu -rs -p no:cacheprovider -o faulthandler_timeout=100 \
            --junitxml="$RESULTS/pytest-gpu.xml" "${GPU_TESTS[@]}" || true
    fi
    if [[ -f $RESULTS/pytest-gpu.xml ]]; then
        "$PY" - "$RESULTS/pytest-gpu.xml" <<'EOF' || fail "4. gpu tests: every one was skipped"
import sys
import xml.etree.ElementTree as ET

suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite[0]
counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
print("junit: " + ", ".join(f"{value} {key}" for key, value in counts.items()))
if counts["tests"] and counts["skipped"] == counts["tests"]:
    print("!! every gpu test was skipped: pycuda or the GPU is not usable from pytest")
    raise SystemExit(1)
EOF
    fi
else
    fail "4. gpu tests: not run (no working pycuda: every gpu test would only be skipped)"
fi

# ---- 5. the benchmark
if [[ -n $SKIP ]]; then
    skipped "5. benchmark"
elif (( PYCUDA_OK )); then
    timed "5. benchmark" 90 "$PY" benchmarks/gpu_loop.py --frames 100 --out benchmarks/results/gpu.md || true
    if [[ benchmarks/results/gpu.md -nt $WORK/.started ]]; then cat benchmarks/results/gpu.md; fi
else
    fail "5. benchmark: not run (no working pycuda)"
fi
