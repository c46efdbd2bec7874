"""The Splat-and-Distill training loop (single process, or data-parallel under ``torchrun``).

One step, per sample: teacher tokens of the two context views -> splatted, blended teacher targets in
the target view(s) (:mod:`splatdistill.splat`) -> student tokens of the target view(s) ->
loss on covered tokens -> Adam step on the LoRA adapters and head -> EMA teacher update.

Reproducibility: the sample drawn at a step is a pure function of (seed, step, rank), and dropout's
RNG state is saved in every checkpoint, so a resumed run follows the uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from splatdistill.baselines.fit3d import Fit3DTargets
from splatdistill.data.views import Sample, collate_samples, fit_size
from splatdistill.distill.config import TrainConfig
from splatdistill.devices import autocast, default_workers, resolve_device, resolve_precision
from splatdistill.distill.distributed import (
    all_finite,
    any_rank,
    init_distributed,
    sample_indices,
)
from splatdistill.distill.heads import update_center as update_center_
from splatdistill.distill.memory_check import check_step_memory
from splatdistill.distill.parts import (
    SnDModel,
    StepTimes,
    TrainingDiverged,
    TrainingStalled,
    build_dataset,
    build_student,
    export_run,
    fill_uncovered,
    held_out_metrics,
    make_lifter,
    plain_targets,
    require_depth,
)
from splatdistill.distill.loader import StepBatches, step_loader
from splatdistill.distill.losses import (
    cross_view_consistency,
    dino_loss,
    feature_loss,
    token_agreement,
)
from splatdistill.distill.student import EMATeacher
from splatdistill.errors import UserError
from splatdistill.lifters.online import OnlineRefiner
from splatdistill.run_folder import open_training_folder
from splatdistill.runs import (
    CHECKPOINT,
    RunLog,
    TimeBudget,
    atomic_torch_save,
    load_trainable_state,
    one_cycle_cosine,
    rng_state,
    set_rng_state,
)
from splatdistill.safe_load import NUMPY_ARRAYS, load_torch_file
from splatdistill.splat import SplatSettings, splat_targets
from splatdistill.threads import configure_threads, default_threads

__all__ = ["SnDModel", "StepTimes", "Trainer", "TrainingDiverged", "TrainingStalled", "require_depth", "build_dataset", "cross_view_consistency",
           "make_lifter", "sample_indices"]


#: the end of the message refusing a fresh run over a checkpoint
FRESH_HINT = "pass --resume (resume=True) to continue it, or choose another out="

# ---- trainer ------------------------------------------------------------------------------------

class Trainer:
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
        self.device = resolve_device(cfg.run.device)
        self.dist = init_distributed(self.device)
        self.precision = resolve_precision(cfg.run.precision, self.device)  # autocast of backbones and heads
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.dist.world))
        self.num_workers = cfg.run.num_workers if cfg.run.num_workers >= 0 else default_workers(self.device, local_world)
        if self.device.type == "cpu":  # the cores this process may use, shared by the ranks on this machine
            self.threads = configure_threads(cfg.run.threads or max(1, default_threads() // max(1, local_world)))
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(cfg.run.seed)
        np.random.seed(cfg.run.seed)
        self.out = Path(cfg.run.out)
        self.dataset = dataset if dataset is not None else build_dataset(cfg)
        if len(self.dataset) == 0:
            raise UserError(f"{cfg.data.root}: no training samples (need scenes with >= 3 views in split "
                            f"{cfg.data.split!r})")
        student, self._fixed_teacher = build_student(cfg)
        self.student = student.to(self.device)
        check_step_memory(cfg, self.student, self.dataset, self.device)  # before any big buffer
        m = cfg.method
        if self._fixed_teacher is not None:  # student of another architecture: the original teacher, fixed
            self.teacher = EMATeacher(self.student, momentum=1.0, every=m.ema_every,
                                      source=self._fixed_teacher).to(self.device)
        else:
            self.teacher = EMATeacher(self.student, momentum=m.ema_momentum_for(cfg.optim.steps),
                                      every=m.ema_every).to(self.device)
        # DINO centering: running mean of the teacher's logits (all zeros and unused when center_momentum=0)
        self.center = torch.zeros(m.prototypes if m.loss == "dino" else 0, device=self.device)
        self.student_ddp: nn.Module = self.student
        if self.dist.joined:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.student_ddp = DistributedDataParallel(self.student, device_ids=ids)
        self.optimizer, self.scheduler = self._build_optimizer()
        self.splat: SplatSettings = m.splat
        self.lifter = make_lifter(cfg, self.splat)
        if m.method == "snd" and m.lifter.strip() == "depth":
            require_depth(self.dataset.scenes, cfg.data.root)
        self.refiner = OnlineRefiner(self.lifter, m.lifter_refine_every, m.lifter_refine_lr) \
            if m.lifter_refine_every > 0 else None
        self.refine_metrics: dict[str, float] = {}
        if self.refiner is not None and self.dist.world > 1:
            raise UserError("lifter_refine_every > 0 is single-process for now (each rank would refine its own "
                            "copy of the lifter); train without torchrun or set lifter_refine_every=0")
        self.fit3d = None  # method=fit3d: fixed per-scene feature fields replace the splatted teacher
        if m.method == "fit3d":
            self.fit3d = Fit3DTargets(cfg, self.dataset.scenes, self.device, cfg.run.progress, self.dist.is_main)
        self.step = 0
        self.saved_step: int | None = None  # the step of the checkpoint on disk (None: none written yet)
        self.elapsed_before = 0.0  # training seconds of earlier sessions of this run (schedule=budget)
        self.budget: TimeBudget | None = None  # this session's clock (set by fit)
        self._low_steps = 0  # consecutive steps with (almost) no supervised token
        self._session_steps = 0  # steps run by this process (a resumed run counts from its resume)
        self._val_dataset = None
        if resume:
            self.load_checkpoint()

    def _build_optimizer(self):
        o = self.cfg.optim
        lora = [p for n, p in self.student.backbone.named_parameters() if p.requires_grad]
        groups = [{"params": lora, "lr": o.lr}]
        if self.student.head is not None:
            groups.append({"params": [p for p in self.student.head.parameters() if p.requires_grad],
                           "lr": o.lr if o.head_lr is None else o.head_lr})
        optimizer = torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
        per_step = one_cycle_cosine(o.steps, o.warmup_pct)
        if o.schedule == "steps":
            return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, per_step)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: per_step(self._schedule_step(step)))

    def _schedule_step(self, step: int) -> int:
        """schedule=budget: the step whose share of ``steps`` equals the larger of the steps done and the
        time used (a machine slower than planned moves through warm-up and decay by the clock)."""
        o, budget = self.cfg.optim, getattr(self, "budget", None)  # None while the scheduler is being built
        if budget is None or o.max_minutes <= 0:
            return step
        used = budget.elapsed / (o.max_minutes * 60)
        return max(step, min(o.steps, int(used * o.steps)))

    def _elapsed(self) -> float:
        return self.budget.elapsed if self.budget is not None else self.elapsed_before

    # -- finite weights -----------------------------------------------------------------------------
    def _last_good(self) -> str:
        if self.saved_step is not None and self.checkpoint_path.is_file():
            return f"the last good checkpoint ({self.checkpoint_path}, step {self.saved_step}) is untouched"
        return "no checkpoint had been written yet"

    def weights_finite(self, collective: bool = True) -> bool:
        """Every trained parameter of student and teacher is finite (``collective``: on every rank; a call
        that only the main rank makes must pass False)."""
        names = set(self._trained_names())
        tensors = [p for n, p in self.student.named_parameters() if n in names]
        tensors += [p for n, p in self.teacher.module.named_parameters() if n in names]
        if not tensors:
            return True
        total = float(torch.stack([t.detach().float().sum() for t in tensors]).sum())  # NaN/inf if any entry is
        return all_finite(total, self.dist) if collective else math.isfinite(total)

    def _require_finite_weights(self, when: str, collective: bool = True) -> None:
        if not self.weights_finite(collective):
            raise TrainingDiverged(f"the weights became non-finite ({when}, step {self.step}) though the loss was "
                                   f"finite; nothing was saved and {self._last_good()}. Lower lr (or set grad_clip) "
                                   "and resume or restart")

    # -- checkpoints --------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def _trained_names(self) -> list[str]:
        return [n for n, p in self.student.named_parameters() if p.requires_grad]

    def state(self) -> dict[str, Any]:
        names = set(self._trained_names())
        s_params = {n: p.detach().cpu().clone() for n, p in self.student.named_parameters() if n in names}
        t_params = {n: p.detach().cpu().clone() for n, p in self.teacher.module.named_parameters() if n in names}
        return {
            "step": self.step,
            "config": self.cfg.to_dict(),
            "student": s_params,
            "teacher": t_params,
            "teacher_steps": int(self.teacher.steps),
            "center": self.center.detach().cpu().clone(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            **({"grad_scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}),
            "elapsed": self._elapsed(),
            **({"lifter_refiner": self.refiner.state_dict()} if self.refiner is not None else {}),
        }

    def save_checkpoint(self) -> None:
        self._require_finite_weights("before writing the checkpoint")
        if self.dist.is_main:
            atomic_torch_save(self.state(), self.checkpoint_path)
        self.saved_step = self.step

    def load_checkpoint(self) -> None:
        path = self.checkpoint_path
        if not path.is_file():
            raise UserError("no checkpoint to resume from (expected checkpoint.pt in the run folder)", path)
        state = load_torch_file(path, "training checkpoint", allow=NUMPY_ARRAYS, require=("config", "student", "rng"))
        saved = TrainConfig.from_dict(state.get("config", {}), source=str(path)).to_dict()
        mine = self.cfg.to_dict()
        for group, key in (("model", "backbone"), ("model", "student"), ("method", "targets"), ("method", "loss"), ("method", "prototypes"), ("method", "head_hidden"),
                           ("method", "head_bottleneck")):
            if saved[group][key] != mine[group][key]:
                raise UserError(f"cannot resume: the checkpoint was trained with {key}={saved[group][key]!r}, "
                                f"this run has {key}={mine[group][key]!r}", path)
        if saved["model"]["lora"]["r"] != mine["model"]["lora"]["r"]:
            raise UserError(f"cannot resume: the checkpoint was trained with lora_r={saved['model']['lora']['r']!r}, "
                            f"this run has lora_r={mine['model']['lora']['r']!r}", path)
        load_trainable_state(self.student, state["student"])
        load_trainable_state(self.teacher.module, state["teacher"])
        self.teacher.steps.fill_(state["teacher_steps"])
        if "center" in state and state["center"].shape == self.center.shape:
            self.center.copy_(state["center"].to(self.center.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        if self.scaler.is_enabled() and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        self.step = int(state["step"])
        self.saved_step = self.step
        self.elapsed_before = float(state.get("elapsed", 0.0))
        if self.refiner is not None and "lifter_refiner" in state:
            self.refiner.load_state_dict(state["lifter_refiner"])

    # -- one step -------------------------------------------------------------------------------------
    def teacher_targets(self, b: Sample, times: "StepTimes", refine_lifter: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Targets for a batch on the device: tokens (B*T, C, h, w), supervised mask (B*T, h*w), coverage (B, T, h, w).
        ``refine_lifter`` (training batches only, never held-out ones) lets the lifter refiner learn from the batch."""
        dev = self.device
        B, V = b.context.images.shape[:2]
        H, W = b.context.height, b.context.width
        R = fit_size(self.cfg.data.render_size, H, W)  # (h, w) of the 3D stage, the images' aspect kept
        if self.fit3d is not None:  # method=fit3d (splatdistill.baselines.fit3d): renders of the fitted fields
            with times.phase("splat", dev):
                return self.fit3d.targets(b, self.student.backbone.grid_size(H, W), self.cfg.data.render_size)
        if self.cfg.method.targets != "splat":  # the teacher's own features of the target view (parts.plain_targets)
            with times.phase("teacher_forward", dev), torch.no_grad(), autocast(dev, self.precision):
                plain = plain_targets(self.teacher.module.backbone, b.target.images)
            plain = (plain[0].float(), *plain[1:])
            if self.cfg.method.targets == "2d":  # the 2D baseline
                return plain
        with times.phase("teacher_forward", dev), torch.no_grad(), autocast(dev, self.precision):
            ctx_tokens = self.teacher.module.backbone.patch_features(b.context.images.flatten(0, 1))
        ctx_tokens = ctx_tokens.float().unflatten(0, (B, V))  # lifting and splatting run in fp32
        grid = tuple(ctx_tokens.shape[-2:])
        with times.phase("splat", dev):
            context = dataclasses.replace(b.context.at(R), tokens=ctx_tokens)
            out = splat_targets(context, b.target.at(R), grid, self.splat, self.lifter)
        if refine_lifter and self.refiner is not None:  # iterative refinement: the lifter learns from these views
            with times.phase("lifter_refine", dev):
                self.refine_metrics = self.refiner.maybe_step(self.step, context)
        tgt_tokens = out.tokens.flatten(0, 1)  # (B*T, C, h, w)
        mask = out.valid.flatten(0, 1).flatten(1)  # (B*T, h*w)
        if self.cfg.method.targets == "splat+2d":  # uncovered tokens take the 2D targets
            return fill_uncovered(tgt_tokens, mask, plain[0]), torch.ones_like(mask), out.coverage
        return tgt_tokens, mask, out.coverage

    def _loss(self, model: nn.Module, b: Sample, tgt_tokens, mask, with_consistency: bool,
              times: "StepTimes | None" = None, training: bool = False):
        """(total loss, consistency term, student tokens) of the student ``model`` on the batch's targets.
        ``training`` (training batches only) also updates the DINO centre."""
        dev = self.device
        times = times or StepTimes()
        with times.phase("student_forward", dev), autocast(dev, self.precision):
            s_tokens, s_logits = model(b.target.images.flatten(0, 1))
        s_tokens, s_logits = s_tokens.float(), None if s_logits is None else s_logits.float()  # the loss in fp32
        with times.phase("head_loss", dev):
            return self._head_loss(b, s_tokens, s_logits, tgt_tokens, mask, with_consistency, update_center=training)

    def _head_loss(self, b: Sample, s_tokens, s_logits, tgt_tokens, mask, with_consistency: bool,
                   update_center: bool = False):
        m = self.cfg.method
        if m.loss == "dino":
            with torch.no_grad(), autocast(self.device, self.precision):
                t_logits = self.teacher.module.head(tgt_tokens.flatten(2).transpose(1, 2))
            t_logits = t_logits.float()
            center = self.center if m.center_momentum > 0 else None
            loss = dino_loss(s_logits, t_logits, mask, m.student_temp, m.teacher_temp, center)
            if center is not None and update_center:  # after the loss, as DINO (the centre lags one step)
                update_center_(self.center, t_logits, mask, m.center_momentum)
                if self.dist.joined:  # one centre for all ranks (the update is linear in the batch mean)
                    dist.all_reduce(self.center)
                    self.center /= self.dist.world
        else:
            loss = feature_loss(m.loss, s_tokens.flatten(2).transpose(1, 2), tgt_tokens.flatten(2).transpose(1, 2), mask)
        cons = torch.zeros((), device=self.device)
        if with_consistency and m.consistency_weight > 0:
            B, T = b.target.images.shape[:2]
            cons = cross_view_consistency(s_tokens.unflatten(0, (B, T)), b.target)
            loss = loss + m.consistency_weight * cons
        return loss, cons, s_tokens

    def train_step(self, batch: Sample, times: "StepTimes | None" = None) -> dict[str, float]:
        cfg, dev = self.cfg, self.device
        times = times or StepTimes()
        b = batch.to(dev)
        self.student_ddp.train()
        tgt_tokens, mask, cov = self.teacher_targets(b, times, refine_lifter=True)
        loss, cons, s_tokens = self._loss(self.student_ddp, b, tgt_tokens, mask, with_consistency=True, times=times,
                                          training=True)
        loss_value = float(loss.detach())
        if not all_finite(loss_value, self.dist):
            raise TrainingDiverged(
                f"loss became {loss_value} at step {self.step + 1}; the run stopped and {self._last_good()}. "
                "Lower lr or check the data")
        with times.phase("student_backward", dev):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()  # fp16: scaled against underflow (a no-op otherwise)
            if cfg.optim.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_([p for p in self.student.parameters() if p.requires_grad],
                                               cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
        with times.phase("ema", dev):
            self.teacher.step(self.student)
        self.step += 1
        self._require_finite_weights("after the update")
        with torch.no_grad():
            agreement = token_agreement(s_tokens.detach(), tgt_tokens, mask)
        return {"loss": loss_value, "consistency": float(cons), "coverage": float(cov.mean()),
                "supervised_tokens": float(mask.float().mean()), "agreement": agreement,
                "lr": float(self.scheduler.get_last_lr()[0]), **self.refine_metrics}

    # -- held-out agreement ---------------------------------------------------------------------------
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

    def _check_supervision(self, metrics: dict[str, float]) -> None:
        """Stop a run whose targets supervise (almost) nothing instead of training nothing in silence."""
        r = self.cfg.run
        self._low_steps = self._low_steps + 1 if metrics["supervised_tokens"] < r.stall_share else 0
        self._session_steps += 1  # a run shorter than stall_steps that never supervised anything stalled too
        whole_run = self.step >= self.cfg.optim.steps and self._low_steps == self._session_steps
        if r.stall_steps > 0 and (self._low_steps >= r.stall_steps or whole_run):
            kept = (f"the last checkpoint ({self.checkpoint_path}) is kept" if self.checkpoint_path.is_file()
                    else "no checkpoint was written")
            raise TrainingStalled(
                f"under {r.stall_share:.0%} of the target tokens were supervised for {self._low_steps} steps in a "
                f"row{', every step of the run' if whole_run else ''} (last {metrics['supervised_tokens']:.1%}): the splatted targets cover almost nothing. Likely "
                "causes: no depth for the lifter, wrong poses or camera conventions, or context and target views "
                f"that do not overlap; {kept}")

    def _stop_now(self, start: float, stop_requested: dict[str, bool]) -> bool:
        """Out of the time budget or asked to stop (SIGTERM), agreed by every rank. schedule=steps counts this
        session's time; schedule=budget the whole run's (its learning rate follows that clock)."""
        o = self.cfg.optim
        used = self._elapsed() if o.schedule == "budget" else time.perf_counter() - start
        return any_rank((o.max_minutes > 0 and used / 60 >= o.max_minutes) or stop_requested["flag"], self.dist)

    def fit(self, on_step=None) -> dict[str, Any]:
        try:
            return self._fit(on_step)
        finally:
            self.close()

    def _fit(self, on_step) -> dict[str, Any]:
        cfg, main = self.cfg, self.dist.is_main
        log = RunLog(self.out, self.step, enabled=main)
        if main:
            cfg.save(self.out / "config.yaml")
        bar = tqdm(total=cfg.optim.steps, initial=self.step, desc="splat-and-distill", unit="step", dynamic_ncols=True,
                   disable=not (main and cfg.run.progress))
        held_out: list[dict[str, float]] = []

        def _held_out() -> None:
            r = self.held_out() if main else None
            if r is not None:
                r["step"] = self.step
                held_out.append(r)
                log.scalars("val", {"loss": r["loss"], "agreement": r["agreement"]}, self.step)

        _held_out()
        start = time.perf_counter()
        self.budget = TimeBudget(cfg.optim.max_minutes, self.elapsed_before, clock=lambda: time.perf_counter())
        history: list[dict[str, float]] = []
        stopped_early = False
        stop_requested = {"flag": False}

        def _on_term(signum, frame):  # SIGTERM: finish the step, checkpoint, exit cleanly
            stop_requested["flag"] = True

        old = signal.signal(signal.SIGTERM, _on_term) if main else None
        batches = self.batches(self.step, cfg.optim.steps)
        try:
            while self.step < cfg.optim.steps:
                t0 = time.perf_counter()
                metrics = self.train_step(next(batches))
                metrics["step_time"] = time.perf_counter() - t0
                metrics["step"] = self.step
                history.append(metrics)
                keys = ["loss", "coverage", "lr", "step_time", "agreement", "supervised_tokens"]
                log.scalars("train", {k: metrics[k] for k in keys + (["consistency"] if cfg.method.consistency_weight > 0
                                                                     else [])}, self.step)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", s_per_step=f"{metrics['step_time']:.2f}")
                if on_step is not None:
                    on_step(self, metrics)
                self._check_supervision(metrics)
                stop = self._stop_now(start, stop_requested)
                if self.step % cfg.run.checkpoint_every == 0 or self.step == cfg.optim.steps or stop:
                    self.save_checkpoint()
                if stop:
                    stopped_early = True
                    break
                if cfg.data.val_every > 0 and self.step % cfg.data.val_every == 0 and self.step < cfg.optim.steps:
                    _held_out()
        finally:
            bar.close()
            if old is not None:
                signal.signal(signal.SIGTERM, old)
            log.flush()
        seconds = time.perf_counter() - start
        _held_out()
        stopped_by = "signal" if stop_requested["flag"] else "time" if stopped_early else None
        result = {"steps": self.step, "stopped_early": stopped_early, "stopped_by": stopped_by, "history": history,
                  "seconds": seconds, "held_out": held_out}
        if main:
            result.update(self.export())
        return result

    def export(self) -> dict[str, str]:
        """Merged student and teacher as timm safetensors, plus the heads (for continuing SnD)."""
        self._require_finite_weights("before the export", collective=False)
        return export_run(self.cfg, self.out, self.step, self.student, self.teacher.module, self.refiner)
