"""The Splat-and-Distill training loop (single process, or data-parallel under ``torchrun``).

One step, per sample: targets in the target view(s) from the run's :class:`~.targets.TargetSource` (by
default the teacher's context tokens splatted into them, :mod:`splatdistill.splat`) -> student tokens of
the target view(s) -> the run's loss (:mod:`.losses`) on supervised tokens -> Adam step on the LoRA adapters
and head -> EMA teacher update. The loop itself (checkpoints, time budget, SIGTERM, stall check, logs) is
:class:`splatdistill.runs.Run`.

Reproducibility: the sample drawn at a step is a pure function of (seed, step, rank), and dropout's
RNG state is saved in every checkpoint, so a resumed run follows the uninterrupted one exactly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splatdistill.atomic import atomic_torch_save
from splatdistill.data.views import Sample
from splatdistill.devices import autocast
from splatdistill.distill.checkpoint import last_good, require_finite, restore_trainer, trainer_state, weights_finite
from splatdistill.distill.config import TrainConfig
from splatdistill.distill.distributed import all_finite, sample_indices
from splatdistill.distill.loader import StepBatches, step_loader
from splatdistill.distill.losses import cross_view_consistency, loss_for, token_agreement
from splatdistill.distill.memory_check import check_step_memory
from splatdistill.distill.parts import (
    SnDModel,
    StepTimes,
    TrainingDiverged,
    TrainingStalled,
    build_dataset,
    build_optimizer,
    build_student,
    build_teacher,
    data_parallel,
    export_run,
    held_out_metrics,
    make_lifter,
    optimizer_update,
    require_depth,
    require_samples,
    start_process,
    training_run,
)
from splatdistill.distill.targets import make_target_source
from splatdistill.run_folder import open_training_folder
from splatdistill.runs import CHECKPOINT, RunLog, TimeBudget

__all__ = [
    "SnDModel",
    "StepTimes",
    "Trainer",
    "TrainingDiverged",
    "TrainingStalled",
    "require_depth",
    "build_dataset",
    "cross_view_consistency",
    "make_lifter",
    "sample_indices",
]


#: the end of the message refusing a fresh run over a checkpoint
FRESH_HINT = "pass --resume (resume=True) to continue it, or choose another out="


class Trainer:
    """A Splat-and-Distill run: student, EMA teacher, optimiser, the run's target source and loss, and
    :meth:`fit`, which runs them in a :class:`~splatdistill.runs.Run`."""

    def __init__(self, cfg: TrainConfig, dataset=None, resume: bool = False, lock: bool = True):
        """``lock``: take the run folder's lock until :meth:`fit` ends (or :meth:`close`), and refuse a fresh run
        over a checkpoint, before any work (False: the caller holds the lock; the check is made anyway)."""
        self.cfg = cfg.validate()
        self._lock = open_training_folder(cfg.run.out, "splatdistill train", resume, CHECKPOINT, FRESH_HINT, lock)
        try:
            self._setup(cfg, dataset, resume)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run folder's lock (a trainer that is not fit to the end, e.g. a step-time probe)."""
        if self._lock is not None:
            self._lock.release()

    def _setup(self, cfg: TrainConfig, dataset, resume: bool) -> None:
        proc = start_process(cfg)
        self.device, self.dist, self.precision, self.num_workers = (
            proc.device,
            proc.dist,
            proc.precision,
            proc.num_workers,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.out = Path(cfg.run.out)
        self.dataset = require_samples(dataset if dataset is not None else build_dataset(cfg), cfg)
        student, fixed_teacher = build_student(cfg)
        self.student = student.to(self.device)
        check_step_memory(cfg, self.student, self.dataset, self.device)  # before any big buffer
        m = cfg.method
        self.teacher = build_teacher(cfg, self.student, fixed_teacher).to(self.device)
        self.loss = loss_for(m)(m, self.device, self.dist, lambda: autocast(self.device, self.precision))
        self.student_ddp: nn.Module = data_parallel(self.student, self.dist, self.device)
        self.optimizer, self.scheduler = build_optimizer(cfg, self.student, self._schedule_step)
        # every source gets the lifter: building it draws from the global RNG stream, which dropout then follows
        lifter = make_lifter(cfg, m.splat)
        self.targets = make_target_source(cfg, self.dataset, self.device, self.precision, self.dist, lifter)
        self.refiner = self.targets.refiner
        self.step, self.saved_step = 0, None  # saved_step: the step of the checkpoint on disk
        self.elapsed_before = 0.0  # training seconds of earlier sessions of this run (schedule=budget)
        self.budget: TimeBudget | None = None  # this session's clock (set by fit)
        self._val_dataset = None
        if resume:
            self.load_checkpoint()

    def _schedule_step(self, step: int) -> int:
        """schedule=budget: the step whose share of ``steps`` equals the larger of the steps done and the
        time used (a machine slower than planned moves through warm-up and decay by the clock)."""
        o, budget = self.cfg.optim, getattr(self, "budget", None)  # None while the scheduler is being built
        if budget is None or o.max_minutes <= 0:
            return step
        return max(step, min(o.steps, int(budget.elapsed / (o.max_minutes * 60) * o.steps)))

    def elapsed(self) -> float:
        return self.budget.elapsed if self.budget is not None else self.elapsed_before

    # -- checkpoints (:mod:`.checkpoint`) -----------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def weights_finite(self, collective: bool = True) -> bool:
        return weights_finite(self, collective)

    def save_checkpoint(self) -> None:
        require_finite(self, "before writing the checkpoint")
        if self.dist.is_main:
            atomic_torch_save(trainer_state(self), self.checkpoint_path)
        self.saved_step = self.step

    def load_checkpoint(self) -> None:
        restore_trainer(self, self.checkpoint_path)

    # -- one step -------------------------------------------------------------------------------------
    def teacher_targets(self, b: Sample, times: StepTimes, refine_lifter: bool = False):
        """Targets of a batch on the device (:mod:`.targets`): tokens (B*T, C, h, w), supervised mask (B*T, h*w),
        coverage (B, T, h, w). ``refine_lifter`` (training batches only) lets a lifter refiner learn from it."""
        return self.targets(b, self.teacher.module, self.student, times, self.step, refine_lifter)

    def student_loss(
        self, model: nn.Module, b: Sample, tgt_tokens, mask, times: StepTimes | None = None, training: bool = False
    ):
        """(total loss, consistency term, student tokens) of the student ``model`` on the batch's targets;
        ``training`` (training batches only) adds the cross-view term and moves the DINO centre."""
        times = times or StepTimes()
        with times.phase("student_forward", self.device), autocast(self.device, self.precision):
            s_tokens, s_logits = model(b.target.images.flatten(0, 1))
        s_tokens, s_logits = s_tokens.float(), None if s_logits is None else s_logits.float()  # the loss in fp32
        with times.phase("head_loss", self.device):
            loss, cons = self.loss(
                s_tokens,
                s_logits,
                tgt_tokens,
                mask,
                self.teacher.module.head,
                b.target if training else None,
                update=training,
            )
        return loss, cons, s_tokens

    def train_step(self, batch: Sample, times: StepTimes | None = None) -> dict[str, float]:
        o, dev, times = self.cfg.optim, self.device, times or StepTimes()
        b = batch.to(dev)
        self.student_ddp.train()
        tgt_tokens, mask, cov = self.teacher_targets(b, times, refine_lifter=True)
        loss, cons, s_tokens = self.student_loss(self.student_ddp, b, tgt_tokens, mask, times, training=True)
        loss_value = float(loss.detach())
        if not all_finite(loss_value, self.dist):
            raise TrainingDiverged(
                f"loss became {loss_value} at step {self.step + 1}; the run stopped and "
                f"{last_good(self)}. Lower lr or check the data"
            )
        with times.phase("student_backward", dev):
            optimizer_update(self.optimizer, self.scaler, self.scheduler, self.student, loss, o.grad_clip)
        with times.phase("ema", dev):
            self.teacher.step(self.student)
        self.step += 1
        require_finite(self, "after the update")
        with torch.no_grad():
            agreement = token_agreement(s_tokens.detach(), tgt_tokens, mask)
        return {
            "loss": loss_value,
            "consistency": float(cons.detach()),
            "coverage": float(cov.mean()),
            "supervised_tokens": float(mask.float().mean()),
            "agreement": agreement,
            "lr": float(self.scheduler.get_last_lr()[0]),
            **self.targets.metrics,
        }

    @torch.no_grad()
    def held_out(self) -> dict[str, float] | None:
        """Loss and teacher-student agreement on fixed held-out samples (:func:`~.parts.held_out_metrics`)."""
        return held_out_metrics(self)

    # -- the loop ---------------------------------------------------------------------------------------
    @property
    def step_batches(self) -> StepBatches:
        """This rank's batch of each step (:mod:`.loader`)."""
        return StepBatches(self.dataset, self.cfg.run.seed, self.cfg.optim.batch_size, self.dist.rank, self.dist.world)

    def batch_for_step(self, step: int) -> Sample:
        return self.step_batches[step]

    def batches(self, first: int, last: int):
        """Batches of steps ``first .. last - 1``, built ahead by the data-loader workers."""
        return step_loader(self.step_batches, first, last, self.num_workers, pin=self.device.type == "cuda")

    def fit(self, on_step=None) -> dict[str, Any]:
        try:
            return self._fit(on_step)
        finally:
            self.close()

    def _fit(self, on_step) -> dict[str, Any]:
        cfg, main = self.cfg, self.dist.is_main
        if main:
            cfg.save(self.out / "config.yaml")
        held_out: list[dict[str, float]] = []
        tb = RunLog(self.out, self.step, enabled=main)  # the held-out scalars; the loop writes its own

        def evaluate() -> None:
            r = self.held_out() if main else None
            if r is not None:
                held_out.append({**r, "step": self.step})
                tb.scalars("val", {"loss": r["loss"], "agreement": r["agreement"]}, self.step)

        evaluate()
        self.budget = TimeBudget(cfg.optim.max_minutes, self.elapsed_before, clock=lambda: time.perf_counter())
        batches = self.batches(self.step, cfg.optim.steps)

        def step() -> dict[str, float]:
            t0 = time.perf_counter()
            metrics = self.train_step(next(batches))
            return {**metrics, "step_time": time.perf_counter() - t0, "step": self.step}

        res = training_run(self, step, tb, evaluate, on_step)()
        tb.flush()
        result = {
            "steps": self.step,
            "stopped_early": res.stopped_by is not None,
            "stopped_by": res.stopped_by,
            "history": res.history,
            "seconds": res.seconds,
            "held_out": held_out,
        }
        if main:
            result.update(self.export())
        return result

    def export(self) -> dict[str, str]:
        """Merged student and teacher as timm safetensors, plus the heads (for continuing SnD)."""
        require_finite(self, "before the export", collective=False)
        return export_run(self.cfg, self.out, self.step, self.student, self.teacher.module, self.targets.refiner)
