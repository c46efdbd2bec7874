"""The plane sweep of :mod:`.predictor`: where reference pixels at candidate depths land in a source view,
and the matching costs (feature correlation, grayscale ZNCC) of the reference with the source sampled there."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def plane_sweep_grid(
    K_ref: Tensor, viewmat_ref: Tensor, K_src: Tensor, viewmat_src: Tensor, depths: Tensor, height: int, width: int
) -> tuple[Tensor, Tensor]:
    """Where the pixel centres of the reference view, placed at each candidate depth, land in the source.

    K_ref/K_src (..., 3, 3) are intrinsics *at this (height, width)* (pixel centres at +0.5),
    viewmats (..., 4, 4) world-to-camera, depths (D,) z-depths in the reference camera.
    Returns ``grid`` (..., D, H, W, 2) in ``grid_sample`` coordinates (align_corners=False) and the
    source-camera z (..., D, H, W) (<= 0: behind the source camera).
    """
    dev, dt = K_ref.device, K_ref.dtype
    v = torch.arange(height, device=dev, dtype=dt) + 0.5
    u = torch.arange(width, device=dev, dtype=dt) + 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    pix = torch.stack([uu, vv, torch.ones_like(uu)], dim=-1)  # (H, W, 3)
    # source-from-reference rigid transform
    rel = viewmat_src @ torch.linalg.inv(viewmat_ref)  # (..., 4, 4)
    M = K_src @ rel[..., :3, :3] @ torch.linalg.inv(K_ref)  # (..., 3, 3) maps rays to source pixels (scaled)
    tt = K_src @ rel[..., :3, 3:]  # (..., 3, 1)
    rays = torch.einsum("...ij,hwj->...hwi", M, pix)  # (..., H, W, 3)
    p = depths.to(dt)[:, None, None, None] * rays[..., None, :, :, :] + tt[..., None, None, None, :, 0]
    z = p[..., 2]
    uv = p[..., :2] / z.clamp_min(1e-6)[..., None]
    grid = torch.stack([uv[..., 0] / width * 2 - 1, uv[..., 1] / height * 2 - 1], dim=-1)
    return grid, z


def cost_volume(f_ref: Tensor, f_src: Tensor, grid: Tensor, z_src: Tensor) -> Tensor:
    """Correlation cost (N, D, h, w) of reference features (N, C, h, w) with source features (N, C, h, w)
    sampled at ``grid`` (N, D, h, w, 2); points behind the source camera or outside it get 0."""
    N, C, h, w = f_ref.shape
    D = grid.shape[1]
    sampled = F.grid_sample(
        f_src, grid.reshape(N, D * h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=False
    ).reshape(N, C, D, h, w)
    cost = (sampled * f_ref[:, :, None]).sum(1) / math.sqrt(C)
    return torch.where(z_src > 1e-3, cost, torch.zeros_like(cost))


def zncc_volume(g_ref: Tensor, g_src: Tensor, grid: Tensor, z_src: Tensor, window: int = 5) -> Tensor:
    """Zero-normalised cross-correlation (N, D, h, w) in [-1, 1] of grayscale (N, 1, h, w) windows of the
    reference with the source sampled at ``grid`` (N, D, h, w, 2); invisible points get 0."""
    N, _, h, w = g_ref.shape
    D = grid.shape[1]
    src = F.grid_sample(
        g_src, grid.reshape(N, D * h, w, 2), mode="bilinear", padding_mode="border", align_corners=False
    ).reshape(N, D, h, w)

    def box(x: Tensor) -> Tensor:
        return F.avg_pool2d(x, window, 1, window // 2, count_include_pad=False)

    mr, ms = box(g_ref), box(src)
    cov = box(src * g_ref) - ms * mr
    var = (box(g_ref * g_ref) - mr * mr).clamp_min(0) * (box(src * src) - ms * ms).clamp_min(0)
    zc = cov / (var.sqrt() + 1e-4)
    return torch.where(z_src > 1e-3, zc, torch.zeros_like(zc))
