"""The parts of a Splat-and-Distill run that are not the loop: the model, the dataset and lifter of a config,
the stop conditions (diverged, stalled) and the per-phase step timer. :mod:`.trainer` runs them."""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from splatdistill.atomic import atomic_torch_save
from splatdistill.backbones import load_backbone
from splatdistill.backbones.projected import ProjectedBackbone, save_projected
from splatdistill.backbones.vit import ViTBackbone
from splatdistill.data import load_dataset
from splatdistill.data.sampler import MultiViewDataset, SamplerConfig
from splatdistill.data.views import collate_samples
from splatdistill.devices import default_workers, resolve_device, resolve_precision
from splatdistill.distill.config import TrainConfig
from splatdistill.distill.distributed import DistInfo, any_rank, init_distributed
from splatdistill.distill.heads import DINOHead
from splatdistill.distill.losses import loss_for, token_agreement
from splatdistill.distill.student import EMATeacher, add_lora, export_timm_safetensors
from splatdistill.errors import UserError
from splatdistill.lifters import build_lifter
from splatdistill.lifters.predictor import save_predictor
from splatdistill.runs import Run, RunLog, StallCheck, one_cycle_cosine
from splatdistill.splat import SplatSettings
from splatdistill.threads import configure_threads, default_threads


class TrainingDiverged(UserError):
    exit_code = 3


class TrainingStalled(UserError):
    """The targets supervise (almost) no token, step after step."""

    exit_code = 3


def require_depth(scenes, data: str) -> None:
    """``lifter=depth`` needs depth maps: stop before training when a scene has none (its first view)."""
    for scene in scenes:
        if scene.load_view(0).depth is None:
            raise UserError(
                f"{data}: lifter=depth lifts with depth maps, and scene {scene.name} has none; use the "
                "feed-forward lifter (lifter=auto, the default, or lifter=predictor:PATH from "
                "'splatdistill lifter train'), or data with depth"
            )


class SnDModel(nn.Module):
    """Backbone + optional projection head; ``forward`` returns (tokens (N,C,h,w), logits (N,h*w,K) | None)."""

    def __init__(self, backbone: ViTBackbone, head: DINOHead | None):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens = self.backbone.patch_features(images)
        logits = self.head(tokens.flatten(2).transpose(1, 2)) if self.head is not None else None
        return tokens, logits  # type: ignore[return-value]


def build_student(cfg: TrainConfig) -> tuple[SnDModel, SnDModel | None]:
    """(student, fixed teacher). By default the student is the teacher's backbone with LoRA adapters and the
    teacher will be its EMA (None here). With ``student=SPEC`` it is that network with a projection to the
    teacher's features (:mod:`splatdistill.backbones.projected`), and the teacher is the original backbone."""
    m = cfg.method
    backbone = load_backbone(cfg.model.backbone, device="cpu")
    teacher_backbone = None
    if cfg.model.student:
        teacher_backbone = backbone
        for p in teacher_backbone.parameters():
            p.requires_grad_(False)
        inner = load_backbone(cfg.model.student, device="cpu")
        backbone = ProjectedBackbone(
            inner,
            cfg.model.student,
            teacher_backbone.embed_dim,
            teacher_backbone.patch_size,
            teacher_backbone.resize_mode,
        )
        for p in backbone.parameters():
            p.requires_grad_(True)
    else:
        if not isinstance(backbone, ViTBackbone):
            raise UserError(
                f"backbone {cfg.model.backbone!r} is not a ViT; the LoRA student needs attention "
                "layers (or give the student its own architecture: student=SPEC)"
            )
        add_lora(backbone, cfg.model.lora)
    head = loss_for(m).head(m, backbone.embed_dim, cfg.run.seed)  # the loss owns its head (None: no head)
    # the fixed teacher shares the initial head object; EMATeacher deep-copies it
    return SnDModel(backbone, head), (SnDModel(teacher_backbone, head) if teacher_backbone is not None else None)


