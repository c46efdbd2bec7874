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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from splatdistill.atomic import atomic_torch_save, atomic_write_text
from splatdistill.backbones import load_backbone
from splatdistill.data import load_splits
from splatdistill.data.views import Views
from splatdistill.devices import resolve_device
from splatdistill.errors import UserError
from splatdistill.lifters.bank import load_bank, pair_views, snd_context_pairs, training_pairs
from splatdistill.lifters.evaluate import evaluate_predictor
from splatdistill.lifters.losses import predictor_losses
from splatdistill.lifters.predictor import GaussianPredictor, PredictorConfig, load_predictor, save_predictor
from splatdistill.lifters.pretrained import resolve_predictor
from splatdistill.run_folder import owned_training_folder
from splatdistill.runs import Run, TimeBudget, warmup_cosine
from splatdistill.safe_load import load_torch_file
from splatdistill.threads import torch_threads

STATE_NAME = "train_state.pt"
FRESH_HINT = "pass --resume to continue it, or choose another --out"


@dataclass
class LifterModelConfig:
    """The predictor's architecture (:class:`PredictorConfig`); ``init`` keeps a saved one's."""

    features: Literal["cnn", "backbone", "cnn+backbone"] = "cnn"  # matching features (see PredictorConfig)
    backbone: str = "dinov2_vits14"  # used when features include "backbone"
    backbone_size: int = 224  # image side fed to the backbone (as the SnD teacher sees it)
    image_size: int = 112  # predictor resolution (the trainer's render_size default)
    num_depths: int = 32  # plane-sweep candidates
    near: float = 0.5  # nearest plane, metres
    far: float = 12.0  # farthest plane, metres
    channels: int = 48  # matching-feature channels
    planes: Literal["fixed", "baseline"] = "fixed"  # where the depth planes go (PredictorConfig.planes)
    zncc: bool = False  # a ZNCC grayscale matching cost beside the learned one (PredictorConfig.zncc)
    init: str = (
        ""  # start from a saved predictor (folder, or a shipped name such as "shipped"); its architecture is kept
    )


@dataclass
class LifterOptimConfig:
    """What trains the predictor: steps, budget, learning rate, training pairs and losses."""

    steps: int = 3000
    minutes: float = 0.0  # wall-time budget (0 = none); the LR schedule follows whichever budget is tighter
    batch_size: int = 4  # context pairs per step
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    max_gap: int = 4  # training pairs: at most this many frames apart ...
    min_overlap: float = 0.3  # ... and seeing at least this share of each other
    # depth: L1 on log depth (needs depth maps); photometric (docs/lifters.md): rebuild each context view
    # from the other (inverse warp at the predicted depth, and splatting for opacity/footprint) and compare
    # with its photograph (posed RGB alone); both; auto = depth when every view has depth, photometric when
    # none has, both when some have
    supervision: Literal["auto", "depth", "photometric", "both"] = "auto"
    photometric_weight: float = 1.0
    splat_weight: float = 1.0  # weight of the splat photometric loss (trains opacity and footprint) ...
    splat_every: int = 4  # ... taken every this many steps (it costs ~2x the rest of a step on a CPU)


@dataclass
class LifterRunConfig:
    """Where the run reads and writes, its held-out evaluation, and the machine it runs on."""

    data: str = "rooms"  # dataset folder or "rooms"
    out: str = "runs/lifter"  # output folder
    eval_pairs: int = 6  # held-out context pairs per scene
    eval_splits: tuple[str, ...] = ("val", "test")
    checkpoint_every: int = 250
    seed: int = 0
    threads: int = 1  # torch threads (1 is fastest on a shared 2-core machine)
    # where the predictor, its batches and its losses run: auto = this process's CUDA device when present,
    # else the CPU (splatdistill.devices.resolve_device); cpu, cuda, cuda:N; fp32 on every device
    device: str = "auto"
    progress: bool = True


