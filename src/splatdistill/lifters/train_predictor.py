"""Training and evaluating the learned Gaussian predictor (``splatdistill train-lifter``).

Supervision (``supervision``, default ``depth``; losses in :mod:`splatdistill.lifters.losses`): L1 on log
depth at the three output scales (full, 1/2, 1/4), which is what AbsRel measures, and optionally
(experimental) the photometric loss of :mod:`splatdistill.lifters.photometric`, which needs no depth.
With depth supervision, opacity and scale get geometric proxy targets:

- opacity -> ``exp(-|log d_pred - log d_gt| / 0.1)``: a confidence, so badly placed Gaussians fade
  instead of smearing wrong features over a target view;
- scale -> ``1 / |cos(angle between the surface normal and the pixel ray)|`` clipped to the scale range
  (when the data has normals): pixels on grazing surfaces cover a longer stretch of surface and need
  bigger Gaussians to leave no holes when seen from another view.

Context pairs for training are views of one scene at most ``max_gap`` frames apart that see enough of
each other (by ground-truth reprojection); held-out evaluation uses exactly the context pairs the
Splat-and-Distill trainer draws (:class:`~splatdistill.data.sampler.ViewSampler` defaults), so the
reported AbsRel is the one the teacher's lifting actually gets.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from splatdistill.atomic import atomic_torch_save
from splatdistill.backbones import load_backbone
from splatdistill.data import load_splits
from splatdistill.data.sampler import SamplerConfig, ViewSampler
from splatdistill.data.scene import Scene
from splatdistill.data.views import Views
from splatdistill.errors import UserError
from splatdistill.geometry.warp import warp_pixels
from splatdistill.lifters.losses import predictor_losses
from splatdistill.lifters.pretrained import resolve_predictor
from splatdistill.lifters.predictor import (
    GaussianPredictor,
    PredictorConfig,
    load_predictor,
    read_predictor_meta,
    save_predictor,
)
from splatdistill.runs import TimeBudget, warmup_cosine
from splatdistill.safe_load import load_torch_file
from splatdistill.threads import torch_threads

STATE_NAME = "train_state.pt"


@dataclass
class LifterTrainConfig:
    data: str = "rooms"  # dataset folder or "rooms"
    out: str = "runs/lifter"
    features: Literal["cnn", "backbone", "cnn+backbone"] = "cnn"  # matching features (see PredictorConfig)
    backbone: str = "dinov2_vits14"  # used when features include "backbone"
    backbone_size: int = 224  # image side fed to the backbone (as the SnD teacher sees it)
    image_size: int = 112  # predictor resolution (the trainer's render_size default)
    num_depths: int = 32
    near: float = 0.5
    far: float = 12.0
    channels: int = 48
    steps: int = 3000
    minutes: float = 0.0  # wall-time budget (0 = none); the LR schedule follows whichever budget is tighter
    batch_size: int = 4  # context pairs per step
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    max_gap: int = 4  # training pairs: at most this many frames apart ...
    min_overlap: float = 0.3  # ... and seeing at least this share of each other
    eval_pairs: int = 6  # held-out context pairs per scene
    eval_splits: tuple[str, ...] = ("val", "test")
    # depth: L1 on log depth (needs depth maps); photometric (docs/lifters.md): rebuild each context view
    # from the other (inverse warp at the predicted depth, and splatting for opacity/footprint) and compare
    # with its photograph (posed RGB alone); both; auto = depth when every view has depth, photometric when
    # none has, both when some have
    supervision: Literal["auto", "depth", "photometric", "both"] = "auto"
    photometric_weight: float = 1.0
    splat_weight: float = 1.0  # weight of the splat photometric loss (trains opacity and footprint) ...
    splat_every: int = 4  # ... taken every this many steps (it costs ~2x the rest of a step on a CPU)
    init: str = ""  # start from a saved predictor (folder, or a shipped name such as "shipped"); its architecture is kept
    checkpoint_every: int = 250
    seed: int = 0
    threads: int = 1  # torch threads (1 is fastest on a shared 2-core machine)
    progress: bool = True

    def validate(self) -> "LifterTrainConfig":
        self.predictor_config().validate()
        for name in ("steps", "batch_size", "eval_pairs", "checkpoint_every", "threads", "max_gap", "splat_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.minutes < 0 or self.lr <= 0:
            raise UserError("minutes must be >= 0 and lr > 0")
        if self.photometric_weight < 0 or self.splat_weight < 0:
            raise UserError(f"photometric_weight and splat_weight must be >= 0, got {self.photometric_weight}, "
                            f"{self.splat_weight}")
        return self

    def predictor_config(self, backbone_dim: int = 0) -> PredictorConfig:
        return PredictorConfig(features=self.features, backbone=self.backbone if "backbone" in self.features else "",
                               backbone_dim=backbone_dim or (1 if "backbone" in self.features else 0),
                               backbone_size=self.backbone_size, num_depths=self.num_depths, near=self.near,
                               far=self.far, channels=self.channels, image_size=self.image_size)


# ---- data -------------------------------------------------------------------------------------------

@dataclass
class ViewBank:
    """Every view of some scenes, resized to the predictor's resolution, held in memory."""

    images: Tensor  # (N, 3, S, S) float
    depths: Tensor  # (N, S, S), 0 = unknown
    normals: Tensor | None  # (N, S, S, 3) camera frame, or None when the data has none
    Ks: Tensor  # (N, 3, 3) at S
    viewmats: Tensor  # (N, 4, 4) world-to-camera
    index: list[tuple[int, int]]  # bank row -> (scene number, view number)
    scene_rows: list[list[int]]  # scene number -> bank rows
    scenes: list[Scene]
    tokens: Tensor | None = None  # (N, C, h, w) backbone patch features (float16), if computed

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


