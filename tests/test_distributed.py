"""The process group serves every tensor its collectives reduce, on CPU and CUDA machines alike.

Runs without a GPU: ``init_process_group`` and ``all_reduce`` are replaced by recorders, and each reduced
tensor's device is checked against the backends the group was created with (NCCL serves CUDA tensors
only; ``cpu:gloo,cuda:nccl`` serves both). Before issue 29 the group on a GPU was plain ``nccl`` while
the per-step flags were CPU tensors: the first step of a multi-GPU run crashed.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from splatdistill.distill import distributed


def served_devices(backend: str) -> set[str]:
    """Device types a process group created with ``backend`` can reduce (torch's backend strings)."""
    serves = {"nccl": {"cuda"}, "gloo": {"cpu", "cuda"}, "mpi": {"cpu", "cuda"}}
    if ":" not in backend:
        return serves[backend]
    return {part.split(":")[0] for part in backend.split(",")}


@pytest.fixture
def fake_group(monkeypatch):
    """A two-rank 'torchrun' whose collectives check their tensors' devices; yields the reduced devices."""
    state: dict = {"reduced": []}
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(dist, "is_initialized", lambda: "backend" in state)
    monkeypatch.setattr(dist, "init_process_group", lambda backend=None, **kw: state.update(backend=backend))
    monkeypatch.setattr(dist, "get_rank", lambda *a, **k: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)

    def all_reduce(tensor, op=None, **kw):
        served = served_devices(state["backend"])
        if tensor.device.type not in served:
            raise RuntimeError(
                f"no backend for {tensor.device.type} tensors in a group created with backend={state['backend']!r}"
            )
        state["reduced"].append(tensor.device.type)

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    return state


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_every_collective_reduces_a_tensor_its_process_group_serves(fake_group, device):
    info = distributed.init_distributed(torch.device(device, 0) if device == "cuda" else torch.device(device))
    assert info.world == 2
    assert distributed.all_finite(1.0, info)  # a CPU flag: needs a CPU backend in the group
    assert not distributed.all_finite(float("nan"), info)
    assert fake_group["reduced"] == ["cpu", "cpu"]
    assert device in served_devices(fake_group["backend"])  # DDP's gradients and the DINO centre
    if hasattr(distributed, "any_rank"):  # the stop flag (a helper of its own since issue 29)
        assert distributed.any_rank(True, info) and not distributed.any_rank(False, info)


def test_torchrun_with_one_process_joins_a_group_and_plain_runs_do_not(fake_group, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 1)
    assert distributed.init_distributed(torch.device("cpu")).joined  # torchrun --nproc_per_node=1: DDP path
    for k in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k)
    info = distributed.init_distributed(torch.device("cpu"))
    assert not info.joined and info.world == 1
    assert distributed.all_finite(1.0, info) and not distributed.any_rank(False, info)
