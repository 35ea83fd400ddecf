#!/usr/bin/env bash
# Every gpu test and the GPU loop benchmark on a GPU machine, inside 9 minutes (EDGESEG_GPU_DEADLINE_S=540).
#
#   bash tests/gpu/fetch_wheels.sh        # once, where pip works: pycuda's sdist etc. into .whl/ (git-ignored)
#   bash tests/gpu/run_on_device.sh       # on the GPU machine (the device tool: carry [".whl"], timeout_s 600)
#
# Steps, each under `timeout` and all under the deadline (a step that would pass it gets what is left):
#   1. the machine: nvidia-smi, nvcc, the Python and its CUDA/torch/onnx/tensorrt/pycuda packages, the compiler
#   2. the Python: $PYTHON (default python3) where it has numpy, click, pillow and pytest (the lent H200 image's
#      python3 does, and that machine reaches no package index); otherwise a venv in $WORK with them installed
#      from $EDGESEG_WHEELS or the index. edgeseg itself runs from this checkout (PYTHONPATH), uninstalled.
#   3. pycuda (tests/gpu/build_pycuda.py): kept if it imports, else built from the sdist in $EDGESEG_WHEELS
#      (or pip download) against the CUDA headers it finds, into $WORK/site (on PYTHONPATH), then checked
#      (import, cuInit, device count). Without it steps 4 and 5 are not run: gpu tests would only be skipped.
#   4. python -m pytest -q -m gpu on every test file with gpu tests (the files, not all of tests/: one test
#      module that cannot be imported on that machine would stop the whole collection)
#   5. python benchmarks/gpu_loop.py --out benchmarks/results/gpu.md (writes gpu.json beside it)
# Logs and results are copied to $OUT when it is set (the device tool brings back what is there): this log
# (run_on_device.log), pycuda-build.log, pytest-gpu.xml, gpu.md, gpu.json.
# Exit status 0 only if every step passed; the failures are listed at the end. Settings (environment):
# PYTHON, EDGESEG_WHEELS, EDGESEG_GPU_WORK (/tmp/edgeseg-gpu), EDGESEG_GPU_DEADLINE_S (540), EDGESEG_GPU_JOBS
# (compiler processes for pycuda; 0 = all cores), OUT.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
T0=$SECONDS
DEADLINE_S=${EDGESEG_GPU_DEADLINE_S:-540}
WORK=${EDGESEG_GPU_WORK:-/tmp/edgeseg-gpu}
WHEELS=${EDGESEG_WHEELS:-$ROOT/.whl}
SITE=$WORK/site
RESULTS=${OUT:-$WORK/out}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
mkdir -p "$WORK" "$SITE" "$RESULTS"
touch "$WORK/.started"
exec > >(tee "$RESULTS/run_on_device.log") 2>&1
TEE_PID=$!