@dataclass
class LifterTrainConfig:
    model: LifterModelConfig = field(default_factory=LifterModelConfig)
    optim: LifterOptimConfig = field(default_factory=LifterOptimConfig)
    run: LifterRunConfig = field(default_factory=LifterRunConfig)

    def validate(self) -> LifterTrainConfig:
        self.predictor_config().validate()
        o, r = self.optim, self.run
        for group, name in (
            (o, "steps"),
            (o, "batch_size"),
            (r, "eval_pairs"),
            (r, "checkpoint_every"),
            (r, "threads"),
            (o, "max_gap"),
            (o, "splat_every"),
        ):
            if getattr(group, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be >= 1, got {getattr(group, name)}")
        if o.minutes < 0 or o.lr <= 0:
            raise UserError("minutes must be >= 0 and lr > 0")
        if o.photometric_weight < 0 or o.splat_weight < 0:
            raise UserError(
                f"photometric_weight and splat_weight must be >= 0, got {o.photometric_weight}, {o.splat_weight}"
            )
        resolve_device(r.device)  # a device this machine lacks stops here, before any folder is touched
        return self

    def predictor_config(self, backbone_dim: int = 0) -> PredictorConfig:
        m = self.model
        return PredictorConfig(
            features=m.features,
            backbone=m.backbone if "backbone" in m.features else "",
            backbone_dim=backbone_dim or (1 if "backbone" in m.features else 0),
            backbone_size=m.backbone_size,
            num_depths=m.num_depths,
            near=m.near,
            far=m.far,
            channels=m.channels,
            image_size=m.image_size,
            planes=m.planes,
            zncc=m.zncc,
        )


# ---- training ---------------------------------------------------------------------------------------


def train_predictor(cfg: LifterTrainConfig, resume: bool = False, log=print, lock: bool = True) -> dict[str, Any]:
    """Train a predictor on the train split of ``cfg.run.data``, evaluate it on the held-out splits and
    write ``predictor.safetensors``, ``predictor.json``, ``metrics.json`` and ``log.jsonl`` to ``cfg.run.out``,
    locked first (``lock=False``: the caller holds the lock); a fresh run over a train_state.pt is refused."""
    cfg.validate()
    with (
        owned_training_folder(cfg.run.out, "splatdistill lifter train", resume, STATE_NAME, FRESH_HINT, lock),
        torch_threads(cfg.run.threads),
    ):
        run = _PredictorRun(cfg, resume, log)
        results = run.train()
        if results["stopped_by"] != "signal":  # SIGTERM: the state is saved; leave promptly
            results.update(run.held_out())
        if results.get("held_out"):  # the figures travel with the weights (predictor.json "meta")
            run.save(final=True, held_out=results["held_out"])
        results["wall_seconds"] = time.perf_counter() - run.t_start
        atomic_write_text(run.out / "metrics.json", json.dumps(results, indent=1))
        return results


def _postfix(rec: dict[str, float]) -> dict[str, str]:
    return {"loss": f"{rec['total']:.3f}", **({"depth": f"{rec['depth']:.3f}"} if "depth" in rec else {})}


def _read_state(path: Path) -> dict[str, Any]:
    """The saved training state of a run to resume (a damaged file is refused by :func:`load_torch_file`)."""
    return load_torch_file(
        path, "predictor training state", require=("model", "optimizer", "step", "elapsed", "config")
    )


#: the architecture fields a fine-tuned predictor takes from its ``--init``
INIT_FIELDS = ("features", "num_depths", "near", "far", "channels", "image_size", "backbone_size", "planes", "zncc")


def _adopt_architecture(cfg: LifterTrainConfig, ic: PredictorConfig) -> None:
    """Fine-tuning keeps the initial predictor's architecture: copy it into ``cfg.model``."""
    for name in INIT_FIELDS:
        setattr(cfg.model, name, getattr(ic, name))
    if ic.uses_backbone:
        cfg.model.backbone = ic.backbone


def _supervision(cfg: LifterTrainConfig, depths: torch.Tensor) -> tuple[bool, float]:
    """(use depth, photometric weight): ``auto`` uses depth where any view has it and the photometric term
    where some view lacks it."""
    with_depth = (depths > 0).flatten(1).any(1)
    has_depth, all_depth = bool(with_depth.any()), bool(with_depth.all())
    sup = cfg.optim.supervision
    use_depth = sup in ("depth", "both") or (sup == "auto" and has_depth)
    photometric = sup in ("photometric", "both") or (sup == "auto" and not all_depth)
    return use_depth, cfg.optim.photometric_weight if photometric else 0.0


def _initial_model(cfg: LifterTrainConfig, pcfg: PredictorConfig, init: GaussianPredictor | None) -> GaussianPredictor:
    """A fresh predictor of ``pcfg``, with the weights of ``init`` when fine-tuning (its guide features must match)."""
    model = GaussianPredictor(pcfg)
    if init is not None:
        if init.config.backbone_dim != pcfg.backbone_dim:
            raise UserError(
                f"--init {cfg.model.init}: it matches on {init.config.backbone_dim}-channel features, "
                f"{cfg.model.backbone} gives {pcfg.backbone_dim}"
            )
        model.load_state_dict(init.state_dict())
    return model


def _restore(
    state: dict[str, Any], cfg: LifterTrainConfig, model: GaussianPredictor, opt: torch.optim.Optimizer, path: Path
) -> tuple[int, float]:
    """Load a resumed run's weights and optimiser state; returns (step, training seconds so far)."""
    saved = state["config"].get("model", state["config"])  # a state written before the nesting: flat
    if saved["features"] != cfg.model.features or saved["channels"] != cfg.model.channels:
        raise UserError("cannot resume: the run was trained with another features/channels setting", path)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return int(state["step"]), float(state["elapsed"])


class _PredictorRun:
    """One ``train-lifter`` run: data and model set up (or resumed), the loop, the held-out evaluation."""

    def __init__(self, cfg: LifterTrainConfig, resume: bool, log):
        torch.manual_seed(cfg.run.seed)
        self.cfg, self.log, self.out = cfg, log, Path(cfg.run.out)
        self.device = resolve_device(cfg.run.device)
        self.state_path = self.out / STATE_NAME
        if resume and not self.state_path.is_file():
            raise UserError(f"nothing to resume (no {STATE_NAME})", self.out)
        state = _read_state(self.state_path) if resume else None  # a damaged one stops before any work
        self.t_start = time.perf_counter()
        init = load_predictor(resolve_predictor(cfg.model.init)) if cfg.model.init else None
        if init is not None:  # fine-tuning keeps the initial predictor's architecture
            _adopt_architecture(cfg, init.config)
        self.root, self.split_scenes = load_splits(cfg.run.data, ("train", *cfg.run.eval_splits))
        train_scenes = self.split_scenes["train"]
        if not train_scenes:
            raise UserError("no training scenes (split 'train' is empty)", self.root)
        self.backbone, bdim = None, 0
        if "backbone" in cfg.model.features:
            self.backbone = load_backbone(cfg.model.backbone, device=self.device).eval()  # the bank's guide features
            bdim = int(self.backbone.embed_dim)
        self.bank = load_bank(
            train_scenes,
            cfg.model.image_size,
            self.backbone,
            cfg.model.backbone_size,
            cfg.run.progress,
            "train views",
            need_depth=cfg.optim.supervision in ("depth", "both"),
        )
        self.use_depth, self.photometric_weight = _supervision(cfg, self.bank.depths)
        if not self.use_depth:  # trained from posed images alone: no depth reaches the model or the pairs
            self.bank.depths.zero_()
        self.pairs = training_pairs(self.bank, cfg.optim.max_gap, cfg.optim.min_overlap)
        if not self.pairs:
            raise UserError(
                f"no training pairs with max_gap={cfg.optim.max_gap} and min_overlap={cfg.optim.min_overlap}", self.root
            )
        valid = self.bank.depths > 0
        self.median_depth = float(self.bank.depths[valid].median()) if bool(valid.any()) else None
        self.pcfg = cfg.predictor_config(bdim)
        self.model = _initial_model(cfg, self.pcfg, init)
        self.model.to(self.device)  # before the optimiser: its state follows the parameters (a resumed one too)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.step, elapsed_before = 0, 0.0
        self.out.mkdir(parents=True, exist_ok=True)
        if state is not None:
            self.step, elapsed_before = _restore(state, cfg, self.model, self.opt, self.state_path)
        atomic_write_text(self.out / "train_config.json", json.dumps(asdict(cfg), indent=1))
        self.supervision_used = "+".join(
            k for k, on in (("depth", self.use_depth), ("photometric", self.photometric_weight > 0)) if on
        )
        log(
            f"train-lifter: {len(train_scenes)} train scenes, {len(self.bank)} views, {len(self.pairs)} "
            f"context pairs; features={cfg.model.features}; supervision={self.supervision_used}; device {self.device}; "
            f"{sum(p.numel() for p in self.model.parameters()) / 1e3:.0f}k parameters"
            + (f"; initialised from {cfg.model.init}" if cfg.model.init else "")
        )
        self.setup_seconds = time.perf_counter() - self.t_start
        self.budget = TimeBudget(cfg.optim.minutes, elapsed_before)

    def save(self, final: bool = False, held_out: dict[str, Any] | None = None) -> None:
        meta = {
            "steps": self.step,
            "train_seconds": self.budget.elapsed,
            "data": str(self.root),
            "final": final,
            "train_median_depth": self.median_depth,
            "supervision": self.supervision_used,
            **({"held_out": held_out} if held_out else {}),
        }
        if self.backbone is not None:  # how the guide backbone was fed (its features are what the predictor matches)
            meta["backbone_preprocess"] = self.backbone.preprocessing.to_dict()
        save_predictor(self.model, self.out, meta)
        atomic_torch_save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "step": self.step,
                "elapsed": self.budget.elapsed,
                "config": asdict(self.cfg),
            },
            self.state_path,
        )

    def batch(self, step: int) -> Views:
        """The seeded batch of ``step`` on the run's device: context pairs in random order, with a random
        gain per view (drawn on the CPU, so every device trains on the same stream)."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.run.seed, step])
        chosen = [self.pairs[int(k)] for k in rng.integers(len(self.pairs), size=cfg.optim.batch_size)]
        chosen = [(b, a) if rng.random() < 0.5 else (a, b) for a, b in chosen]
        batch = pair_views(self.bank, chosen, self.device)
        gain = torch.from_numpy(rng.uniform(0.8, 1.2, size=(cfg.optim.batch_size, 2, 1, 1, 1))).float()
        return replace(batch, images=(batch.images * gain.to(self.device)).clamp(0, 1))

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        batch = self.batch(self.step)
        progress = self.step / cfg.optim.steps
        if cfg.optim.minutes > 0:  # the schedule follows whichever budget is tighter
            progress = max(progress, self.budget.elapsed / 60 / cfg.optim.minutes)
        for g in self.opt.param_groups:
            g["lr"] = cfg.optim.lr * warmup_cosine(self.step, progress, cfg.optim.warmup, 0.02)
        outp = self.model(batch)
        losses = predictor_losses(
            outp,
            batch,
            self.pcfg,
            depth=self.use_depth,
            photometric_weight=self.photometric_weight,
            splat_weight=cfg.optim.splat_weight if self.step % cfg.optim.splat_every == 0 else 0.0,
        )
        loss = losses["total"]
        if not torch.isfinite(loss):
            raise UserError(f"train-lifter: loss became {float(loss)} at step {self.step + 1}; lower --lr", self.out)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        return {
            "step": self.step,
            "time": round(self.budget.elapsed, 2),
            "lr": self.opt.param_groups[0]["lr"],
            **{k: round(float(v.detach()), 5) for k, v in losses.items()},
        }

    def train(self) -> dict[str, Any]:
        """The loop (:class:`~splatdistill.runs.Run`): ``log.jsonl`` line per step, ``train_state.pt`` every
        ``checkpoint_every`` steps and at the end, stopped by ``minutes`` or SIGTERM (a state to resume from)."""
        cfg = self.cfg
        self.model.train()
        run = Run(
            name="train-lifter",
            total=cfg.optim.steps,
            step=self.step,
            train_step=self.train_step,
            budget=self.budget,
            save=lambda final: self.save(final=final),
            checkpoint_every=cfg.run.checkpoint_every,
            progress=cfg.run.progress,
            log_jsonl=self.out / "log.jsonl",
            postfix=_postfix,
        )
        res = run()
        self.model.eval()
        return {
            "steps": self.step,
            "train_seconds": self.budget.elapsed,
            "setup_seconds": self.setup_seconds,
            "stopped_by_time": res.stopped_by == "time" and self.step < cfg.optim.steps,
            "stopped_by": res.stopped_by,
            "train_pairs": len(self.pairs),
            "train_median_depth": self.median_depth,
            "held_out": {},
        }

    def held_out(self) -> dict[str, Any]:
        cfg = self.cfg
        held_out = [s for split in cfg.run.eval_splits for s in self.split_scenes.get(split, [])]
        if not held_out:
            self.log(f"train-lifter: no held-out depth errors (no scenes in split {' or '.join(cfg.run.eval_splits)})")
            return {}
        try:
            ebank = load_bank(
                held_out,
                cfg.model.image_size,
                self.backbone,
                cfg.model.backbone_size,
                cfg.run.progress,
                "held-out views",
            )
        except UserError as exc:  # held-out scenes without depth: nothing to measure against
            self.log(f"train-lifter: no held-out depth errors ({exc})")
            return {}
        epairs = snd_context_pairs(ebank, held_out, cfg.run.eval_pairs, seed=cfg.run.seed)
        result = evaluate_predictor(
            self.model, ebank, held_out, epairs, train_median=self.median_depth, progress=cfg.run.progress
        )
        result["splits"] = list(cfg.run.eval_splits)
        result["scenes"] = [s.name for s in held_out]
        return {"held_out": result}
