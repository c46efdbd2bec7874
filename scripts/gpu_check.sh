#!/usr/bin/env bash
# The prepared GPU check (docs/gpu.md): installs the project and gsplat offline, then runs
# `splatdistill bench gpu`, which writes one markdown file of figures (default gpu_check.md).
#
#   scripts/gpu_check.sh --prepare      # here, with the network: .gpu_check/ = a small rooms dataset + gsplat's wheel
#   scripts/gpu_check.sh [--cpu] [--out FILE] [--budget S]   # on the GPU machine (or --cpu: the dry run)
#
# The GPU machine needs PyTorch, timm, peft, safetensors and numba; everything else travels in .gpu_check/
# (under 60 MB): the project is installed from this checkout with --no-deps, gsplat from .gpu_check/wheels/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [[ "${1:-}" == "--prepare" ]]; then
    mkdir -p .gpu_check/wheels
    # 8 rooms x 16 views at 256 px (~16 MB; one val and one test room), made by the project's generator
    "$PY" -m splatdistill.cli data build-rooms --out .gpu_check/rooms --scenes 8
    ls .gpu_check/wheels/gsplat-*.whl >/dev/null 2>&1 || "$PY" -m pip download --no-deps gsplat==1.5.3 -d .gpu_check/wheels/
    du -sh .gpu_check
    exit 0
fi

# install this checkout unless it is what python imports already (PYTHONPATH=$PWD/src, or installed before)
here=$("$PY" -c "import splatdistill, pathlib; print(pathlib.Path(splatdistill.__file__).resolve().parents[1])" 2>/dev/null || true)
if [[ "$here" != "$(pwd -P)/src" ]]; then
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
fi
if ! "$PY" -c "import gsplat" 2>/dev/null; then
    if ls .gpu_check/wheels/gsplat-*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-deps --no-index .gpu_check/wheels/gsplat-*.whl
    else
        echo "gpu_check: gsplat is not installed and .gpu_check/wheels/ has no wheel (run scripts/gpu_check.sh --prepare)" >&2
    fi
fi
export PYTHONUNBUFFERED=1
exec "$PY" -m splatdistill.cli bench gpu "$@"
