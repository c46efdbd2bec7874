"""Data-parallel helpers: process group under ``torchrun``, device choice, the sharded sample stream."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from splatdistill.errors import UserError


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (env RANK/WORLD_SIZE set)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name} requested but CUDA is not available")
    return dev


def sample_indices(num_samples: int, seed: int, step: int, batch: int, rank: int, world: int) -> list[tuple[int, int]]:
    """(epoch, dataset index) pairs for (step, rank): a seeded permutation per epoch, split into
    disjoint shards, so ranks never share a sample and a resumed run draws what it would have drawn."""
    per_step = batch * world
    out = []
    for b in range(batch):
        position = step * per_step + rank * batch + b
        epoch, offset = divmod(position, num_samples)
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        out.append((epoch, int(torch.randperm(num_samples, generator=g)[offset])))
    return out


def all_finite(value: float, info: DistInfo) -> bool:
    """Whether ``value`` is finite on every rank."""
    ok = math.isfinite(value)
    if info.world > 1:
        t = torch.tensor([0.0 if ok else 1.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        ok = t.item() == 0.0
    return ok
