"""The paper's probe protocol (``suite=paper``): the heads, losses and metrics of the evaluation code the
Splat-and-Distill release runs (FiT3D's copy of the DINOv2 depth/segmentation probes; Probe3D's normals).

What differs from the fast protocol of :mod:`splatdistill.eval.probes` (docs/evaluation.md has the table):

- depth: patch tokens concatenated with the CLS token; logits upsampled 4x (bilinear) before the bin
  normalisation, which is ReLU + 0.1 then division by the sum (DINOv2's ``norm_strategy="linear"``), not
  a softmax; 256 bin *values* spaced from min to max depth inclusive (``linspace``); the scale-invariant
  loss pooled over the whole batch, ``sqrt(var(g) + 0.15 mean(g)^2)`` with ``g = log(d + 1e-3) - log(gt + 1e-3)``
  and the first 100 steps on ``sqrt(0.15 mean(g)^2)`` alone (its warm-up); the gradient loss on four
  scales (strides 1, 2, 4, 6) of two-pixel differences, weight 0.5; metrics per image, then averaged,
  on ``min_depth < gt < max_depth`` inside the dataset's evaluation crop;
- normals: the uncertainty loss of Bae et al. (AngMF NLL) alone, through the angle (Probe3D's);
- segmentation: mIoU as mmsegmentation computes it, the mean over classes whose union is non-empty.

The paper's metrics (per-image depth metrics inside an evaluation crop, mmsegmentation's mIoU) are pure
numpy and live in :mod:`splatdistill.eval.metrics`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from splatdistill.eval.probes import (
    DepthProbe,
    LinearHead,
    NormalProbe,
    ProbeData,
    ProbeInputs,
    _seeded,
    _to_grid,
    _train,
    _up,
    train_normal_probe,
)

if TYPE_CHECKING:
    from splatdistill.eval.features import TokenKind
    from splatdistill.eval.probes import ProbeConfig

#: The tokens each task reads in the paper's evaluation code. Its depth probe (FiT3D's copy of DINOv2's,
#: ``get_intermediate_layers(..., norm=False)`` with the CLS token) and Probe3D's normal probe and matcher
#: (the raw output of the last block) read the tokens *before* the final LayerNorm; its segmentation probe
#: reads the normalised ones. Consistency is not in the paper and keeps the trainer's (final) tokens.
PAPER_TOKENS: dict[str, TokenKind] = {
    "depth": "raw",
    "normals": "raw",
    "segmentation": "final",
    "correspondence": "raw",
    "consistency": "final",
}
EPS_LOG = 1e-3
WARM_UP_STEPS = 100
UPSAMPLE = 4
LINEAR_EPS = 0.1  # norm_strategy="linear": p = (relu(logit) + 0.1) / sum
SCALE_INVARIANCE = 0.15  # the 1 - lambda of the fast protocol's lambda = 0.85


def paper_bins(cfg: ProbeConfig) -> torch.Tensor:
    """256 bin values from min to max depth inclusive (the reference's ``bins_strategy="UD"``)."""
    return torch.linspace(cfg.min_depth, cfg.max_depth, cfg.depth_bins, dtype=torch.float64).float()


class PaperDepthProbe(DepthProbe):
    """Linear head on [patch ; CLS], logits upsampled 4x, ReLU + 0.1 normalised bins, depth upsampled."""

    def __call__(self, x: ProbeInputs, size: tuple[int, int]) -> torch.Tensor:
        logits = _to_grid(self.head(x), x.grid)  # (B, bins, h, w)
        logits = F.interpolate(logits, scale_factor=UPSAMPLE, mode="bilinear", align_corners=False)
        # sum_k c_k (r_k + 0.1) / sum_k (r_k + 0.1) with r = relu(logits), written so that the normalised
        # (B, bins, 4h, 4w) probabilities are never materialised: the same value, a third of the memory.
        r = torch.relu(logits)
        num = torch.einsum("bkhw,k->bhw", r, self.centres) + LINEAR_EPS * self.centres.sum()
        depth = num / (r.sum(dim=1) + LINEAR_EPS * r.shape[1])
        return _up(depth[:, None], size)[:, 0]


def paper_sig_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, warm_up: bool) -> torch.Tensor:
    """The reference's SigLoss over every valid pixel of the batch (one pool, not per image)."""
    if not valid.any():
        return pred.sum() * 0
    g = torch.log(pred[valid] + EPS_LOG) - torch.log(gt[valid] + EPS_LOG)
    if warm_up:
        return torch.sqrt(SCALE_INVARIANCE * g.mean() ** 2 + 1e-12)
    var = g.var() if g.numel() > 1 else g.new_zeros(())
    return torch.sqrt(var + SCALE_INVARIANCE * g.mean() ** 2 + 1e-12)


