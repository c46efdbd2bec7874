"""Losses of the student against the splatted teacher: DINO prototype cross-entropy, plain feature
losses, token agreement and the optional cross-view consistency term."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from splatdistill.data.views import Views
from splatdistill.distill.heads import dino_loss, feature_loss, masked_mean  # noqa: F401  (the loss family)
from splatdistill.geometry.warp import warp_pixels


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
