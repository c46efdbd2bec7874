"""The device and numeric precision a command runs with, and the data-loader workers that fit the machine.

Every command takes ``device: auto`` by default: the CUDA device of this process (``LOCAL_RANK`` under
``torchrun``) when one is present, else the CPU. ``precision: auto`` is bf16 autocast on a CUDA device
that has bf16 (Ampere and later), fp32 elsewhere; fp16 autocast (with a gradient scaler) is for older
GPUs. Autocast covers the networks (backbones, heads); losses, the EMA teacher and the splatter's
compositing stay in fp32 (docs/gpu.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from splatdistill.errors import UserError
from splatdistill.threads import available_cores

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> this process's CUDA device when present, else the CPU; an explicit name is checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is None:  # plain "cuda": this rank's GPU, as auto would pick
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a CUDA device that has it, fp32 otherwise; fp16 needs CUDA (its gradient scaler)."""
    if name not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise UserError("precision=fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
    return name


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast to ``precision`` (bf16/fp16) on ``device``; a no-op for fp32."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=DTYPES[precision]):
        yield


def default_workers(device: torch.device, local_world: int = 1, cores: int | None = None) -> int:
    """Data-loader worker processes per rank: the cores this rank may use beyond its main process, at most
    8 on a GPU (decoding keeps up well before that) and 2 on the CPU (where the workers take cores from
    the step's own threads)."""
    per_rank = (available_cores() if cores is None else cores) // max(1, local_world)
    return max(0, min(8 if device.type == "cuda" else 2, per_rank - 1))


def describe(device: torch.device, precision: str) -> str:
    """``cuda:0 (NVIDIA H100 ...), bf16`` or ``cpu, fp32``: what ``splatdistill info`` prints per command."""
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return f"{device}{name}, {precision}"