def load_bank(scenes: Sequence[Scene], size: int, backbone=None, backbone_size: int = 224,
              progress: bool = True, desc: str = "views", need_depth: bool = True) -> ViewBank:
    """Load and resize every view; with ``backbone``, also its patch features (from a ``backbone_size``
    copy of the full-resolution image, as the Splat-and-Distill teacher sees it)."""
    views, index, rows, tokens = [], [], [], []
    total = sum(len(s) for s in scenes)
    bar = tqdm(total=total, desc=f"loading {desc}", unit="view", disable=not progress, leave=False)
    pending: list[Tensor] = []

    def flush() -> None:
        if pending:
            with torch.no_grad():
                tokens.append(backbone.patch_features(torch.stack(pending)).half())
            pending.clear()

    for si, scene in enumerate(scenes):
        rows.append([])
        for vi in range(len(scene)):
            full = scene.load_view(vi)
            if full.depth is None and need_depth:
                raise UserError(f"scene {scene.name} view {vi} has no depth: the predictor is trained and "
                                "evaluated with depth supervision (supervision=photometric trains from posed images "
                                "alone)", scene.root)
            views.append(Views.from_view_data([full], [vi], mask_mode=None, size=size, scene=scene.name,
                                              normals=full.normals is not None))
            rows[-1].append(len(index))
            index.append((si, vi))
            if backbone is not None:
                img = torch.from_numpy(full.image).permute(2, 0, 1)[None].float()
                pending.append(F.interpolate(img, size=(backbone_size, backbone_size), mode="bilinear",
                                             align_corners=False, antialias=True)[0])
                if len(pending) == 8:
                    flush()
            bar.update(1)
    flush()
    bar.close()
    if not index:
        raise UserError("no views to load (empty split?)")
    normals = torch.cat([v.normals for v in views]) if all(v.normals is not None for v in views) else None
    return ViewBank(torch.cat([v.images for v in views]), torch.cat([v.depths for v in views]), normals,
                    torch.cat([v.Ks for v in views]), torch.cat([v.viewmats for v in views]), index, rows,
                    list(scenes), torch.cat(tokens) if tokens else None)