def paper_gradient_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Multi-scale gradient matching of the log-depth residual (strides 1, 2, 4, 6; two-pixel steps), per image.

    The reference squeezes the batch axis away and then slices it like a row axis when a batch holds more
    than one image; here every image of the batch gets the loss the reference gives a batch of one.
    """
    total = pred.new_zeros(pred.shape[0])
    for stride in (1, 2, 4, 6):
        p, t, m = pred[:, ::stride, ::stride], gt[:, ::stride, ::stride], valid[:, ::stride, ::stride].to(pred.dtype)
        n = m.sum(dim=(1, 2))
        diff = (torch.log(p + EPS_LOG) - torch.log(t + EPS_LOG)) * m
        v = ((diff[:, :-2] - diff[:, 2:]).abs() * m[:, :-2] * m[:, 2:]).sum(dim=(1, 2))
        h = ((diff[:, :, :-2] - diff[:, :, 2:]).abs() * m[:, :, :-2] * m[:, :, 2:]).sum(dim=(1, 2))
        total = total + torch.where(n > 0, (v + h) / n.clamp_min(1), 0.0)
    return total.sum() / pred.shape[0]


def train_paper_depth_probe(x: ProbeData, gt_depth: torch.Tensor, cfg: ProbeConfig) -> PaperDepthProbe:
    """Fit the paper's depth probe; ``gt_depth`` (N, Hl, Wl) on the loss grid, 0 = invalid. CLS is used
    when the features have one (the reference concatenates it)."""
    head = _seeded(cfg.seed, lambda: LinearHead(x.channels, cfg.depth_bins, x.cls_channels))
    probe = PaperDepthProbe(head, paper_bins(cfg), [])  # type: ignore[arg-type]
    size = tuple(gt_depth.shape[-2:])
    valid_all = gt_depth > 0
    step = [0]

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        pred = probe(x.subset(idx), size)
        gt, valid = gt_depth[idx], valid_all[idx]
        warm = step[0] < WARM_UP_STEPS
        step[0] += 1
        return paper_sig_loss(pred, gt, valid, warm) + cfg.grad_weight * paper_gradient_loss(pred, gt, valid)

    probe.losses = _train(head, len(x), loss_fn, cfg, cfg.depth_lr, "depth probe (paper)")
    return probe


# -------------------------------------------------------------------------------------------- normals


def angmf_nll(out: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Bae et al.'s AngMF negative log-likelihood, the normal probe's only loss in Probe3D.

    ``out`` (B, 4, H, W): unnormalised normal + raw concentration, kappa = elu(raw) + 1 + 0.01.
    """
    n = F.normalize(out[:, :3], dim=1)
    kappa = F.elu(out[:, 3]) + 1.0 + 0.01
    cos = (n * gt).sum(1).clamp(-1 + 1e-4, 1 - 1e-4)  # Probe3D clamps the cosine at 1e-4
    nll = -torch.log(kappa**2 + 1) + kappa * torch.acos(cos) + torch.log1p(torch.exp(-kappa * math.pi))
    return nll[valid].mean() if valid.any() else out.sum() * 0


def paper_normal_upsample(grid_out: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Probe3D's path from tokens to pixels: the head's input upsampled 4x (bilinear; it commutes with the
    1x1 conv, so the outputs are upsampled here), then bicubic with ``align_corners=True`` to the target."""
    x = F.interpolate(grid_out, scale_factor=UPSAMPLE, mode="bilinear", align_corners=False)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=True)


def train_paper_normal_probe(x: ProbeData, gt_normals: torch.Tensor, cfg: ProbeConfig) -> NormalProbe:
    """Probe3D's linear normal probe: 4 outputs, the AngMF loss alone, its upsampling."""
    return train_normal_probe(x, gt_normals, cfg, loss=angmf_nll, upsample=paper_normal_upsample)
