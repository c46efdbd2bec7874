"""Data-parallel helpers: process group under ``torchrun``, device choice, the sharded sample stream.

The process group serves CPU and CUDA tensors alike (``cpu:gloo,cuda:nccl`` on a GPU): the per-step flags
(a finite loss on every rank, a stop agreed by all) are small CPU tensors, while DDP's gradients and the
DINO centre live on the GPU. Every collective here goes through :func:`all_reduce_max`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "all_finite", "all_reduce_max", "any_rank", "backend_for", "init_distributed", "sample_indices"]


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    joined: bool = False  # a process group exists (torchrun, even with one process): DDP and collectives run

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def backend_for(device: torch.device) -> str:
    """The process group's backends: gloo for CPU tensors everywhere, NCCL for CUDA tensors on a GPU."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def launched_by_torchrun(environ: dict | None = None) -> bool:
    env = os.environ if environ is None else environ
    return "RANK" in env and "WORLD_SIZE" in env


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (env RANK/WORLD_SIZE set; one process too, so
    that ``torchrun --nproc_per_node=1`` runs the data-parallel code path)."""
    if not launched_by_torchrun():
        return DistInfo()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device))
    return DistInfo(
        rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)), joined=True
    )


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


def all_reduce_max(value: float, info: DistInfo) -> float:
    """The largest ``value`` over the ranks (a CPU tensor: the group's gloo part carries it)."""
    if not info.joined:
        return value
    t = torch.tensor([float(value)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_finite(value: float, info: DistInfo) -> bool:
    """Whether ``value`` is finite on every rank."""
    return all_reduce_max(0.0 if math.isfinite(value) else 1.0, info) == 0.0


def any_rank(flag: bool, info: DistInfo) -> bool:
    """Whether ``flag`` is set on any rank (a stop that every rank agrees to)."""
    return all_reduce_max(1.0 if flag else 0.0, info) > 0.0
