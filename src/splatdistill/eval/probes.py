"""Linear probes on frozen patch features: depth (256-bin classification), normals (+ uncertainty) and
semantic segmentation (BatchNorm + 1x1 conv), sized to train in seconds on a CPU.

Training works on cached feature grids (N, C, h, w) and ground truth already sampled onto a fixed
"loss grid" (a few times finer than the token grid); the head's output is bilinearly upsampled to that
grid for the loss, and to each view's full ground-truth resolution for the metrics. Depth and normal
heads see per-channel standardised features (train-split statistics folded into the head, so the probe
stays linear and the same learning rate suits backbones whose features have different scales).
Everything is seeded; two identical calls give identical numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

if TYPE_CHECKING:  # for annotations only (the config imports nothing heavy)
    from splatdistill.eval.config import EvalConfig


@dataclass
class ProbeConfig:
    """Training knobs shared by the three probes."""

    steps: int = 300
    batch_size: int = 16
    # Measured on rooms (DINOv2 ViT-S/14 features, 300 steps): the 256-way depth softmax wants a
    # smaller step than the 4- and K-channel heads (docs/evaluation.md).
    depth_lr: float = 2e-3
    normals_lr: float = 1e-2
    seg_lr: float = 1e-2
    weight_decay: float = 1e-4
    depth_bins: int = 256
    min_depth: float = 0.01
    max_depth: float = 10.0
    silog_lambda: float = 0.85
    grad_weight: float = 0.5
    depth_use_cls: bool = False  # protocol: True; off by default on small datasets (see docs/evaluation.md)
    suite: str = "fast"  # "paper": the heads and losses of eval/paper_probes.py
    depth_crop: str = "none"
    normals_crop: str = "none"
    seed: int = 0
    progress: bool = True


@dataclass
class ProbeInputs:
    """Standardised, token-major features: ``tokens`` (N, h*w, C), ``cls`` (N, C) or None, grid (h, w)."""

    tokens: torch.Tensor
    cls: torch.Tensor | None
    grid: tuple[int, int]

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def channels(self) -> int:
        return int(self.tokens.shape[2])

    def subset(self, idx: torch.Tensor | slice) -> ProbeInputs:
        return ProbeInputs(self.tokens[idx], None if self.cls is None else self.cls[idx], self.grid)

    def without_cls(self) -> ProbeInputs:
        return ProbeInputs(self.tokens, None, self.grid)

    @property
    def cls_channels(self) -> int | None:
        return None if self.cls is None else int(self.cls.shape[1])


def _channel_stats(x: torch.Tensor, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std of (N, C, ...) in float64, a chunk of N at a time: a dataset's
    features never get a float64 copy."""
    dims = [0] + list(range(2, x.ndim))
    count = x.numel() // x.shape[1]
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        total += x[start : start + chunk].double().sum(dim=dims)
    mean = total / count
    shape = (1, -1) + (1,) * (x.ndim - 2)
    sq = torch.zeros_like(total)
    for start in range(0, x.shape[0], chunk):
        sq += ((x[start : start + chunk].double() - mean.view(shape)) ** 2).sum(dim=dims)
    std = torch.sqrt(sq / max(count - 1, 1)) if count > 1 else torch.ones_like(total)
    return mean, std


class Standardiser:
    """Per-channel (x - mean) / std with train-split statistics, shared by all probes of a backbone.

    It is a fixed affine map, so a linear head on its output is still a linear probe of the raw
    features; it lets one learning rate suit backbones whose features have very different scales, and
    the token-major layout turns every 1x1 conv into a plain matrix product (about twice as fast on CPU).
    """

    def __init__(self, patch: torch.Tensor, cls: torch.Tensor | None = None):
        mean, std = _channel_stats(patch)
        self.mean, self.std = mean.float(), std.float().clamp_min(1e-6)
        self.cls_mean = self.cls_std = None
        if cls is not None:
            cls_mean, cls_std = _channel_stats(cls)
            self.cls_mean = cls_mean.float()
            self.cls_std = cls_std.float().clamp_min(1e-6) if cls.shape[0] > 1 else torch.ones_like(self.cls_mean)

    def tokens(self, patch: torch.Tensor) -> torch.Tensor:
        """(n, C, h, w) -> standardised token-major (n, h*w, C) float32."""
        return ((patch.flatten(2).transpose(1, 2) - self.mean) / self.std).contiguous()

    def class_token(self, cls: torch.Tensor | None) -> torch.Tensor | None:
        if cls is None or self.cls_mean is None:
            return None
        return (cls - self.cls_mean) / self.cls_std

    def __call__(self, patch: torch.Tensor, cls: torch.Tensor | None = None) -> StandardisedFeatures:
        return StandardisedFeatures(patch, cls, self)


