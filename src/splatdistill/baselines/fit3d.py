"""FiT3D-style baseline: a per-scene *optimised* feature field, then distillation with L1 to its renders.

This is the approach Splat-and-Distill argues against, built so the two can be compared on the same
data, student and step budget (``splatdistill train method=fit3d loss=l1``):

1. **Per-scene field.** Gaussians are lifted from the ground-truth depth of ``lift_views`` views of the
   scene (every ``stride``-th pixel, footprint scaled to match), geometry frozen. Each Gaussian gets a
   learnable low-dimensional feature (``feature_dim``) and the scene shares a linear decoder to the
   teacher's C channels. Adam fits features and decoder so that the field's renders match the
   teacher's (mask-aware upsampled) features of up to ``max_views`` views of the scene, L1, for
   ``iterations`` steps. The decoder is linear on purpose: rendering normalised by coverage commutes
   with it, so a field is exactly a set of ordinary C-channel feature Gaussians (:meth:`FeatureField.
   as_gaussians`), exportable to PLY and renderable by any backend.
2. **Distillation.** A target view's targets are the field's render in that camera, downsampled to the
   student's patch grid; tokens with coverage under ``min_coverage`` are not supervised; the loss is L1
   (FiT3D's). The field is fitted once, to the *initial* teacher, and never updated: this is the
   "fixed, multi-view averaged targets" the paper contrasts with its dynamic teacher.

The fitting is the per-scene optimisation cost that the feed-forward lifter avoids; ``fit_scene``
reports its time separately from the teacher's feature extraction (which both approaches need).
Fitted fields are cached on disk keyed by scene, teacher and settings.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from splatdistill.atomic import atomic_torch_save
from splatdistill.backbones import load_backbone
from splatdistill.data.scene import Scene
from splatdistill.data.views import Sample, Views
from splatdistill.errors import UserError
from splatdistill.geometry.cameras import Cameras
from splatdistill.geometry.gaussians import Gaussians
from splatdistill.geometry.lifting import lift_depth
from splatdistill.render import render_features
from splatdistill.runs import Run
from splatdistill.safe_load import load_torch_file
from splatdistill.splat.scene import load_scene_views_timed
from splatdistill.splat.targets import tokens_from_render

FIELD_VERSION = 1


@dataclass
class Fit3DSettings:
    """The baseline's options in a training run (``method.fit3d`` of :class:`~splatdistill.distill.config.TrainConfig`)."""

    feature_dim: int = 32  # per-Gaussian feature size of the field
    iterations: int = 200  # Adam steps per scene
    views: int = 16  # views of a scene the field is fitted to
    lift_views: int = 8  # views whose depth places the field's Gaussians
    stride: int = 2  # lift every stride-th pixel
    cache: str = ""  # folder of fitted fields; "" = <out>/fit3d


@dataclass
class Fit3DConfig:
    feature_dim: int = 32  # per-Gaussian feature size (FiT3D uses a low-dimensional field + decoder)
    iterations: int = 200  # Adam steps per scene
    views_per_iter: int = 1  # fitted views rendered per step
    lr: float = 0.1  # per-Gaussian features
    decoder_lr: float = 0.002
    max_views: int = 16  # views of the scene the field is fitted to (evenly spaced)
    lift_views: int = 8  # views whose depth places the Gaussians (evenly spaced)
    stride: int = 2  # lift every stride-th pixel (footprint scaled to fill)
    opacity: float = 0.95
    init: str = "pca"  # pca: features/decoder from a PCA of the teacher features (CPU-friendly) | random
    render_size: int = 112  # resolution of fitting and of the targets (the trainer's render_size)
    image_size: int = 224  # teacher input size (the trainer's image_size)
    mask: str = "auto"  # segments for mask-aware upsampling of the teacher features
    renderer: str = "auto"
    seed: int = 0

    def validate(self) -> Fit3DConfig:
        if self.iterations < 0:
            raise UserError(f"fit3d iterations must be >= 0, got {self.iterations}")
        for name in ("feature_dim", "views_per_iter", "max_views", "lift_views", "stride", "render_size", "image_size"):
            if getattr(self, name) < 1:
                raise UserError(f"fit3d {name} must be >= 1, got {getattr(self, name)}")
        if self.init not in ("pca", "random"):
            raise UserError(f"fit3d init must be pca or random, got {self.init!r}")
        if self.render_size % self.stride:
            raise UserError(f"fit3d stride {self.stride} must divide render_size {self.render_size}")
        return self

    def key(self, teacher: str, scene: Scene) -> str:
        """Cache key: everything that changes the fitted field."""
        d = asdict(self)
        d.pop("renderer")
        blob = json.dumps(
            {
                "cfg": d,
                "teacher": teacher,
                "scene": scene.name,
                "root": str(scene.root),
                "views": len(scene),
                "v": FIELD_VERSION,
            },
            sort_keys=True,
        )
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