def plain_targets(
    teacher_backbone: nn.Module, target_images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's own tokens of the (B, T) target views, every token supervised: tokens (B*T, C, h, w),
    mask (B*T, h*w), coverage (B, T, h, w) of ones (the 2D baseline's targets)."""
    B, T = target_images.shape[:2]
    tokens = teacher_backbone.patch_features(target_images.flatten(0, 1))
    h, w = tokens.shape[-2:]
    mask = torch.ones(tokens.shape[0], h * w, dtype=torch.bool, device=tokens.device)
    return tokens, mask, torch.ones(B, T, h, w, device=tokens.device)


def fill_uncovered(splat_tokens: torch.Tensor, mask: torch.Tensor, plain_tokens: torch.Tensor) -> torch.Tensor:
    """Splatted tokens (B*T, C, h, w) where ``mask`` (B*T, h*w) says they are supervised, ``plain_tokens`` elsewhere."""
    keep = mask.view(mask.shape[0], 1, *splat_tokens.shape[-2:])
    return torch.where(keep, splat_tokens, plain_tokens)


@dataclass
class StepTimes:
    """Seconds spent per phase in one step (for ``bench step`` and the logs)."""

    values: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextlib.contextmanager
    def phase(self, name: str, device: torch.device):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        yield
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.values[name] += time.perf_counter() - t


@dataclass
class Process:
    """Where this process trains: device, process group, autocast precision, data-loader workers."""

    device: torch.device
    dist: DistInfo
    precision: str
    num_workers: int


def start_process(cfg: TrainConfig) -> Process:
    """Device, process group (under torchrun), precision, CPU threads and workers of this rank; seeds the RNGs."""
    device = resolve_device(cfg.run.device)
    info = init_distributed(device)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", info.world))
    workers = cfg.run.num_workers if cfg.run.num_workers >= 0 else default_workers(device, local_world)
    if device.type == "cpu":  # the cores this process may use, shared by the ranks on this machine
        configure_threads(cfg.run.threads or max(1, default_threads() // max(1, local_world)))
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.run.seed)
    np.random.seed(cfg.run.seed)
    return Process(device, info, resolve_precision(cfg.run.precision, device), workers)


def build_teacher(cfg: TrainConfig, student: SnDModel, fixed_teacher: SnDModel | None) -> EMATeacher:
    """The EMA teacher of ``student``; a student of another architecture learns from the original teacher, fixed."""
    m = cfg.method
    momentum = 1.0 if fixed_teacher is not None else m.ema_momentum_for(cfg.optim.steps)
    return EMATeacher(student, momentum, every=m.ema_every, source=fixed_teacher)


def data_parallel(student: nn.Module, dist: DistInfo, device: torch.device) -> nn.Module:
    """The student as the step runs it: wrapped in DDP under torchrun, itself otherwise."""
    if not dist.joined:
        return student
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(student, device_ids=ids)


def optimizer_update(optimizer, scaler, scheduler, student: nn.Module, loss: torch.Tensor, grad_clip: float) -> None:
    """Backward pass and one optimiser and schedule step; fp16 scales the loss against underflow (the scaler is a
    no-op otherwise) and unscales before clipping the trained parameters' gradient norm to ``grad_clip`` (0: off)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in student.parameters() if p.requires_grad], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


def build_optimizer(cfg: TrainConfig, student: SnDModel, schedule_step: Callable[[int], int]):
    """Adam on the LoRA adapters (or the whole student) and the head (``head_lr``), with the warm-up + cosine
    schedule over ``steps``; schedule=budget maps each step through ``schedule_step`` (the clock's share)."""
    o = cfg.optim
    lora = [p for n, p in student.backbone.named_parameters() if p.requires_grad]
    groups = [{"params": lora, "lr": o.lr}]
    if student.head is not None:
        groups.append(
            {
                "params": [p for p in student.head.parameters() if p.requires_grad],
                "lr": o.lr if o.head_lr is None else o.head_lr,
            }
        )
    optimizer = torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
    per_step = one_cycle_cosine(o.steps, o.warmup_pct)
    if o.schedule == "steps":
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, per_step)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: per_step(schedule_step(step)))


def make_lifter(cfg: TrainConfig, settings: SplatSettings):
    """The lifter named by ``cfg.method.lifter``: depth | predictor:PATH | ply:PATH | python:MODULE:FACTORY
    (see :mod:`splatdistill.lifters`)."""
    return build_lifter(cfg.method.lifter, settings, data=cfg.data.root)


def build_dataset(cfg: TrainConfig, split: str | None = None) -> MultiViewDataset:
    """A split (default ``cfg.data.split``) of ``cfg.data.root`` as a :class:`MultiViewDataset` at ``image_size``."""
    d = cfg.data
    split = split or d.split
    scenes = load_dataset(d.root, split=split)
    sampler = SamplerConfig(num_targets=d.num_targets, gap=d.context_gap or None, mode=d.sampler)
    return MultiViewDataset(scenes, sampler, seed=cfg.run.seed, size=d.image_size, mask_mode=d.mask)


def require_samples(dataset: MultiViewDataset, cfg: TrainConfig) -> MultiViewDataset:
    """``dataset``, refused when it holds no training sample (a run over nothing would only fail later)."""
    if len(dataset) == 0:
        raise UserError(
            f"{cfg.data.root}: no training samples (need scenes with >= 3 views in split {cfg.data.split!r})"
        )
    return dataset


#: the step metrics written to TensorBoard ("consistency" too when the term is on)
TB_KEYS = ("loss", "coverage", "lr", "step_time", "agreement", "supervised_tokens")


def stall_check(cfg: TrainConfig, checkpoint: Path) -> StallCheck:
    """The stall check's failure: the message names the likely causes and what was kept."""

    def fail(steps: int, whole_run: bool, last: float) -> None:
        kept = f"the last checkpoint ({checkpoint}) is kept" if checkpoint.is_file() else "no checkpoint was written"
        raise TrainingStalled(
            f"under {cfg.run.stall_share:.0%} of the target tokens were supervised for {steps} steps in a "
            f"row{', every step of the run' if whole_run else ''} (last {last:.1%}): the splatted targets cover "
            "almost nothing. Likely causes: no depth for the lifter, wrong poses or camera conventions, or context "
            f"and target views that do not overlap; {kept}"
        )

    return StallCheck("supervised_tokens", cfg.run.stall_share, cfg.run.stall_steps, fail)


def training_run(tr, step: Callable[[], dict[str, float]], tb: RunLog, evaluate: Callable[[], None], on_step) -> Run:
    """The :class:`~splatdistill.runs.Run` of trainer ``tr`` from its current step: checkpoints, time budget,
    stall check, logs; ``step`` runs one training step and returns its metrics."""
    cfg, main = tr.cfg, tr.dist.is_main
    keys = TB_KEYS + ("consistency",) * (cfg.method.consistency_weight > 0)
    return Run(
        name="splat-and-distill",
        total=cfg.optim.steps,
        step=tr.step,
        train_step=step,
        budget=tr.budget,
        session_budget=cfg.optim.schedule == "steps",
        checkpoint_every=cfg.run.checkpoint_every,
        save=lambda final: tr.saved_step != tr.step and tr.save_checkpoint(),
        main=main,
        progress=cfg.run.progress,
        agree=lambda flag: any_rank(flag, tr.dist),
        log_jsonl=tr.out / "log.jsonl",
        tensorboard=tb,
        tb_scalars=lambda m: {k: m[k] for k in keys},
        stall=stall_check(cfg, tr.checkpoint_path),
        postfix=lambda m: {"loss": f"{m['loss']:.4f}", "s_per_step": f"{m['step_time']:.2f}"},
        on_step=on_step and (lambda m: on_step(tr, m)),
        evaluate=evaluate,
        evaluate_every=cfg.data.val_every,
    )


def held_out_metrics(self) -> dict[str, float] | None:
    """A :class:`~.trainer.Trainer`'s loss and teacher-student agreement on fixed samples of the held-out
    split (student in eval mode).

    The same splatted targets as in training, on scenes the student never trains on; ``None`` when the
    data has no such split (or when the target source has nothing for them: method=fit3d's fields exist only
    for training scenes).
    """
    d = self.cfg.data
    if d.val_samples <= 0 or not self.targets.held_out:
        return None
    if self._val_dataset is None:
        try:
            self._val_dataset = build_dataset(self.cfg, split=d.val_split)
        except UserError:
            self._val_dataset = False
    if not self._val_dataset or len(self._val_dataset) == 0:
        return None
    ds = self._val_dataset
    was_training = self.student.training
    self.student.eval()
    losses, agreements = [], []
    try:
        for i in range(min(d.val_samples, len(ds))):
            ds.set_epoch(0)
            b = collate_samples([ds[i]]).to(self.device)
            tgt_tokens, mask, _ = self.teacher_targets(b, StepTimes())
            loss, _, s_tokens = self.student_loss(self.student, b, tgt_tokens, mask)
            losses.append(float(loss))
            agreements.append(token_agreement(s_tokens, tgt_tokens, mask))
    finally:
        self.student.train(was_training)
    return {"loss": float(np.mean(losses)), "agreement": float(np.mean(agreements)), "samples": len(losses)}


def export_run(
    cfg: TrainConfig, out: Path, step: int, student: SnDModel, teacher: SnDModel, refiner=None
) -> dict[str, str]:
    """Merged student and teacher as timm safetensors, the heads (for continuing SnD) and a refined lifter."""
    method = "fit3d" if cfg.method.method == "fit3d" else "splat-and-distill"
    meta = {"steps": step, "method": method, "loss": cfg.method.loss}
    if isinstance(student.backbone, ProjectedBackbone):  # its own architecture + the projection
        path = save_projected(
            student.backbone,
            out / "student.safetensors",
            {**meta, "teacher": cfg.model.backbone, "targets": cfg.method.targets},
        )
    else:
        path = export_timm_safetensors(student.backbone, out / "student.safetensors", meta)
    teacher_path = export_timm_safetensors(teacher.backbone, out / "teacher.safetensors", meta)
    if student.head is not None:
        atomic_torch_save(
            {"student": student.head.state_dict(), "teacher": teacher.head.state_dict()}, out / "heads.pt"
        )
    if refiner is not None:  # the refined lifter, usable as lifter=predictor:<out>/lifter
        save_predictor(refiner.model, out / "lifter", {"refined_steps": refiner.steps, "from": cfg.method.lifter})
    return {"student": str(path), "teacher": str(teacher_path)}
