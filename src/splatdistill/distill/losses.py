"""Losses of the student against the splatted teacher: DINO prototype cross-entropy, plain feature
losses, token agreement and the optional cross-view consistency term.

:class:`DinoLoss` and :class:`FeatureLoss` are the loss of a run as one object each: the head it needs, its
temperatures, DINO's centre and the collective that keeps the centre equal on every rank (``loss_for``
picks one by the config's ``loss``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from splatdistill.data.views import Views
from splatdistill.distill.distributed import DistInfo
from splatdistill.distill.heads import DINOHead, dino_loss, feature_loss, masked_mean, update_center
from splatdistill.geometry.warp import warp_pixels

__all__ = [
    "DinoLoss",
    "FeatureLoss",
    "cross_view_consistency",
    "dino_loss",
    "feature_loss",
    "loss_for",
    "masked_mean",
    "token_agreement",
]


def token_agreement(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> float:
    cos = F.cosine_similarity(student.flatten(2), teacher.flatten(2), dim=1)  # (N, h*w)
    m = mask.float()
    return float((cos * m).sum() / m.sum().clamp_min(1.0))


def cross_view_consistency(tokens: torch.Tensor, targets: Views) -> torch.Tensor:
    """1 - cosine between the student's tokens of target 0 and target t at the same 3D points.

    ``tokens`` (B, T, C, h, w), ``targets`` the (B, T) target views. Token centres of target 0 are
    lifted with its depth, warped into each other target, and that target's tokens are sampled
    bilinearly there; points behind the camera or outside are ignored.
    """
    B, T, C, h, w = tokens.shape
    depth = targets.depths  # (B, T, H, W)
    K, c2w = targets.cameras.Ks, targets.cameras.cam_to_world
    H, W = depth.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, device=tokens.device), torch.arange(w, device=tokens.device), indexing="ij")
    u = (xs + 0.5) * (W / w)
    v = (ys + 0.5) * (H / h)
    d = depth[:, 0][:, v.long().clamp(0, H - 1), u.long().clamp(0, W - 1)]  # (B, h, w)
    uv_a = torch.stack([u, v], -1).to(depth.dtype).reshape(1, h * w, 2).expand(B, -1, -1)
    losses = []
    for t in range(1, T):
        uv, z = warp_pixels(uv_a, d.reshape(B, h * w), K[:, 0], c2w[:, 0], K[:, t], c2w[:, t])
        uv, z = uv.reshape(B, h, w, 2), z.reshape(B, h, w)
        grid = uv / uv.new_tensor([W, H]) * 2 - 1
        ok = (z > 1e-3) & (d > 0) & (grid.abs() <= 1).all(-1)
        sampled = F.grid_sample(tokens[:, t], grid.to(tokens.dtype), mode="bilinear", align_corners=False)
        cos = F.cosine_similarity(tokens[:, 0], sampled, dim=1)
        m = ok.float()
        losses.append(((1 - cos) * m).sum() / m.sum().clamp_min(1.0))
    return torch.stack(losses).mean()


class FeatureLoss:
    """A plain feature loss (cosine, l1, mse) on the tokens; no head, no centre (an empty one, for the checkpoint)."""

    def __init__(self, m, device: torch.device, dist_info: DistInfo, autocast: Callable[[], AbstractContextManager]):
        self.kind, self.consistency_weight = m.loss, m.consistency_weight
        self.device, self.dist, self.autocast = device, dist_info, autocast
        self.center = torch.zeros(0, device=device)

    @staticmethod
    def head(m, embed_dim: int, seed: int) -> nn.Module | None:
        return None

    def term(self, s_tokens, s_logits, tgt_tokens, mask, teacher_head: nn.Module | None, update: bool):
        return feature_loss(self.kind, s_tokens.flatten(2).transpose(1, 2), tgt_tokens.flatten(2).transpose(1, 2), mask)

    def __call__(
        self,
        s_tokens: torch.Tensor,
        s_logits: torch.Tensor | None,
        tgt_tokens: torch.Tensor,
        mask: torch.Tensor,
        teacher_head: nn.Module | None,
        targets: Views | None = None,
        update: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, consistency term) of student tokens (N, C, h, w) / logits against the targets; ``targets``
        (the batch's target views) adds the cross-view term, ``update`` (training batches only) moves the centre."""
        loss = self.term(s_tokens, s_logits, tgt_tokens, mask, teacher_head, update)
        cons = torch.zeros((), device=self.device)
        if targets is not None and self.consistency_weight > 0:
            B, T = targets.images.shape[:2]
            cons = cross_view_consistency(s_tokens.unflatten(0, (B, T)), targets)
            loss = loss + self.consistency_weight * cons
        return loss, cons

    def state_dict(self) -> torch.Tensor:
        return self.center.detach().cpu().clone()

    def load_state_dict(self, center: torch.Tensor | None) -> None:
        if center is not None and center.shape == self.center.shape:
            self.center.copy_(center.to(self.center.device))


class DinoLoss(FeatureLoss):
    """DINO's cross-entropy between the teacher head's softmax of the targets and the student's log-softmax,
    with optional centering of the teacher logits (a running mean, all-reduced across ranks after each update)."""

    def __init__(self, m, device: torch.device, dist_info: DistInfo, autocast: Callable[[], AbstractContextManager]):
        super().__init__(m, device, dist_info, autocast)
        self.student_temp, self.teacher_temp, self.momentum = m.student_temp, m.teacher_temp, m.center_momentum
        self.center = torch.zeros(m.prototypes, device=device)  # all zeros and unused when center_momentum=0
        self.cosine_weight = m.cosine_weight

    @staticmethod
    def head(m, embed_dim: int, seed: int) -> nn.Module:
        """The projection head, drawn from its own stream (``seed``) so the global RNG is left as it was."""
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
            return DINOHead(
                embed_dim,
                m.prototypes,
                m.head_hidden,
                m.head_bottleneck,
                trainable_gain=m.prototype_gain == "trainable",
            )

    def term(self, s_tokens, s_logits, tgt_tokens, mask, teacher_head: nn.Module | None, update: bool):
        with torch.no_grad(), self.autocast():
            t_logits = teacher_head(tgt_tokens.flatten(2).transpose(1, 2))
        t_logits = t_logits.float()
        center = self.center if self.momentum > 0 else None
        loss = dino_loss(s_logits, t_logits, mask, self.student_temp, self.teacher_temp, center)
        if center is not None and update:  # after the loss, as DINO (the centre lags one step)
            update_center(self.center, t_logits, mask, self.momentum)
            if self.dist.joined:  # one centre for all ranks (the update is linear in the batch mean)
                dist.all_reduce(self.center)
                self.center /= self.dist.world
        if self.cosine_weight > 0:  # the features themselves too, not only their prototype distributions
            tokens = (s_tokens.flatten(2).transpose(1, 2), tgt_tokens.flatten(2).transpose(1, 2))
            loss = loss + self.cosine_weight * feature_loss("cosine", *tokens, mask)
        return loss


#: the config's ``loss`` -> its class (every other name is a plain feature loss)
LOSS_CLASSES: dict[str, type[FeatureLoss]] = {"dino": DinoLoss}


def loss_for(m) -> type[FeatureLoss]:
    """The loss class of a method config (:class:`~.config.MethodConfig`)."""
    return LOSS_CLASSES.get(m.loss, FeatureLoss)
