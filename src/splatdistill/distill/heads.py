"""Projection head and losses of Splat-and-Distill.

The DINO-style head (docs/design.md, "The method", step 8): a 3-layer MLP with GELU to a bottleneck, L2
normalisation, and a weight-normalised linear layer onto K prototypes. The loss per token is the
cross-entropy between the teacher's softmax and the student's log-softmax; only tokens the splatted
target covers are counted (a masked mean, rather than the reference's zeroed tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """``trainable_gain`` lets the weight-norm gain of each prototype learn (the reference code); DINO
    itself (``norm_last_layer``) keeps it at 1, which bounds the logits to cosines in [-1, 1]."""

    def __init__(
        self,
        in_dim: int,
        prototypes: int = 65536,
        hidden: int = 2048,
        bottleneck: int = 256,
        trainable_gain: bool = False,
    ):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        last = nn.Linear(bottleneck, prototypes, bias=False)
        self.last = nn.utils.parametrizations.weight_norm(last)
        # gain 1 per prototype; DINO's norm_last_layer fixes it there, so only directions are learned
        self.last.parametrizations.weight.original0.data.fill_(1.0)
        self.last.parametrizations.weight.original0.requires_grad_(trainable_gain)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., prototypes) logits."""
        z = F.normalize(self.mlp(tokens), dim=-1, eps=1e-6)
        return self.last(z)


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def dino_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    student_temp: float = 1.0,
    teacher_temp: float = 1.0,
    center: torch.Tensor | None = None,
) -> torch.Tensor:
    """Masked mean over tokens of CE(softmax((teacher - center) / tt), log_softmax(student / ts)); logits (..., K).
    ``center`` (K,) is DINO's running mean of the teacher logits (None: no centering, as the reference)."""
    teacher_logits = teacher_logits.detach().float()
    if center is not None:
        teacher_logits = teacher_logits - center.float()
    targets = F.softmax(teacher_logits / teacher_temp, dim=-1)
    log_probs = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    per_token = -(targets * log_probs).sum(dim=-1)
    return masked_mean(per_token, mask)


def feature_loss(
    kind: str, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Plain feature losses on (..., C) tokens: cosine (1 - cos), l1 (mean |d|), mse (mean d^2)."""
    teacher = teacher.detach()
    if kind == "cosine":
        per_token = 1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=1e-6)
    elif kind == "l1":
        per_token = (student - teacher).abs().float().mean(dim=-1)
    elif kind == "mse":
        per_token = (student - teacher).float().pow(2).mean(dim=-1)
    else:
        raise ValueError(f"unknown feature loss {kind!r}")
    return masked_mean(per_token, mask)


@torch.no_grad()
def update_center(
    center: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None, momentum: float
) -> torch.Tensor:
    """DINO's centre update, in place: ``c <- m c + (1 - m) mean(teacher logits)`` over the supervised tokens."""
    flat = teacher_logits.detach().float().reshape(-1, teacher_logits.shape[-1])
    if mask is not None:
        flat = flat[mask.reshape(-1).bool()]
    if len(flat):
        center.mul_(momentum).add_(flat.mean(0).to(center.dtype), alpha=1.0 - momentum)
    return center