def overlap(bank: ViewBank, a: int, b: int, step: int = 4) -> float:
    """Share of view a's valid pixels (on a coarse grid) that land inside view b in front of it
    (1 when view a has no depth: pairs are then chosen by their frame gap alone)."""
    S = bank.size
    d = bank.depths[a, step // 2::step, step // 2::step]
    ys, xs = torch.meshgrid(torch.arange(step // 2, S, step).float() + 0.5,
                            torch.arange(step // 2, S, step).float() + 0.5, indexing="ij")
    ok = d > 0
    if not bool(ok.any()):
        return 1.0
    uv_a = torch.stack([xs, ys], -1)[ok]
    uv, z = warp_pixels(uv_a, d[ok], bank.Ks[a], torch.linalg.inv(bank.viewmats[a]), bank.Ks[b],
                        torch.linalg.inv(bank.viewmats[b]))
    inside = (z > 1e-3) & (uv >= 0).all(1) & (uv < S).all(1)
    return float(inside.float().sum() / max(1, int(ok.numel())))


def training_pairs(bank: ViewBank, max_gap: int, min_overlap: float) -> list[tuple[int, int]]:
    """Bank-row pairs (a, b), a < b, of one scene, at most ``max_gap`` frames apart, mutually overlapping."""
    pairs = []
    for rows in bank.scene_rows:
        for i, a in enumerate(rows):
            for b in rows[i + 1: i + 1 + max_gap]:
                if min(overlap(bank, a, b), overlap(bank, b, a)) >= min_overlap:
                    pairs.append((a, b))
    return pairs


def snd_context_pairs(bank: ViewBank, per_scene: int, seed: int = 0) -> list[tuple[int, int]]:
    """The context pairs the Splat-and-Distill trainer would draw from each scene (sampler defaults)."""

    out = []
    for si, scene in enumerate(bank.scenes):
        try:
            sampler = ViewSampler([scene], SamplerConfig(), seed=seed)
        except UserError:
            continue  # too few views for a context pair with a target between
        seen: set[tuple[int, int]] = set()
        for k in range(per_scene * 4):
            i, j = sampler.sample_at(k).context
            key = (min(i, j), max(i, j))
            if key not in seen:
                seen.add(key)
                out.append((bank.scene_rows[si][i], bank.scene_rows[si][j]))
            if len(seen) >= per_scene:
                break
    return out


def batch_from_pairs(bank: ViewBank, pairs: Sequence[tuple[int, int]], device=None) -> dict[str, Tensor]:
    idx = torch.tensor([list(p) for p in pairs])  # (B, 2)
    out = {"images": bank.images[idx], "depths": bank.depths[idx], "Ks": bank.Ks[idx], "viewmats": bank.viewmats[idx]}
    if bank.normals is not None:
        out["normals"] = bank.normals[idx]
    if bank.tokens is not None:
        out["guide"] = bank.tokens[idx].float()
    return {k: v.to(device) for k, v in out.items()}


# ---- evaluation -------------------------------------------------------------------------------------

def depth_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """AbsRel, RMSE and delta < 1.25 over pixels with gt > 0 (pooled)."""
    m = gt > 0
    p, g = np.maximum(pred[m].astype(np.float64), 1e-6), gt[m].astype(np.float64)
    ratio = np.maximum(p / g, g / p)
    return {"abs_rel": float(np.mean(np.abs(p - g) / g)), "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
            "delta1": float(np.mean(ratio < 1.25)), "pixels": int(m.sum())}


@torch.no_grad()
def evaluate_predictor(model: GaussianPredictor, bank: ViewBank, pairs: Sequence[tuple[int, int]],
                       constant_depth: float | None = None, batch_size: int = 4, progress: bool = False
                       ) -> dict[str, Any]:
    """Depth errors of the predictor on both views of every pair (pooled over pixels), of its coarse
    cost-volume estimate alone, and of a constant-depth baseline (``constant_depth``, e.g. the training
    median). ``bank.tokens`` are the guide features when the predictor matches on backbone features."""

    if not pairs:
        raise UserError("no held-out context pairs to evaluate on")
    cfg = model.config
    model.eval()
    preds, coarse, gts, scene_of = [], [], [], []
    t0 = time.perf_counter()
    for s in tqdm(range(0, len(pairs), batch_size), desc="evaluating", unit="batch", disable=not progress, leave=False):
        chunk = pairs[s: s + batch_size]
        scene_of += [bank.scenes[bank.index[r][0]].name for pair in chunk for r in pair]
        b = batch_from_pairs(bank, chunk)
        out = model(b["images"], b["Ks"], b["viewmats"], b.get("guide"))
        preds.append(out.depth.flatten(0, 1).numpy())
        up = F.interpolate(out.coarse_t.flatten(0, 1)[:, None], size=b["depths"].shape[-2:], mode="bilinear",
                           align_corners=False)[:, 0]
        coarse.append(cfg.t_to_depth(up).numpy())
        gts.append(b["depths"].flatten(0, 1).numpy())
    seconds = time.perf_counter() - t0
    pred, gt = np.concatenate(preds), np.concatenate(gts)
    result = {"predictor": depth_errors(pred, gt), "coarse_only": depth_errors(np.concatenate(coarse), gt),
              "pairs": len(pairs), "views": int(pred.shape[0]), "seconds_per_pair": seconds / len(pairs)}
    names = np.array(scene_of)
    result["per_scene_abs_rel"] = {n: depth_errors(pred[names == n], gt[names == n])["abs_rel"]
                                   for n in dict.fromkeys(scene_of)}
    if constant_depth is not None:
        result["constant_depth"] = depth_errors(np.full_like(gt, constant_depth), gt)
        result["constant_depth"]["value"] = float(constant_depth)
    return result


# ---- training ---------------------------------------------------------------------------------------

def train_predictor(cfg: LifterTrainConfig, resume: bool = False, log=print) -> dict[str, Any]:
    """Train a predictor on the train split of ``cfg.data``, evaluate it on the held-out splits and
    write ``predictor.safetensors``, ``predictor.json``, ``metrics.json`` and ``log.jsonl`` to ``cfg.out``."""
    cfg.validate()
    with torch_threads(cfg.threads):
        run = _PredictorRun(cfg, resume, log)
        results = run.train()
        results.update(run.held_out())
        if results.get("held_out"):  # the figures travel with the weights (predictor.json "meta")
            run.save(final=True, held_out=results["held_out"])
        results["wall_seconds"] = time.perf_counter() - run.t_start
        (run.out / "metrics.json").write_text(json.dumps(results, indent=1))
        return results


class _PredictorRun:
    """One ``train-lifter`` run: data and model set up (or resumed), the loop, the held-out evaluation."""

    def __init__(self, cfg: LifterTrainConfig, resume: bool, log):
        torch.manual_seed(cfg.seed)
        self.cfg, self.log, self.out = cfg, log, Path(cfg.out)
        self.state_path = self.out / STATE_NAME
        if resume and not self.state_path.is_file():
            raise UserError(f"nothing to resume (no {STATE_NAME})", self.out)
        state = load_torch_file(self.state_path, "predictor training state", require=("model", "optimizer", "step",
                                "elapsed", "config")) if resume else None  # a damaged one stops before any work
        self.t_start = time.perf_counter()
        init = load_predictor(resolve_predictor(cfg.init)) if cfg.init else None
        if init is not None:  # fine-tuning keeps the initial predictor's architecture
            ic = init.config
            for name in ("features", "num_depths", "near", "far", "channels", "image_size", "backbone_size"):
                setattr(cfg, name, getattr(ic, name))
            if ic.uses_backbone:
                cfg.backbone = ic.backbone
        self.root, self.split_scenes = load_splits(cfg.data, ("train", *cfg.eval_splits))
        train_scenes = self.split_scenes["train"]
        if not train_scenes:
            raise UserError("no training scenes (split 'train' is empty)", self.root)
        self.backbone, bdim = None, 0
        if "backbone" in cfg.features:
            self.backbone = load_backbone(cfg.backbone).eval()
            bdim = int(self.backbone.embed_dim)
        self.bank = load_bank(train_scenes, cfg.image_size, self.backbone, cfg.backbone_size, cfg.progress,
                              "train views", need_depth=cfg.supervision in ("depth", "both"))
        with_depth = (self.bank.depths > 0).flatten(1).any(1)
        has_depth, all_depth = bool(with_depth.any()), bool(with_depth.all())
        self.use_depth = cfg.supervision in ("depth", "both") or (cfg.supervision == "auto" and has_depth)
        photometric = cfg.supervision in ("photometric", "both") or (cfg.supervision == "auto" and not all_depth)
        self.photometric_weight = cfg.photometric_weight if photometric else 0.0
        if not self.use_depth:  # trained from posed images alone: no depth reaches the model or the pairs
            self.bank.depths.zero_()
        self.pairs = training_pairs(self.bank, cfg.max_gap, cfg.min_overlap)
        if not self.pairs:
            raise UserError(f"no training pairs with max_gap={cfg.max_gap} and min_overlap={cfg.min_overlap}",
                            self.root)
        valid = self.bank.depths > 0
        self.median_depth = float(self.bank.depths[valid].median()) if bool(valid.any()) else None
        self.pcfg = cfg.predictor_config(bdim)
        self.model = GaussianPredictor(self.pcfg)
        if init is not None:
            if init.config.backbone_dim != self.pcfg.backbone_dim:
                raise UserError(f"--init {cfg.init}: it matches on {init.config.backbone_dim}-channel features, "
                                f"{cfg.backbone} gives {self.pcfg.backbone_dim}")
            self.model.load_state_dict(init.state_dict())
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step, elapsed_before = 0, 0.0
        self.out.mkdir(parents=True, exist_ok=True)
        if state is not None:
            if state["config"]["features"] != cfg.features or state["config"]["channels"] != cfg.channels:
                raise UserError("cannot resume: the run was trained with another features/channels setting",
                                self.state_path)
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.step, elapsed_before = int(state["step"]), float(state["elapsed"])
        (self.out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
        self.supervision_used = "+".join(k for k, on in (("depth", self.use_depth),
                                                          ("photometric", self.photometric_weight > 0)) if on)
        log(f"train-lifter: {len(train_scenes)} train scenes, {len(self.bank.index)} views, {len(self.pairs)} "
            f"context pairs; features={cfg.features}; supervision={self.supervision_used}; "
            f"{sum(p.numel() for p in self.model.parameters()) / 1e3:.0f}k parameters"
            + (f"; initialised from {cfg.init}" if cfg.init else ""))
        self.setup_seconds = time.perf_counter() - self.t_start
        self.budget = TimeBudget(cfg.minutes, elapsed_before)

    def save(self, final: bool = False, held_out: dict[str, Any] | None = None) -> None:
        meta = {"steps": self.step, "train_seconds": self.budget.elapsed, "data": str(self.root), "final": final,
                "train_median_depth": self.median_depth, "supervision": self.supervision_used,
                **({"held_out": held_out} if held_out else {})}
        save_predictor(self.model, self.out, meta)
        atomic_torch_save({"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "step": self.step,
                           "elapsed": self.budget.elapsed, "config": asdict(self.cfg)}, self.state_path)

    def batch(self, step: int) -> dict[str, Tensor]:
        """The seeded batch of ``step``: context pairs in random order, with a random gain per view."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        chosen = [self.pairs[int(k)] for k in rng.integers(len(self.pairs), size=cfg.batch_size)]
        chosen = [(b, a) if rng.random() < 0.5 else (a, b) for a, b in chosen]
        batch = batch_from_pairs(self.bank, chosen)
        gain = torch.from_numpy(rng.uniform(0.8, 1.2, size=(cfg.batch_size, 2, 1, 1, 1))).float()
        batch["images"] = (batch["images"] * gain).clamp(0, 1)
        return batch

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        batch = self.batch(self.step)
        progress = self.step / cfg.steps
        if cfg.minutes > 0:  # the schedule follows whichever budget is tighter
            progress = max(progress, self.budget.elapsed / 60 / cfg.minutes)
        for g in self.opt.param_groups:
            g["lr"] = cfg.lr * warmup_cosine(self.step, progress, cfg.warmup, 0.02)
        outp = self.model(batch["images"], batch["Ks"], batch["viewmats"], batch.get("guide"))
        losses = predictor_losses(outp, batch, self.pcfg, depth=self.use_depth,
                                  photometric_weight=self.photometric_weight,
                                  splat_weight=cfg.splat_weight if self.step % cfg.splat_every == 0 else 0.0)
        loss = losses["total"]
        if not torch.isfinite(loss):
            raise UserError(f"train-lifter: loss became {float(loss)} at step {self.step + 1}; lower --lr", self.out)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        return {"step": self.step, "time": round(self.budget.elapsed, 2), "lr": self.opt.param_groups[0]["lr"],
                **{k: round(float(v.detach()), 5) for k, v in losses.items()}}

    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        stopped_by_time = False
        self.model.train()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train-lifter", unit="step", disable=not cfg.progress,
                   dynamic_ncols=True)
        with open(self.out / "log.jsonl", "a") as logf:
            try:
                while self.step < cfg.steps:
                    if self.budget.exhausted:
                        stopped_by_time = True
                        break
                    rec = self.train_step()
                    logf.write(json.dumps(rec) + "\n")
                    bar.update(1)
                    bar.set_postfix(loss=f"{rec['total']:.3f}", **({"depth": f"{rec['depth']:.3f}"} if "depth" in rec
                                                                   else {}))
                    if self.step % cfg.checkpoint_every == 0:
                        self.save()
            finally:
                bar.close()
        train_seconds = self.budget.elapsed
        self.save(final=True)
        self.model.eval()
        return {"steps": self.step, "train_seconds": train_seconds, "setup_seconds": self.setup_seconds,
                "stopped_by_time": stopped_by_time, "train_pairs": len(self.pairs),
                "train_median_depth": self.median_depth, "held_out": {}}

    def held_out(self) -> dict[str, Any]:
        cfg = self.cfg
        held_out = [s for split in cfg.eval_splits for s in self.split_scenes.get(split, [])]
        if not held_out:
            self.log(f"train-lifter: no held-out depth errors (no scenes in split {' or '.join(cfg.eval_splits)})")
            return {}
        try:
            ebank = load_bank(held_out, cfg.image_size, self.backbone, cfg.backbone_size, cfg.progress,
                              "held-out views")
        except UserError as exc:  # held-out scenes without depth: nothing to measure against
            self.log(f"train-lifter: no held-out depth errors ({exc})")
            return {}
        epairs = snd_context_pairs(ebank, cfg.eval_pairs, seed=cfg.seed)
        result = evaluate_predictor(self.model, ebank, epairs, constant_depth=self.median_depth, progress=cfg.progress)
        result["splits"] = list(cfg.eval_splits)
        result["scenes"] = [s.name for s in held_out]
        return {"held_out": result}


def evaluate_saved_predictor(path: str | Path, data: str = "rooms", splits: Sequence[str] = ("val", "test"),
                             pairs_per_scene: int = 6, backbone: str | None = None, seed: int = 0,
                             progress: bool = True, threads: int = 1) -> dict[str, Any]:
    """Held-out depth errors of a saved predictor. ``backbone`` swaps the guide features' backbone (e.g. a
    Splat-and-Distill teacher) to measure whether the depth follows the teacher's features."""
    with torch_threads(threads):
        return _evaluate_saved(path, data, splits, pairs_per_scene, backbone, seed, progress)


def _evaluate_saved(path, data, splits, pairs_per_scene, backbone, seed, progress) -> dict[str, Any]:
    path = resolve_predictor(str(path))
    model = load_predictor(path)
    pcfg = model.config
    meta = json_meta(path)
    root, split_scenes = load_splits(data, splits)
    scenes = [s for sp in splits for s in split_scenes[sp]]
    if not scenes:
        raise UserError(f"no scenes in split(s) {', '.join(splits)}", root)
    bb = None
    spec = backbone or pcfg.backbone
    if pcfg.uses_backbone:

        bb = load_backbone(spec).eval()
        if bb.embed_dim != pcfg.backbone_dim:
            raise UserError(f"backbone {spec} gives {bb.embed_dim}-channel features; the predictor expects "
                            f"{pcfg.backbone_dim}")
    elif backbone:
        raise UserError("this predictor matches on its own CNN features; --backbone does not apply")
    bank = load_bank(scenes, pcfg.image_size, bb, pcfg.backbone_size, progress, "held-out views")
    pairs = snd_context_pairs(bank, pairs_per_scene, seed=seed)
    res = evaluate_predictor(model, bank, pairs, constant_depth=meta.get("train_median_depth"), progress=progress)
    res.update({"splits": list(splits), "scenes": [s.name for s in scenes], "guide_backbone": spec if bb else None})
    return res


def json_meta(path: str | Path) -> dict[str, Any]:
    return read_predictor_meta(path).get("meta", {})