@dataclass
class StandardisedFeatures:
    """A feature set read through a :class:`Standardiser`: ``subset`` gives standardised
    :class:`ProbeInputs` of a minibatch, so a dataset's features are held once, in their stored precision,
    never as a standardised float32 copy."""

    patch: torch.Tensor  # (N, C, h, w) as extracted (float16)
    cls: torch.Tensor | None
    std: Standardiser
    with_cls: bool = True

    def __len__(self) -> int:
        return int(self.patch.shape[0])

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.patch.shape[2]), int(self.patch.shape[3])

    @property
    def channels(self) -> int:
        return int(self.patch.shape[1])

    def subset(self, idx: torch.Tensor | slice) -> ProbeInputs:
        cls = self.std.class_token(self.cls[idx]) if self.with_cls and self.cls is not None else None
        return ProbeInputs(self.std.tokens(self.patch[idx]), cls, self.grid)

    def without_cls(self) -> StandardisedFeatures:
        return StandardisedFeatures(self.patch, self.cls, self.std, with_cls=False)

    @property
    def cls_channels(self) -> int | None:
        return (
            int(self.cls.shape[1]) if self.with_cls and self.cls is not None and self.std.cls_mean is not None else None
        )


#: What the probes train and predict on: standardised features of a dataset, or a ready minibatch.
ProbeData = ProbeInputs | StandardisedFeatures


def as_batch(x: ProbeData) -> ProbeInputs:
    """Standardised token-major inputs of every view of ``x``."""
    return x.subset(slice(None)) if isinstance(x, StandardisedFeatures) else x


def _to_grid(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, K) token-major values -> (B, K, h, w) image layout."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], grid[0], grid[1])


class LinearHead(nn.Module):
    """A linear map of each standardised patch token, plus (optionally) a linear map of the CLS token
    added at every position: identical to a 1x1 conv on [patch ; CLS] without materialising it."""

    def __init__(self, in_ch: int, out_ch: int, cls_ch: int | None = None):
        super().__init__()
        self.proj = nn.Linear(in_ch, out_ch)
        self.cls_proj = None if cls_ch is None else nn.Linear(cls_ch, out_ch, bias=False)

    def forward(self, x: ProbeData) -> torch.Tensor:
        """Token-major outputs (B, h*w, out_ch)."""
        x = as_batch(x)
        out = self.proj(x.tokens)
        if self.cls_proj is not None:
            if x.cls is None:
                raise ValueError("this head was trained with CLS tokens; pass them")
            out = out + self.cls_proj(x.cls)[:, None, :]
        return out


class SegHead(nn.Module):
    """BatchNorm + 1x1 conv, the segmentation probe of the protocol (on token-major features)."""

    def __init__(self, in_ch: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_ch)
        self.proj = nn.Linear(in_ch, num_classes)

    def forward(self, x: ProbeData) -> torch.Tensor:
        x = as_batch(x)
        b, t, c = x.tokens.shape
        y = self.proj(self.bn(x.tokens.reshape(b * t, c))).reshape(b, t, -1)
        return _to_grid(y, x.grid)


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def bin_centres(cfg: ProbeConfig) -> torch.Tensor:
    """Centres of ``depth_bins`` uniform bins over [min_depth, max_depth]."""
    edges = torch.linspace(cfg.min_depth, cfg.max_depth, cfg.depth_bins + 1, dtype=torch.float64)
    return (0.5 * (edges[1:] + edges[:-1])).float()


