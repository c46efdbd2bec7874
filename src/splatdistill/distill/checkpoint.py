"""A Splat-and-Distill run's checkpoint: what it holds, the refusal to resume under other settings, and the
check that the trained weights are finite before anything is written (a diverged run never overwrites the
last good checkpoint)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from splatdistill.distill.config import TrainConfig
from splatdistill.distill.distributed import all_finite
from splatdistill.distill.parts import TrainingDiverged
from splatdistill.errors import UserError
from splatdistill.runs import load_trainable_state, rng_state, set_rng_state
from splatdistill.safe_load import NUMPY_ARRAYS, load_torch_file

#: settings a resumed run must share with its checkpoint: (group, key)
RESUME_KEYS = (
    ("model", "backbone"),
    ("model", "student"),
    ("method", "targets"),
    ("method", "loss"),
    ("method", "prototypes"),
    ("method", "head_hidden"),
    ("method", "head_bottleneck"),
)


def trained_names(tr) -> list[str]:
    return [n for n, p in tr.student.named_parameters() if p.requires_grad]


def weights_finite(tr, collective: bool = True) -> bool:
    """Every trained parameter of a :class:`~.trainer.Trainer`'s student and teacher is finite
    (``collective``: on every rank; a call that only the main rank makes must pass False)."""
    names = set(trained_names(tr))
    tensors = [p for n, p in tr.student.named_parameters() if n in names]
    tensors += [p for n, p in tr.teacher.module.named_parameters() if n in names]
    if not tensors:
        return True
    total = float(torch.stack([t.detach().float().sum() for t in tensors]).sum())  # NaN/inf if any entry is
    return all_finite(total, tr.dist) if collective else math.isfinite(total)


def last_good(tr) -> str:
    """What a diverged run leaves behind, for its message."""
    if tr.saved_step is not None and tr.checkpoint_path.is_file():
        return f"the last good checkpoint ({tr.checkpoint_path}, step {tr.saved_step}) is untouched"
    return "no checkpoint had been written yet"


def require_finite(tr, when: str, collective: bool = True) -> None:
    """Stop (:class:`~.parts.TrainingDiverged`) before anything is written from non-finite weights."""
    if not weights_finite(tr, collective):
        raise TrainingDiverged(
            f"the weights became non-finite ({when}, step {tr.step}) though the loss was "
            f"finite; nothing was saved and {last_good(tr)}. Lower lr (or set grad_clip) "
            "and resume or restart"
        )


def trainer_state(tr) -> dict[str, Any]:
    """Everything a resumed run needs to continue the uninterrupted one exactly."""
    names = set(trained_names(tr))
    refiner = tr.targets.refiner
    return {
        "step": tr.step,
        "config": tr.cfg.to_dict(),
        "student": {n: p.detach().cpu().clone() for n, p in tr.student.named_parameters() if n in names},
        "teacher": {n: p.detach().cpu().clone() for n, p in tr.teacher.module.named_parameters() if n in names},
        "teacher_steps": int(tr.teacher.steps),
        "center": tr.loss.state_dict(),
        "optimizer": tr.optimizer.state_dict(),
        "scheduler": tr.scheduler.state_dict(),
        "rng": rng_state(),
        **({"grad_scaler": tr.scaler.state_dict()} if tr.scaler.is_enabled() else {}),
        "elapsed": tr.elapsed(),
        **({"lifter_refiner": refiner.state_dict()} if refiner is not None else {}),
    }


def restore_trainer(tr, path: Path) -> None:
    """Load ``path`` into the trainer ``tr``, refusing a checkpoint trained with other settings."""
    if not path.is_file():
        raise UserError("no checkpoint to resume from (expected checkpoint.pt in the run folder)", path)
    state = load_torch_file(path, "training checkpoint", allow=NUMPY_ARRAYS, require=("config", "student", "rng"))
    saved = TrainConfig.from_dict(state.get("config", {}), source=str(path)).to_dict()
    mine = tr.cfg.to_dict()
    for group, key in RESUME_KEYS:
        if saved[group][key] != mine[group][key]:
            raise UserError(
                f"cannot resume: the checkpoint was trained with {key}={saved[group][key]!r}, "
                f"this run has {key}={mine[group][key]!r}",
                path,
            )
    if saved["model"]["lora"]["r"] != mine["model"]["lora"]["r"]:
        raise UserError(
            f"cannot resume: the checkpoint was trained with lora_r={saved['model']['lora']['r']!r}, "
            f"this run has lora_r={mine['model']['lora']['r']!r}",
            path,
        )
    load_trainable_state(tr.student, state["student"])
    load_trainable_state(tr.teacher.module, state["teacher"])
    tr.teacher.steps.fill_(state["teacher_steps"])
    tr.loss.load_state_dict(state.get("center"))
    tr.optimizer.load_state_dict(state["optimizer"])
    tr.scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    if tr.scaler.is_enabled() and "grad_scaler" in state:
        tr.scaler.load_state_dict(state["grad_scaler"])
    tr.step = tr.saved_step = int(state["step"])
    tr.elapsed_before = float(state.get("elapsed", 0.0))
    if tr.targets.refiner is not None and "lifter_refiner" in state:
        tr.targets.refiner.load_state_dict(state["lifter_refiner"])