FAILED=()
left() { echo $(( DEADLINE_S - (SECONDS - T0) )); }
header() { echo; echo "==> [$(( SECONDS - T0 ))s] $*"; }
fail() { FAILED+=("$1"); echo "!! $1"; }

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
    if (( ${#FAILED[@]} )); then
        echo "FAILED:"
        printf '  - %s\n' "${FAILED[@]}"
        rc=1
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
header "1. the machine (deadline ${DEADLINE_S}s; work folder $WORK; wheels $WHEELS)"
(
    set +e
    echo "--- nvidia-smi"
    timeout 30 nvidia-smi || echo "(nvidia-smi failed or is missing)"
    timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,pcie.link.gen.current \
        --format=csv 2>/dev/null
    echo "--- nvcc"
    if command -v nvcc; then timeout 30 nvcc --version; else echo "no nvcc on PATH"; fi
    ls -d /usr/local/cuda* 2>/dev/null || echo "no /usr/local/cuda*"
    echo "CUDA_HOME=${CUDA_HOME:-} CUDA_ROOT=${CUDA_ROOT:-} LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    echo "--- python: $PY"
    command -v "$PY"
    "$PY" -c 'import sys; print(sys.version.replace("\n", " ")); print("executable", sys.executable, "prefix", sys.prefix)'
    timeout 60 "$PY" -m pip list 2>/dev/null | grep -i -E "cuda|torch|onnx|tensorrt|pycuda|numpy|pytest|pillow|click|setuptools" \
        || echo "(pip list failed or matched nothing)"
    echo "--- build tools"
    command -v c++ g++ gcc || echo "no C/C++ compiler on PATH"
    echo "--- host"
    uname -srm
    echo "cores: $(nproc)"
    free -g 2>/dev/null | head -2
    df -h "$WORK" 2>/dev/null | tail -1
    ls -la "$WHEELS" 2>/dev/null || echo "no wheels folder $WHEELS (tests/gpu/fetch_wheels.sh makes it)"
) || true

# ---- 2. the Python
header "2. the Python"
if "$PY" -c 'import numpy, click, PIL, pytest' 2>/dev/null; then
    echo "using $PY: numpy, click, pillow and pytest are there"
else
    echo "$PY lacks numpy, click, pillow or pytest: making a venv in $WORK/venv"
    timed "2a. venv" 90 "$PY" -m venv "$WORK/venv"
    PY=$WORK/venv/bin/python
    packages=(numpy click pillow pytest setuptools wheel)
    if [[ -d $WHEELS ]] && timeout 120 "$PY" -m pip install -q --no-index --find-links "$WHEELS" "${packages[@]}"; then
        echo "installed ${packages[*]} from $WHEELS"
    else
        timed "2b. pip install from the index" 180 "$PY" -m pip install -q --retries 1 --timeout 20 "${packages[@]}"
    fi
    timed "2c. onnxruntime (optional)" 120 "$PY" -m pip install -q --retries 1 --timeout 20 onnxruntime \
        || echo "(onnxruntime is optional for the gpu tests)"
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import edgeseg, numpy; print("edgeseg", edgeseg.__version__, "from", edgeseg.__file__, "| numpy", numpy.__version__)'
"$PY" -c 'import onnxruntime; print("onnxruntime", onnxruntime.__version__)' 2>/dev/null || echo "no onnxruntime (optional)"

# ---- 3. pycuda
PYCUDA_OK=1
timed "3. pycuda" 300 "$PY" tests/gpu/build_pycuda.py --wheels "$WHEELS" --site "$SITE" --work "$WORK" \
    --log "$RESULTS/pycuda-build.log" --jobs "${EDGESEG_GPU_JOBS:-0}" || PYCUDA_OK=0

# ---- 4. the gpu tests
if (( PYCUDA_OK )); then
    mapfile -t GPU_TESTS < <(grep -rlE --include='test_*.py' 'pytest\.mark\.gpu' tests | sort)
    echo "test files with gpu tests: ${GPU_TESTS[*]}"
    if (( ${#GPU_TESTS[@]} == 0 )); then fail "4. gpu tests: no test file under tests/ has pytest.mark.gpu"; fi
    rest=$(left)
    budget=$(( rest - 120 ))  # keep two minutes for the benchmark
    if (( budget > 300 )); then budget=300; fi
    rm -f "$RESULTS/pytest-gpu.xml"
    if (( ${#GPU_TESTS[@]} )); then
        timed "4. gpu tests" "$budget" "$PY" -m pytest -q -m gpu -rs -p no:cacheprovider \
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
if (( PYCUDA_OK )); then
    timed "5. benchmark" 240 "$PY" benchmarks/gpu_loop.py --out benchmarks/results/gpu.md || true
    if [[ benchmarks/results/gpu.md -nt $WORK/.started ]]; then cat benchmarks/results/gpu.md; fi
else
    fail "5. benchmark: not run (no working pycuda)"
fi