def logits_to_depth(logits: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Expected depth under softmax over the last (bin) axis: (..., bins) -> (...)."""
    return logits.softmax(dim=-1) @ centres


def silog_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, lam: float) -> torch.Tensor:
    """Scale-invariant log loss per image, sqrt(E[g^2] - lam E[g]^2) with g = log pred - log gt, averaged.

    With lam < 1 the absolute scale still carries a small penalty, so a metric-depth probe can learn it.
    """
    g = torch.where(valid, torch.log(pred.clamp_min(1e-6)) - torch.log(gt.clamp_min(1e-6)), 0.0)
    n = valid.flatten(1).sum(1).clamp_min(1)
    m1 = g.flatten(1).sum(1) / n
    m2 = (g**2).flatten(1).sum(1) / n
    per_image = torch.sqrt((m2 - lam * m1**2).clamp_min(1e-8))
    has = valid.flatten(1).any(1)
    return per_image[has].mean() if has.any() else pred.sum() * 0


def gradient_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean absolute x/y finite difference of the log-depth residual where both neighbours are valid."""
    g = torch.where(valid, torch.log(pred.clamp_min(1e-6)) - torch.log(gt.clamp_min(1e-6)), 0.0)
    vx = valid[..., :, 1:] & valid[..., :, :-1]
    vy = valid[..., 1:, :] & valid[..., :-1, :]
    dx = (g[..., :, 1:] - g[..., :, :-1]).abs() * vx
    dy = (g[..., 1:, :] - g[..., :-1, :]).abs() * vy
    count = vx.sum() + vy.sum()
    return (dx.sum() + dy.sum()) / count.clamp_min(1)


def normal_loss(out: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Loss of the normal probe: angular error + L2 on the raw vector + AngMF NLL for the uncertainty.

    ``out`` is (B, 4, H, W): an unnormalised normal and a raw concentration kappa. Per pixel
    - ``theta``, the angle between the normalised prediction and the ground truth (the angular loss);
    - ``|out_xyz - n|^2`` on the *unnormalised* vector: convex in the probe's weights, it pulls the
      output towards the conditional mean normal where the features are ambiguous. Without it a linear
      probe trained on angles alone stalls: on rooms with DINOv2 features the held-out mean error was
      41 degrees with theta alone, 52 with the pure AngMF NLL, and 26 with this sum (docs/evaluation.md);
    - the AngMF negative log-likelihood of Bae et al. 2021 for kappa, with theta detached so the
      uncertainty explains the error instead of reshaping the direction:
      ``-log(kappa^2 + 1) + kappa * theta + log(1 + exp(-kappa * pi))``.
    """
    n = F.normalize(out[:, :3], dim=1)
    kappa = F.elu(out[:, 3]) + 1.0 + 0.01
    cos = (n * gt).sum(1).clamp(-1 + 1e-6, 1 - 1e-6)
    theta = torch.acos(cos)
    l2 = ((out[:, :3] - gt) ** 2).sum(1)
    nll = -torch.log(kappa**2 + 1) + kappa * theta.detach() + torch.log1p(torch.exp(-kappa * math.pi))
    return (theta + l2 + nll)[valid].mean() if valid.any() else out.sum() * 0


def _train(
    head: nn.Module, n: int, loss_fn: Callable[[torch.Tensor], torch.Tensor], cfg: ProbeConfig, lr: float, desc: str
) -> list[float]:
    """Adam with cosine decay on random minibatches drawn by a seeded generator; returns the loss curve."""

    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / max(cfg.steps, 1)))
    )
    g = torch.Generator().manual_seed(cfg.seed + 1)
    head.train()
    losses = []
    bs = min(cfg.batch_size, n)
    perm = torch.randperm(n, generator=g)
    pos = 0
    for _ in tqdm(range(cfg.steps), desc=desc, unit="step", disable=not cfg.progress, leave=False):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos : pos + bs]
        pos += bs
        loss = loss_fn(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    head.eval()
    return losses


def _seeded(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


# ---------------------------------------------------------------------------------------------- depth


@dataclass
class DepthProbe:
    head: LinearHead
    centres: torch.Tensor
    losses: list[float]

    def __call__(self, x: ProbeInputs, size: tuple[int, int]) -> torch.Tensor:
        """Depth (B, H, W) in metres at ``size``: the bin expectation per token, upsampled bilinearly.

        Taking the expectation before upsampling keeps the upsampled tensor at one channel instead of
        256, which is what makes the probe cheap on a CPU (the two orders agree inside smooth regions).
        """
        depth = logits_to_depth(self.head(x), self.centres)  # (B, h*w)
        return _up(depth.view(-1, 1, *x.grid), size)[:, 0]

    @torch.no_grad()
    def predict(self, x: ProbeInputs, size: tuple[int, int]) -> torch.Tensor:
        self.head.eval()
        return self(x, size)


def train_depth_probe(x: ProbeData, gt_depth: torch.Tensor, cfg: ProbeConfig) -> DepthProbe:
    """Fit the depth probe. ``gt_depth`` is (N, Hl, Wl) on the loss grid, 0 = invalid."""
    if not cfg.depth_use_cls:
        x = x.without_cls()
    head = _seeded(cfg.seed, lambda: LinearHead(x.channels, cfg.depth_bins, x.cls_channels))
    probe = DepthProbe(head, bin_centres(cfg), [])  # type: ignore[arg-type]
    size = tuple(gt_depth.shape[-2:])
    valid_all = (gt_depth > 0) & (gt_depth <= cfg.max_depth)

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        pred = probe(x.subset(idx), size)
        gt, valid = gt_depth[idx], valid_all[idx]
        return silog_loss(pred, gt, valid, cfg.silog_lambda) + cfg.grad_weight * gradient_loss(pred, gt, valid)

    probe.losses = _train(head, len(x), loss_fn, cfg, cfg.depth_lr, "depth probe")
    return probe


# -------------------------------------------------------------------------------------------- normals


@dataclass
class NormalProbe:
    head: LinearHead
    losses: list[float]
    upsample: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] = _up  # token grid -> pixels

    @torch.no_grad()
    def predict(self, x: ProbeInputs, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit normals (B, 3, H, W) in the camera frame and the concentration kappa (B, H, W)."""
        self.head.eval()
        out = self.upsample(_to_grid(self.head(x), x.grid), size)
        return F.normalize(out[:, :3], dim=1), F.elu(out[:, 3]) + 1.01


def train_normal_probe(
    x: ProbeData,
    gt_normals: torch.Tensor,
    cfg: ProbeConfig,
    loss: Callable[..., torch.Tensor] = normal_loss,
    upsample: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] = _up,
) -> NormalProbe:
    """Fit the normal probe. ``gt_normals`` is (N, 3, Hl, Wl) unit vectors on the loss grid, 0 = invalid.
    ``loss`` and ``upsample`` default to the fast protocol's (the paper's: eval/paper_probes.py)."""
    head = _seeded(cfg.seed, lambda: LinearHead(x.channels, 4))
    size = tuple(gt_normals.shape[-2:])
    valid_all = gt_normals.norm(dim=1) > 0.5

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        out = upsample(_to_grid(head(x.subset(idx)), x.grid), size)
        return loss(out, gt_normals[idx], valid_all[idx])

    losses = _train(head, len(x), loss_fn, cfg, cfg.normals_lr, "normal probe")
    return NormalProbe(head, losses, upsample)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- segmentation


@dataclass
class SegProbe:
    head: SegHead
    losses: list[float]

    @torch.no_grad()
    def predict(self, x: ProbeInputs, size: tuple[int, int]) -> torch.Tensor:
        """Class index (B, H, W) from logits upsampled to ``size``."""
        self.head.eval()
        return _up(self.head(x), size).argmax(1)


def train_seg_probe(x: ProbeData, gt_labels: torch.Tensor, num_classes: int, cfg: ProbeConfig) -> SegProbe:
    """Fit the segmentation probe. ``gt_labels`` is (N, Hl, Wl) int64 on the loss grid, -1 = ignore."""
    head = _seeded(cfg.seed, lambda: SegHead(x.channels, num_classes))
    size = tuple(gt_labels.shape[-2:])

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        logits = _up(head(x.subset(idx)), size)
        target = gt_labels[idx]
        if not (target >= 0).any():
            return logits.sum() * 0
        return F.cross_entropy(logits, target, ignore_index=-1)

    losses = _train(head, len(x), loss_fn, cfg, cfg.seg_lr, "segmentation probe")
    return SegProbe(head, losses)  # type: ignore[arg-type]


def probe_settings(cfg: EvalConfig) -> ProbeConfig:
    """The probe settings of an evaluation config."""
    return ProbeConfig(
        steps=cfg.probe.probe_steps,
        batch_size=cfg.probe.probe_batch,
        depth_lr=cfg.probe.depth_lr,
        normals_lr=cfg.probe.normals_lr,
        seg_lr=cfg.probe.seg_lr,
        depth_bins=cfg.probe.depth_bins,
        min_depth=cfg.probe.min_depth,
        max_depth=cfg.probe.max_depth,
        depth_use_cls=cfg.probe.depth_use_cls,
        suite=cfg.run.suite,
        depth_crop=cfg.probe.depth_crop,
        normals_crop=cfg.probe.normals_crop,
        seed=cfg.run.seed,
        progress=cfg.run.progress,
    )