class FeatureField(nn.Module):
    """Frozen Gaussian geometry + learnable per-Gaussian features + a shared linear decoder."""

    def __init__(self, geometry: Gaussians, feature_dim: int, out_dim: int):
        super().__init__()
        self.register_buffer("means", geometry.means.detach().clone())
        self.register_buffer("covariances", geometry.covariances.detach().clone())
        self.register_buffer("opacities", geometry.opacities.detach().clone())
        self.features = nn.Parameter(torch.zeros(len(geometry), feature_dim))
        self.decoder = nn.Linear(feature_dim, out_dim)

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    def render(self, cameras: Cameras, backend: str = "auto") -> tuple[Tensor, Tensor]:
        """Decoded features (V, H, W, C), normalised by coverage, and coverage (V, H, W)."""
        f, alpha = render_features(
            self.means,
            self.covariances,
            self.opacities,
            self.features,
            cameras.viewmats,
            cameras.Ks,
            cameras.width,
            cameras.height,
            backend=backend,
        )
        f = f / alpha.clamp_min(1e-6)[..., None]
        return self.decoder(f), alpha

    def as_gaussians(self) -> Gaussians:
        """The field as C-channel feature Gaussians (exact: the decoder is linear)."""
        with torch.no_grad():
            return Gaussians(self.means, self.covariances, self.opacities, self.decoder(self.features))

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        atomic_torch_save(
            {
                "version": FIELD_VERSION,
                "state": self.state_dict(),
                "meta": meta,
                "dims": (self.features.shape[1], self.decoder.out_features),
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> tuple[FeatureField, dict[str, Any]]:
        doc = load_torch_file(path, "fit3d field cache")
        if not isinstance(doc, dict) or doc.get("version") != FIELD_VERSION:
            raise UserError("fit3d field from another version; delete it to refit", path)
        st = doc["state"]
        geo = Gaussians(st["means"], st["covariances"], st["opacities"], st["means"][:, :0])
        field = cls(geo, *doc["dims"])
        field.load_state_dict(st)
        return field, doc["meta"]


# ---- scene data ------------------------------------------------------------------------------------


def evenly_spaced(n: int, k: int) -> list[int]:
    if k >= n:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


@torch.no_grad()
def teacher_targets(scene: Scene, teacher, cfg: Fit3DConfig, batch: int = 8) -> tuple[Views, float]:
    """What a field is fitted to: ``max_views`` evenly spaced views at ``render_size`` with their teacher
    ``features`` (as the SnD teacher sees them), and the seconds the teacher took."""
    return load_scene_views_timed(
        scene,
        evenly_spaced(len(scene), cfg.max_views),
        cfg.render_size,
        teacher,
        cfg.image_size,
        cfg.mask,
        need_depth="fit3d lifts Gaussians from depth",
        batch=batch,
    )


def strided_cameras(cameras: Cameras, stride: int) -> Cameras:
    """Cameras whose pixel (i, j) centre is pixel (s*i + s//2, s*j + s//2) of the originals."""
    s = stride
    K = cameras.Ks.clone()
    K[..., 0, 0] /= s
    K[..., 1, 1] /= s
    K[..., 0, 1] /= s
    shift = 0.5 - (s // 2 + 0.5) / s
    K[..., 0, 2] = K[..., 0, 2] / s + shift
    K[..., 1, 2] = K[..., 1, 2] / s + shift
    return Cameras(K, cameras.viewmats, cameras.width // s, cameras.height // s)


def field_error(field: FeatureField, targets: Views, backend: str = "auto") -> float:
    """Mean L1 (per channel) between the field's renders and the views' teacher features over all fitted
    views, on covered pixels."""
    errs, n = 0.0, 0
    with torch.no_grad():
        for v in range(len(targets)):
            dec, alpha = field.render(targets.cameras[v : v + 1], backend)
            m = alpha[0] > 0.5
            diff = (dec[0] - targets.features[v].permute(1, 2, 0)).abs().mean(-1)
            errs += float(diff[m].sum())
            n += int(m.sum())
    return errs / max(n, 1)


def fit_field(
    targets: Views, cfg: Fit3DConfig, progress: bool = False, desc: str = "fit3d", teacher_seconds: float = 0.0
) -> tuple[FeatureField, dict[str, Any]]:
    """Optimise a field on one scene's views with teacher ``features`` (and depths, to lift its Gaussians);
    returns it and timing/loss statistics (``teacher_seconds``: what the features took, for the record)."""
    cfg.validate()
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(cfg.seed)
    V, C, R, _ = targets.features.shape
    lift_ids = evenly_spaced(V, cfg.lift_views)
    s = cfg.stride
    cams_s = strided_cameras(targets.cameras[lift_ids], s)
    depth_s = targets.depths[lift_ids][:, s // 2 :: s, s // 2 :: s]
    pix_feats = targets.features[lift_ids][:, :, s // 2 :: s, s // 2 :: s]
    geo = lift_depth(depth_s, cams_s, pix_feats, scale_factor=1.0, opacity=cfg.opacity)
    field = FeatureField(geo, cfg.feature_dim, C)
    with torch.no_grad():
        if cfg.init == "pca":
            flat = targets.features.permute(0, 2, 3, 1).reshape(-1, C)
            sub = flat[torch.randperm(flat.shape[0], generator=g)[:20000]]
            mu = sub.mean(0)
            x = (sub - mu).double()
            _, vecs = torch.linalg.eigh(x.T @ x)  # principal axes, ascending eigenvalues
            P = vecs.flip(1)[:, : cfg.feature_dim].T.float()  # (d, C)
            if P.shape[0] < cfg.feature_dim:
                P = torch.cat([P, torch.zeros(cfg.feature_dim - P.shape[0], C)])
            field.decoder.weight.copy_(P.T)
            field.decoder.bias.copy_(mu)
            field.features.copy_((geo.features - mu) @ P.T)
        else:
            field.features.normal_(0.0, 0.1, generator=g)
    opt = torch.optim.Adam(
        [{"params": [field.features], "lr": cfg.lr}, {"params": field.decoder.parameters(), "lr": cfg.decoder_lr}]
    )
    base_lrs = [grp["lr"] for grp in opt.param_groups]
    losses: list[float] = []

    def step() -> dict[str, float]:
        ids = torch.randperm(V, generator=g)[: cfg.views_per_iter].tolist()
        dec, alpha = field.render(targets.cameras[ids], cfg.renderer)
        m = alpha > 0.5
        tgt = targets.features[ids].permute(0, 2, 3, 1)
        loss = (dec - tgt).abs().mean(-1)[m].mean()
        decay = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * len(losses) / cfg.iterations))  # the last iterations polish
        for grp, lr in zip(opt.param_groups, base_lrs):
            grp["lr"] = lr * decay
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        return {"loss": losses[-1]}

    # the shared loop, for its progress bar: a field is fitted in seconds, so no checkpoint, budget or signal
    Run(
        name=desc,
        total=cfg.iterations,
        step=0,
        train_step=step,
        progress=progress,
        signals=False,
        unit="it",
        leave=False,
    )()
    stats = {
        "fit_seconds": time.perf_counter() - t0,
        "teacher_seconds": teacher_seconds,
        "gaussians": field.num_gaussians,
        "views": V,
        "iterations": cfg.iterations,
        "loss_first": losses[0] if losses else None,
        "loss_last": float(np.mean(losses[-10:])) if losses else None,
    }
    return field, stats


def fit_scene(scene: Scene, teacher, cfg: Fit3DConfig, progress: bool = False) -> tuple[FeatureField, dict[str, Any]]:
    """Teacher features of the scene's views, then :func:`fit_field`."""
    targets, seconds = teacher_targets(scene, teacher, cfg)
    return fit_field(targets, cfg, progress, desc=f"fit3d {scene.name}", teacher_seconds=seconds)


# ---- distillation targets for the trainer ------------------------------------------------------------


def field_config_of(cfg) -> Fit3DConfig:
    """The field settings of a training config (:class:`~splatdistill.distill.config.TrainConfig`, square
    sizes): what the trainer fits with and what a field's cache key is computed from (one mapping, so a
    comparison sharing fields between seeds finds the trainer's keys)."""
    f, splat = cfg.method.fit3d, cfg.method.splat
    return Fit3DConfig(
        feature_dim=f.feature_dim,
        iterations=f.iterations,
        max_views=f.views,
        lift_views=f.lift_views,
        stride=f.stride,
        opacity=splat.gaussian_opacity,
        render_size=int(cfg.data.render_size),
        image_size=int(cfg.data.image_size),
        mask=cfg.data.mask,
        renderer=splat.renderer,
        seed=cfg.run.seed,
    )


class Fit3DTargets:
    """Produces the trainer's targets for ``method=fit3d``: renders of fixed per-scene feature fields.

    Fields are fitted to the *initial* teacher (a fresh copy of ``cfg.backbone``, not the EMA teacher,
    which moves during training) for every training scene up front (cached in ``cfg.fit3d.cache`` or
    ``<out>/fit3d``), so training steps are not interrupted by fitting.
    """

    def __init__(
        self,
        cfg,
        scenes: Sequence[Scene],
        device: torch.device | str = "cpu",
        progress: bool = True,
        is_main: bool = True,
    ):
        f, splat = cfg.method.fit3d, cfg.method.splat
        if not (isinstance(cfg.data.image_size, int) and isinstance(cfg.data.render_size, int)):
            raise UserError(
                "method=fit3d fits square fields: give image_size and render_size as one integer each "
                f"(got {cfg.data.image_size} / {cfg.data.render_size})"
            )
        # the pipeline's values come from the run's own groups, so field and trainer cannot disagree
        self.fcfg = field_config_of(cfg).validate()
        self.scenes = list(scenes)
        self.backbone_spec = cfg.model.backbone
        self.min_coverage = splat.min_coverage
        self.antialias = splat.downsample == "antialias"
        self.device = torch.device(device)
        self.cache_dir = Path(f.cache) if f.cache else Path(cfg.run.out) / "fit3d"
        self.fields: dict[str, FeatureField] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self._teacher = None
        self.prefit(progress and is_main)

    def _teacher_model(self):
        if self._teacher is None:
            self._teacher = load_backbone(self.backbone_spec, device=self.device).eval()
        return self._teacher

    def field(self, scene: Scene, progress: bool = False) -> FeatureField:
        if scene.name in self.fields:
            return self.fields[scene.name]
        path = self.cache_dir / f"{scene.name}-{self.fcfg.key(self.backbone_spec, scene)}.pt"
        if path.is_file():
            field, meta = FeatureField.load(path)
        else:
            field, meta = fit_scene(scene, self._teacher_model(), self.fcfg, progress)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            field.save(path, meta)
        self.stats[scene.name] = meta
        self.fields[scene.name] = field.to(self.device).requires_grad_(False)
        return self.fields[scene.name]

    def prefit(self, progress: bool = True) -> None:
        for scene in tqdm(self.scenes, desc="fit3d: per-scene feature fields", unit="scene", disable=not progress):
            self.field(scene, progress)
        self._teacher = None  # free the frozen teacher copy

    @torch.no_grad()
    def targets(self, batch: Sample, grid: tuple[int, int], render_size: int) -> tuple[Tensor, Tensor, Tensor]:
        """(tokens (B*T, C, h, w), supervised mask (B*T, h*w), coverage (B, T, h, w)) for a trainer batch."""
        target = batch.target.at(render_size)  # (B, T) views at render resolution
        tokens, valid, coverage = [], [], []
        for i in range(len(target)):
            field = self.field(self.scenes[int(batch.scene_index[i])])
            dec, alpha = field.render(target[i].cameras.to(self.device), self.fcfg.renderer)  # (T, R, R, C), (T, R, R)
            covered = alpha > 1e-3
            feats = torch.where(covered[..., None], dec, torch.zeros_like(dec)).permute(0, 3, 1, 2)
            tok, cov, ok = tokens_from_render(feats, alpha, covered, grid, self.min_coverage, self.antialias)
            tokens.append(tok)
            coverage.append(cov)
            valid.append(ok)
        return (torch.cat(tokens), torch.cat(valid).flatten(1), torch.stack(coverage))
