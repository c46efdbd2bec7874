"""The depth warp: pixels of view A with their depth -> 3D -> view B (the one implementation).

Used wherever views are related through depth: the dataset checks (reprojection, label transfer),
the view sampler's overlap, the predictor's training pairs, ground-truth correspondences and the
cross-view consistency loss. :func:`warp_pixels` does unproject -> transform -> project;
:func:`depth_at` looks B's depth up where the points land, for the caller's occlusion test.
Works on torch tensors with any leading batch dims; :func:`warp_pixels_np` wraps it for NumPy
callers (float64).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def warp_pixels(
    uv_a: Tensor, depth_a: Tensor, K_a: Tensor, cam_to_world_a: Tensor, K_b: Tensor, cam_to_world_b: Tensor
) -> tuple[Tensor, Tensor]:
    """Pixel coordinates (+0.5 convention) ``uv_a`` (..., N, 2) of A at z-depth ``depth_a`` (..., N) into B.

    Returns (uv_b (..., N, 2), z_b (..., N)): where the points land in B and their z-depth in B's
    camera. Points at or behind B's centre get finite but meaningless ``uv_b``: test ``z_b > near``.
    """
    dt = depth_a.dtype
    ones = torch.ones_like(uv_a[..., :1])
    rays = torch.cat([uv_a.to(dt), ones.to(dt)], -1) @ torch.linalg.inv(K_a.to(dt)).transpose(-1, -2)
    cam_a = rays * depth_a[..., None]
    a_to_b = torch.linalg.inv(cam_to_world_b.to(dt)) @ cam_to_world_a.to(dt)
    cam_b = cam_a @ a_to_b[..., :3, :3].transpose(-1, -2) + a_to_b[..., None, :3, 3]
    z = cam_b[..., 2]
    proj = cam_b @ K_b.to(dt).transpose(-1, -2)
    safe = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    return proj[..., :2] / safe[..., None], z


def depth_at(depth_b: Tensor, uv_b: Tensor, z_b: Tensor, near: float = 1e-6) -> tuple[Tensor, Tensor]:
    """(inside (N,), B's depth (N,) at the landing pixel, 0 outside) for points of one view pair.

    ``inside``: in front of B (``z_b > near``) and within its image; the pixel is ``floor(uv_b)``.
    """
    H, W = depth_b.shape[-2:]
    col = torch.floor(uv_b[..., 0]).long()
    row = torch.floor(uv_b[..., 1]).long()
    inside = (z_b > near) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    zb = torch.zeros_like(z_b)
    zb[inside] = depth_b[row[inside], col[inside]].to(zb.dtype)
    return inside, zb


def pixel_centres(height: int, width: int, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) integer grids of every ``step``-th pixel, as ``np.mgrid`` gives them."""
    return np.mgrid[0:height:step, 0:width:step]


def warp_pixels_np(
    uv_a: np.ndarray,
    depth_a: np.ndarray,
    K_a: np.ndarray,
    cam_to_world_a: np.ndarray,
    K_b: np.ndarray,
    cam_to_world_b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`warp_pixels` on NumPy arrays, in float64."""

    def t(x):
        return torch.from_numpy(np.asarray(x, dtype=np.float64))

    uv, z = warp_pixels(t(uv_a), t(depth_a), t(K_a), t(cam_to_world_a), t(K_b), t(cam_to_world_b))
    return uv.numpy(), z.numpy()


def depth_at_np(
    depth_b: np.ndarray, uv_b: np.ndarray, z_b: np.ndarray, near: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`depth_at` on NumPy arrays."""
    inside, zb = depth_at(torch.from_numpy(np.asarray(depth_b)), torch.from_numpy(uv_b), torch.from_numpy(z_b), near)
    return inside.numpy(), zb.numpy()


def view_warp(view_a, view_b, step: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Warp every ``step``-th pixel of ``view_a`` with valid depth into ``view_b`` (two ``ViewData``).

    Returns (valid (h, w) bool mask of the grid's pixels with depth, uv_a (N, 2), uv_b (N, 2), z_b (N,))
    for the N valid pixels, in the mask's raster order.
    """
    H, W = view_a.depth.shape
    rows, cols = pixel_centres(H, W, step)
    d = view_a.depth[rows, cols].astype(np.float64)
    valid = d > 0
    uv_a = np.stack([cols[valid] + 0.5, rows[valid] + 0.5], 1).astype(np.float64)
    uv_b, z_b = warp_pixels_np(uv_a, d[valid], view_a.K, view_a.cam_to_world, view_b.K, view_b.cam_to_world)
    return valid, uv_a, uv_b, z_b
