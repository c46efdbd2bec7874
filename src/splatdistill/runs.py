"""What every training loop shares (the SnD trainer, the predictor's training, the FiT3D fields): the loop
itself (:class:`Run`), crash-safe checkpoints, RNG state, the warm-up + cosine schedule, the time budget and
logging (``log.jsonl``, TensorBoard).

Every file a run writes goes through a temporary file and an atomic rename, so a run killed at any
moment leaves either the previous checkpoint or the new one, never a truncated file.
"""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from splatdistill.atomic import LineLog

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


# ---- the loop every training run shares --------------------------------------------------------------


@dataclass
class StallCheck:
    """Stops a run whose ``key`` metric stays under ``share`` for ``steps`` steps in a row, or for every step of
    a session that reached the end sooner (a run that trains nothing in silence is worse than one that stops)."""

    key: str
    share: float
    steps: int  # 0 = off
    fail: Callable[[int, bool, float], None]  # (steps in a row, whole session, last value) -> raises
    low: int = 0
    seen: int = 0

    def __call__(self, metrics: dict[str, float], step: int, total: int) -> None:
        self.low = self.low + 1 if metrics[self.key] < self.share else 0
        self.seen += 1
        whole_run = step >= total and self.low == self.seen
        if self.steps > 0 and (self.low >= self.steps or whole_run):
            self.fail(self.low, whole_run, metrics[self.key])


@dataclass
class RunResult:
    steps: int
    history: list[dict[str, float]]
    seconds: float  # this session's training time (from the budget's start)
    stopped_by: str | None  # "signal" (SIGTERM), "time" (the budget) or None (ran to the end)


def _no_postfix(metrics: dict[str, float]) -> dict[str, str]:
    return {}


@dataclass(kw_only=True)
class Run:
    """One training loop: ``train_step`` until ``total`` steps, with what every loop of the project shares.

    Owns the progress bar, ``log.jsonl`` (one fsynced line per step, :class:`~splatdistill.atomic.LineLog`),
    TensorBoard scalars, checkpoints every ``checkpoint_every`` steps and once at the end (``save(final)``), the
    time budget, SIGTERM (finish the step, checkpoint, return) and the stall check. ``agree`` makes a stop
    decision collective (every rank of a data-parallel run stops at the same step); only the ``main`` process
    writes logs and shows progress. ``session_budget``: the budget counts this session's time, not the run's.
    """

    name: str
    total: int
    step: int
    train_step: Callable[[], dict[str, float]]
    budget: TimeBudget = field(default_factory=TimeBudget)
    session_budget: bool = False
    save: Callable[[bool], None] | None = None
    checkpoint_every: int = 0
    main: bool = True
    progress: bool = True
    signals: bool = True
    agree: Callable[[bool], bool] = bool
    log_jsonl: Path | None = None
    tensorboard: RunLog | None = None  # the caller's (it may log other groups to it)
    tb_scalars: Callable[[dict[str, float]], dict[str, float]] = dict
    postfix: Callable[[dict[str, float]], dict[str, str]] = _no_postfix
    stall: StallCheck | None = None
    on_step: Callable[[dict[str, float]], None] | None = None
    evaluate: Callable[[], None] | None = None  # held-out measurement every ``evaluate_every`` steps and at the end
    evaluate_every: int = 0
    unit: str = "step"
    leave: bool = True
    signalled: bool = False

    def __call__(self) -> RunResult:
        tb = self.tensorboard
        logf = LineLog(self.log_jsonl) if self.log_jsonl is not None and self.main else None
        bar = tqdm(
            total=self.total,
            initial=self.step,
            desc=self.name,
            unit=self.unit,
            dynamic_ncols=True,
            leave=self.leave,
            disable=not (self.main and self.progress),
        )
        old = self._catch_sigterm()
        history: list[dict[str, float]] = []
        try:
            stopped = self._stop()  # a resumed run may already be out of time
            while not stopped and self.step < self.total:
                metrics = self.train_step()
                self.step += 1
                history.append(metrics)
                self._log(metrics, logf, tb, bar)
                if self.stall is not None:
                    self.stall(metrics, self.step, self.total)
                stopped = self._stop()
                if (
                    self.save is not None
                    and self.step % max(1, self.checkpoint_every or self.total) == 0
                    and self.step < self.total
                    and not stopped
                ):
                    self.save(False)
                if (
                    self.evaluate
                    and self.evaluate_every > 0
                    and self.step % self.evaluate_every == 0
                    and self.step < self.total
                    and not stopped
                ):
                    self.evaluate()
            if self.save is not None:
                self.save(True)
        finally:
            bar.close()
            if old is not None:
                signal.signal(signal.SIGTERM, old)
            if tb is not None:
                tb.flush()
            if logf is not None:
                logf.close()
        seconds = self.budget.clock() - self.budget.start
        if self.evaluate:
            self.evaluate()
        by = "signal" if self.signalled else "time" if stopped else None
        return RunResult(self.step, history, seconds, by)

    def _log(self, metrics: dict[str, float], logf: LineLog | None, tb: RunLog | None, bar) -> None:
        if logf is not None:
            logf.write_line(json.dumps(metrics))
        if tb is not None:
            tb.scalars("train", self.tb_scalars(metrics), self.step)
        bar.update(1)
        bar.set_postfix(**self.postfix(metrics))
        if self.on_step is not None:
            self.on_step(metrics)

    def _stop(self) -> bool:
        """Out of the time budget or asked to stop (SIGTERM), agreed by every rank."""
        b = self.budget
        used = b.clock() - b.start if self.session_budget else b.elapsed
        return self.agree((b.minutes > 0 and used / 60 >= b.minutes) or self.signalled)

    def _catch_sigterm(self):
        """SIGTERM sets a flag: the step finishes, the checkpoint is written and the loop returns (the main
        process of the main thread only; the other ranks learn of it through ``agree``)."""
        if not (self.signals and self.main and threading.current_thread() is threading.main_thread()):
            return None

        def _on_term(signum, frame):
            self.signalled = True

        return signal.signal(signal.SIGTERM, _on_term)
