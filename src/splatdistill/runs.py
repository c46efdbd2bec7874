"""What every training loop shares (the SnD trainer, the predictor's training): crash-safe checkpoints,
RNG state, the warm-up + cosine schedule, the time budget and TensorBoard logging.

Every file a run writes goes through a temporary file and an atomic rename, so a run killed at any
moment leaves either the previous checkpoint or the new one, never a truncated file.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from splatdistill.atomic import atomic_torch_save, atomic_write_text  # noqa: F401  (the run helpers)

CHECKPOINT = "checkpoint.pt"


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


# ---- shared by every training loop (SnD trainer, predictor training) ------------------------------------

def warmup_cosine(step: int, progress: float, warmup_steps: int, floor: float) -> float:
    """LR multiplier: linear warm-up over ``warmup_steps``, then cosine from 1 to ``floor`` as
    ``progress`` (share of the decay done, clipped to [0, 1]) goes from 0 to 1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    p = min(1.0, max(0.0, progress))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


def one_cycle_cosine(total: int, warmup_pct: float, floor: float = 1e-3):
    """Per-step LR multiplier: linear warm-up over ``warmup_pct`` of the steps, then cosine decay to
    ``floor`` (torch's OneCycleLR shape, but well defined for any number of steps)."""
    warmup = max(1, int(round(total * warmup_pct)))
    return lambda step: warmup_cosine(step, (step - warmup) / max(1, total - warmup), warmup, floor)


class TimeBudget:
    """Elapsed training time across resumes, against an optional budget in minutes (0 = none)."""

    def __init__(self, minutes: float = 0.0, elapsed_before: float = 0.0, clock=time.perf_counter):
        self.minutes, self.before, self.clock = minutes, elapsed_before, clock
        self.start = clock()

    @property
    def elapsed(self) -> float:
        return self.before + self.clock() - self.start

    @property
    def exhausted(self) -> bool:
        return self.minutes > 0 and self.elapsed >= self.minutes * 60


class RunLog:
    """TensorBoard scalars of a run folder (``<out>/tb``), written by the main process only."""

    def __init__(self, out: Path, step: int = 0, enabled: bool = True):
        self.writer = None
        if enabled:
            out.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(out / "tb"), purge_step=step or None)

    def scalars(self, group: str, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{group}/{k}", v, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()
