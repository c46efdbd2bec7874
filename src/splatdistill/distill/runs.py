"""Run folders and crash-safe checkpoints.

Every file a run writes goes through a temporary file and an atomic rename, so a run killed at any
moment leaves either the previous checkpoint or the new one, never a truncated file.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only what training changes: trainable parameters and buffers (frozen weights come from the backbone)."""
    out = {n: p.detach().cpu().clone() for n, p in module.named_parameters() if p.requires_grad}
    out.update({f"buffer:{n}": b.detach().cpu().clone() for n, b in module.named_buffers()})
    return out


def load_trainable_state(module: torch.nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> None:
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    for name, value in state.items():
        if name.startswith("buffer:"):
            target = buffers.get(name[7:])
        else:
            target = params.get(name)
        if target is None:
            if strict:
                raise KeyError(f"checkpoint entry {name} has no counterpart in the model")
            continue
        with torch.no_grad():
            target.copy_(value.to(target.device, target.dtype))
