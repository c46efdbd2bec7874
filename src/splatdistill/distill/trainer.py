"""The Splat-and-Distill training loop (single process, or data-parallel under ``torchrun``).

One step, per sample: teacher tokens of the two context views -> splatted, blended teacher targets in
the target view(s) (:mod:`splatdistill.distill.targets`) -> student tokens of the target view(s) ->
loss on covered tokens -> Adam step on the LoRA adapters and head -> EMA teacher update.

Reproducibility: the sample drawn at a step is a pure function of (seed, step, rank), and dropout's
RNG state is saved in every checkpoint, so a resumed run follows the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from splatdistill.backbones import load_backbone
from splatdistill.backbones.vit import ViTBackbone
from splatdistill.distill.config import TrainConfig
from splatdistill.distill.heads import DINOHead, dino_loss, feature_loss
from splatdistill.distill.runs import (CHECKPOINT, atomic_torch_save, load_trainable_state, rng_state,
                                       set_rng_state)
from splatdistill.distill.student import EMATeacher, LoraSettings, add_lora, export_timm_safetensors
from splatdistill.distill.targets import SplatSettings, depth_lifter, splat_targets
from splatdistill.errors import UserError
from splatdistill.geometry.cameras import Cameras


class TrainingDiverged(UserError):
    exit_code = 3


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


# ---- distributed helpers ------------------------------------------------------------------------

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


# ---- the sample stream --------------------------------------------------------------------------

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


# ---- trainer ------------------------------------------------------------------------------------

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


class Trainer:
    def __init__(self, cfg: TrainConfig, dataset=None, resume: bool = False):
        self.cfg = cfg.validate()
        self.device = resolve_device(cfg.device)
        self.dist = init_distributed(self.device)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.out = Path(cfg.out)
        self.dataset = dataset if dataset is not None else build_dataset(cfg)
        if len(self.dataset) == 0:
            raise UserError(f"{cfg.data}: no training samples (need scenes with >= 3 views in split {cfg.split!r})")

        backbone = load_backbone(cfg.backbone, device="cpu")
        if not isinstance(backbone, ViTBackbone):
            raise UserError(f"backbone {cfg.backbone!r} is not a ViT; the LoRA student needs attention layers")
        add_lora(backbone, LoraSettings(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout))
        head = None
        if cfg.loss == "dino":
            g = torch.Generator().manual_seed(cfg.seed)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
                head = DINOHead(backbone.embed_dim, cfg.prototypes, cfg.head_hidden, cfg.head_bottleneck)
        self.student = SnDModel(backbone, head).to(self.device)
        self.teacher = EMATeacher(self.student, momentum=cfg.ema_momentum, every=cfg.ema_every).to(self.device)
        self.student_ddp: nn.Module = self.student
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.student_ddp = DDP(self.student, device_ids=ids)

        lora = [p for n, p in self.student.backbone.named_parameters() if p.requires_grad]
        groups = [{"params": lora, "lr": cfg.lr}]
        if head is not None:
            groups.append({"params": [p for p in head.parameters() if p.requires_grad], "lr": cfg.head_lr or cfg.lr})
        self.optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, one_cycle_cosine(cfg.steps, cfg.warmup_pct))
        self.splat = SplatSettings(blend_alpha=cfg.blend_alpha, gaussian_scale=cfg.gaussian_scale,
                                   gaussian_opacity=cfg.gaussian_opacity, renderer=cfg.renderer,
                                   min_coverage=cfg.min_coverage)
        self.lifter = make_lifter(cfg, self.splat)
        self.fit3d = None  # method=fit3d: fixed per-scene feature fields replace the splatted teacher
        if cfg.method == "fit3d":
            from splatdistill.baselines.fit3d import Fit3DTargets

            self.fit3d = Fit3DTargets(cfg, self.dataset.scenes, self.device, cfg.progress, self.dist.is_main)
        self.step = 0
        self.writer = None
        self._val_dataset = None
        if resume:
            self.load_checkpoint()

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
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
        }

    def save_checkpoint(self) -> None:
        if self.dist.is_main:
            atomic_torch_save(self.state(), self.checkpoint_path)

    def load_checkpoint(self) -> None:
        path = self.checkpoint_path
        if not path.is_file():
            raise UserError("no checkpoint to resume from (expected checkpoint.pt in the run folder)", path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise UserError(f"unreadable checkpoint ({type(exc).__name__})", path) from None
        saved = state.get("config", {})
        for key in ("backbone", "loss", "prototypes", "lora_r", "head_hidden", "head_bottleneck"):
            if key in saved and saved[key] != getattr(self.cfg, key):
                raise UserError(f"cannot resume: the checkpoint was trained with {key}={saved[key]!r}, "
                                f"this run has {key}={getattr(self.cfg, key)!r}", path)
        load_trainable_state(self.student, state["student"])
        load_trainable_state(self.teacher.module, state["teacher"])
        self.teacher.steps.fill_(state["teacher_steps"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])

    # -- one step -------------------------------------------------------------------------------------
    def _cameras(self, K: torch.Tensor, c2w: torch.Tensor, size: int, image_size: int) -> Cameras:
        scale = torch.tensor([size / image_size, size / image_size, 1.0], dtype=K.dtype, device=K.device)
        return Cameras.from_cam_to_world(K * scale[:, None], c2w, size, size)

    def teacher_targets(self, b: dict[str, torch.Tensor], times: StepTimes
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Targets for a batch on the device: tokens (B*T, C, h, w), supervised mask (B*T, h*w), coverage (B, T, h, w)."""
        cfg, dev = self.cfg, self.device
        ctx_img = b["context_images"]
        B, V = ctx_img.shape[:2]
        H = ctx_img.shape[-1]
        R = cfg.render_size
        if self.fit3d is not None:  # method=fit3d (splatdistill.baselines.fit3d): renders of the fitted fields
            with times.phase("splat", dev):
                tgt_tokens, mask, cov = self.fit3d.targets(b, self.student.backbone.grid_size(H, H), R)
        else:
            with times.phase("teacher_forward", dev), torch.no_grad():
                ctx_tokens = self.teacher.module.backbone.patch_features(ctx_img.flatten(0, 1))
                ctx_tokens = ctx_tokens.unflatten(0, (B, V))
            grid = tuple(ctx_tokens.shape[-2:])
            with times.phase("splat", dev):
                targets, valid, coverage = [], [], []
                for i in range(B):
                    depth = _resize_nearest(b["context_depths"][i], R)
                    out = splat_targets(
                        ctx_tokens[i], _resize_nearest(b["context_segments"][i], R),
                        self._cameras(b["context_K"][i], b["context_cam_to_world"][i], R, H),
                        _resize_nearest(b["target_segments"][i], R),
                        self._cameras(b["target_K"][i], b["target_cam_to_world"][i], R, H),
                        grid, self.splat, self.lifter, context_depth=depth,
                        context_images=F.interpolate(ctx_img[i], size=(R, R), mode="bilinear", antialias=True))
                    targets.append(out.tokens)
                    valid.append(out.valid)
                    coverage.append(out.coverage)
                tgt_tokens = torch.stack(targets).flatten(0, 1)  # (B*T, C, h, w)
                mask = torch.stack(valid).flatten(0, 1).flatten(1)  # (B*T, h*w)
                cov = torch.stack(coverage)
        return tgt_tokens, mask, cov

    def train_step(self, batch: dict[str, torch.Tensor], times: StepTimes | None = None) -> dict[str, float]:
        cfg, dev = self.cfg, self.device
        times = times or StepTimes()
        b = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        ctx_img, tgt_img = b["context_images"], b["target_images"]  # (B, 2, 3, H, W), (B, T, 3, H, W)
        B, T, H = ctx_img.shape[0], tgt_img.shape[1], ctx_img.shape[-1]
        self.student_ddp.train()
        tgt_tokens, mask, cov = self.teacher_targets(b, times)
        with times.phase("student_forward", dev):
            s_tokens, s_logits = self.student_ddp(tgt_img.flatten(0, 1))
        with times.phase("head_loss", dev):
            if cfg.loss == "dino":
                with torch.no_grad():
                    t_logits = self.teacher.module.head(tgt_tokens.flatten(2).transpose(1, 2))
                loss = dino_loss(s_logits, t_logits, mask, cfg.student_temp, cfg.teacher_temp)
            else:
                loss = feature_loss(cfg.loss, s_tokens.flatten(2).transpose(1, 2),
                                    tgt_tokens.flatten(2).transpose(1, 2), mask)
            cons = torch.zeros((), device=dev)
            if cfg.consistency_weight > 0:
                cons = cross_view_consistency(s_tokens.unflatten(0, (B, T)), b, H)
                loss = loss + cfg.consistency_weight * cons
        loss_value = float(loss.detach())
        if not _all_finite(loss_value, self.dist):
            raise TrainingDiverged(
                f"loss became {loss_value} at step {self.step + 1}; the run stopped and the last good checkpoint "
                f"({self.checkpoint_path}) is untouched. Lower lr or check the data")
        with times.phase("student_backward", dev):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for p in self.student.parameters() if p.requires_grad], cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
        with times.phase("ema", dev):
            self.teacher.step(self.student)
        self.step += 1
        with torch.no_grad():
            agreement = _token_agreement(s_tokens.detach(), tgt_tokens, mask)
        return {"loss": loss_value, "consistency": float(cons), "coverage": float(cov.mean()),
                "supervised_tokens": float(mask.float().mean()), "agreement": agreement,
                "lr": float(self.scheduler.get_last_lr()[0])}

    # -- held-out agreement ---------------------------------------------------------------------------
    @torch.no_grad()
    def held_out(self) -> dict[str, float] | None:
        """Loss and teacher-student agreement on fixed samples of the held-out split (student in eval mode).

        The same splatted targets as in training, on scenes the student never trains on; ``None`` when the
        data has no such split (or for method=fit3d, whose fields exist only for training scenes).
        """
        cfg = self.cfg
        if cfg.val_samples <= 0 or self.fit3d is not None:
            return None
        if self._val_dataset is None:
            try:
                self._val_dataset = build_dataset(cfg, split=cfg.val_split)
            except UserError:
                self._val_dataset = False
        if not self._val_dataset or len(self._val_dataset) == 0:
            return None
        from splatdistill.data.sampler import collate_views

        ds = self._val_dataset
        was_training = self.student.training
        self.student.eval()
        losses, agreements = [], []
        try:
            for i in range(min(cfg.val_samples, len(ds))):
                ds.set_epoch(0)
                b = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v)
                     for k, v in collate_views([ds[i]]).items()}
                tgt_tokens, mask, _ = self.teacher_targets(b, StepTimes())
                s_tokens, s_logits = self.student(b["target_images"].flatten(0, 1))
                if cfg.loss == "dino":
                    t_logits = self.teacher.module.head(tgt_tokens.flatten(2).transpose(1, 2))
                    loss = dino_loss(s_logits, t_logits, mask, cfg.student_temp, cfg.teacher_temp)
                else:
                    loss = feature_loss(cfg.loss, s_tokens.flatten(2).transpose(1, 2), tgt_tokens.flatten(2).transpose(1, 2), mask)
                losses.append(float(loss))
                agreements.append(_token_agreement(s_tokens, tgt_tokens, mask))
        finally:
            self.student.train(was_training)
        return {"loss": float(np.mean(losses)), "agreement": float(np.mean(agreements)), "samples": len(losses)}

    # -- the loop ---------------------------------------------------------------------------------------
    def batch_for_step(self, step: int) -> dict[str, torch.Tensor]:
        from splatdistill.data.sampler import collate_views

        samples = []
        for epoch, index in sample_indices(len(self.dataset), self.cfg.seed, step, self.cfg.batch_size,
                                           self.dist.rank, self.dist.world):
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            samples.append(self.dataset[index])
        return collate_views(samples)

    def fit(self, on_step=None) -> dict[str, Any]:
        cfg = self.cfg
        main = self.dist.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out / "config.yaml")
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step or None)
        bar = None
        if main and cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc="splat-and-distill", unit="step", dynamic_ncols=True)
        held_out: list[dict[str, float]] = []

        def _held_out() -> None:
            if not main:
                return
            r = self.held_out()
            if r is not None:
                r["step"] = self.step
                held_out.append(r)
                self.writer.add_scalar("val/loss", r["loss"], self.step)
                self.writer.add_scalar("val/agreement", r["agreement"], self.step)

        _held_out()
        start = time.perf_counter()
        history: list[dict[str, float]] = []
        stopped_early = False
        stop_requested = {"flag": False}

        def _on_term(signum, frame):  # SIGTERM: finish the step, checkpoint, exit cleanly
            stop_requested["flag"] = True

        old = signal.signal(signal.SIGTERM, _on_term) if main else None
        try:
            while self.step < cfg.steps:
                t0 = time.perf_counter()
                metrics = self.train_step(self.batch_for_step(self.step))
                metrics["step_time"] = time.perf_counter() - t0
                metrics["step"] = self.step
                history.append(metrics)
                if main:
                    for k in ("loss", "coverage", "lr", "step_time", "agreement", "supervised_tokens"):
                        self.writer.add_scalar(f"train/{k}", metrics[k], self.step)
                    if cfg.consistency_weight > 0:
                        self.writer.add_scalar("train/consistency", metrics["consistency"], self.step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", s_per_step=f"{metrics['step_time']:.2f}")
                if on_step is not None:
                    on_step(self, metrics)
                out_of_time = cfg.max_minutes > 0 and (time.perf_counter() - start) / 60 >= cfg.max_minutes
                if self.dist.world > 1:
                    flag = torch.tensor([float(out_of_time or stop_requested["flag"])])
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    out_of_time = bool(flag.item())
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps or out_of_time or stop_requested["flag"]:
                    self.save_checkpoint()
                if out_of_time or stop_requested["flag"]:
                    stopped_early = True
                    break
                if cfg.val_every > 0 and self.step % cfg.val_every == 0 and self.step < cfg.steps:
                    _held_out()
        finally:
            if bar is not None:
                bar.close()
            if old is not None:
                signal.signal(signal.SIGTERM, old)
            if self.writer is not None:
                self.writer.flush()
        seconds = time.perf_counter() - start
        _held_out()
        result = {"steps": self.step, "stopped_early": stopped_early, "history": history,
                  "seconds": seconds, "held_out": held_out}
        if main:
            result.update(self.export())
        return result

    def export(self) -> dict[str, str]:
        """Merged student and teacher as timm safetensors, plus the heads (for continuing SnD)."""
        method = "fit3d" if self.cfg.method == "fit3d" else "splat-and-distill"
        meta = {"steps": self.step, "method": method, "loss": self.cfg.loss}
        student = export_timm_safetensors(self.student.backbone, self.out / "student.safetensors", meta)
        teacher = export_timm_safetensors(self.teacher.module.backbone, self.out / "teacher.safetensors", meta)
        if self.student.head is not None:
            atomic_torch_save({"student": self.student.head.state_dict(), "teacher": self.teacher.module.head.state_dict()},
                              self.out / "heads.pt")
        return {"student": str(student), "teacher": str(teacher)}


# ---- helpers --------------------------------------------------------------------------------------

def one_cycle_cosine(total: int, warmup_pct: float, floor: float = 1e-3):
    """LR multiplier: linear warm-up over ``warmup_pct`` of the steps, then cosine decay to ``floor``
    (torch's OneCycleLR shape, but well defined for any number of steps)."""
    warmup = max(1, int(round(total * warmup_pct)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _all_finite(value: float, info: DistInfo) -> bool:
    ok = math.isfinite(value)
    if info.world > 1:
        t = torch.tensor([0.0 if ok else 1.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        ok = t.item() == 0.0
    return ok


def _resize_nearest(x: torch.Tensor, size: int) -> torch.Tensor:
    """(V, H, W) maps (depth, segment ids) to (V, size, size) without mixing values across edges."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    dtype = x.dtype
    out = F.interpolate(x[:, None].double(), size=(size, size), mode="nearest-exact")[:, 0]
    return out.to(dtype)


def _token_agreement(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> float:
    cos = F.cosine_similarity(student.flatten(2), teacher.flatten(2), dim=1)  # (N, h*w)
    m = mask.float()
    return float((cos * m).sum() / m.sum().clamp_min(1.0))


def cross_view_consistency(tokens: torch.Tensor, batch: dict[str, torch.Tensor], image_size: int) -> torch.Tensor:
    """1 - cosine between the student's tokens of target 0 and target t at the same 3D points.

    Token centres of target 0 are lifted with its depth, projected into each other target, and that
    target's tokens are sampled bilinearly there; points behind the camera or outside are ignored.
    """
    B, T, C, h, w = tokens.shape
    depth = batch["target_depths"]  # (B, T, H, W)
    K, c2w = batch["target_K"], batch["target_cam_to_world"]
    H = depth.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(h, device=tokens.device), torch.arange(w, device=tokens.device), indexing="ij")
    u = (xs + 0.5) * (H / w)
    v = (ys + 0.5) * (H / h)
    d = depth[:, 0][:, v.long().clamp(0, H - 1), u.long().clamp(0, H - 1)]  # (B, h, w)
    losses = []
    for t in range(1, T):
        Ki = torch.linalg.inv(K[:, 0])
        pix = torch.stack([u, v, torch.ones_like(u)], -1).to(depth.dtype)  # (h, w, 3)
        cam = torch.einsum("bij,hwj->bhwi", Ki, pix) * d[..., None]
        world = torch.einsum("bij,bhwj->bhwi", c2w[:, 0, :3, :3], cam) + c2w[:, 0, None, None, :3, 3]
        w2c = torch.linalg.inv(c2w[:, t])
        cam_t = torch.einsum("bij,bhwj->bhwi", w2c[:, :3, :3], world) + w2c[:, None, None, :3, 3]
        proj = torch.einsum("bij,bhwj->bhwi", K[:, t], cam_t)
        z = proj[..., 2]
        uv = proj[..., :2] / z.clamp_min(1e-6)[..., None]
        grid = uv / image_size * 2 - 1
        ok = (z > 1e-3) & (d > 0) & (grid.abs() <= 1).all(-1)
        sampled = F.grid_sample(tokens[:, t], grid.to(tokens.dtype), mode="bilinear", align_corners=False)
        cos = F.cosine_similarity(tokens[:, 0], sampled, dim=1)
        m = ok.float()
        losses.append(((1 - cos) * m).sum() / m.sum().clamp_min(1.0))
    return torch.stack(losses).mean()


def make_lifter(cfg: TrainConfig, settings: SplatSettings):
    """The lifter named by ``cfg.lifter``: depth | predictor:PATH | ply:PATH | python:MODULE:FACTORY
    (see :mod:`splatdistill.lifters`)."""
    from splatdistill.lifters import build_lifter

    return build_lifter(cfg.lifter, settings, data=cfg.data)


def build_dataset(cfg: TrainConfig, split: str | None = None):
    """A split (default ``cfg.split``) of ``cfg.data`` as a :class:`MultiViewDataset` at ``cfg.image_size``."""
    from splatdistill.data import ensure_rooms, load_dataset
    from splatdistill.data.sampler import MultiViewDataset, SamplerConfig

    root = ensure_rooms() if cfg.data == "rooms" else cfg.data
    split = split or cfg.split
    scenes = load_dataset(root, split=split)
    if not scenes:
        raise UserError(f"no scenes in split {split!r}", root)
    sampler = SamplerConfig(num_targets=cfg.num_targets, gap=cfg.context_gap or None)
    return MultiViewDataset(scenes, sampler, seed=cfg.seed, size=cfg.image_size, mask_mode=cfg.mask)
