"""A splatting render differentiable with respect to the geometry: means, covariances, opacities and
colours (the feature renderer, :func:`~splatdistill.render.render_features`, is differentiable with
respect to the features only, which is all Splat-and-Distill's teacher side needs).

What it is for: training a feed-forward lifter from posed images alone, MVSplat-style, where the
predicted Gaussians' colours are rendered into other views and compared with the photographs.
Why hand-written: gsplat's differentiable rasteriser is CUDA-only (its CPU code calls CUDA for tile
intersection, see docs/design.md); on a GPU use ``gsplat.rasterization``, which computes the same.

How: which (pixel, Gaussian) pairs are composited, and in which order, is decided without gradient
by the compiled CPU kernels of the feature renderer (the same culling, 1/255 threshold and exclusive
1e-4 transmittance stop). Those pairs are then evaluated again with torch ops on the differentiable
EWA projection (:func:`~splatdistill.render.projection.project_gaussians`): ``alpha = min(0.999,
o exp(-sigma))``, the transmittance as a segmented cumulative sum of ``log(1 - alpha)`` per pixel, and
the colours accumulated with ``index_add``. As in 3DGS, the gradient flows through the composited
pairs; the pair selection itself is piecewise constant.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from splatdistill.render import cpu_kernels
from splatdistill.render.array_ops import NumpyOps
from splatdistill.render.composite import sorted_gaussians
from splatdistill.render.projection import EPS2D, FAR_PLANE, NEAR_PLANE, project_compiled, project_gaussians


@torch.no_grad()
def composited_pairs(
    means: Tensor,
    covariances: Tensor,
    opacities: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    eps2d: float = EPS2D,
) -> tuple[Tensor, Tensor]:
    """The composited pairs of one camera, front to back per pixel: (crow (P+1,) int64, gaussian (nnz,) int64).

    Pixel ``p``'s Gaussians are ``gaussian[crow[p]:crow[p+1]]``, nearest first, exactly the pairs the
    feature renderer composites (computed in float64).
    """
    args = [t.detach().double().cpu() for t in (means, covariances, opacities, viewmat, K)]
    p = project_compiled(
        None,
        args[0][None],
        args[1][None],
        args[2][None],
        args[3][None, None],
        args[4][None, None],
        width,
        height,
        near_plane,
        far_plane,
        eps2d,
    )
    g = sorted_gaussians(NumpyOps(torch.device("cpu")), p, 0, 0, np.float64, width, height)
    cover = np.empty(width * height)
    crow, col, _, _ = cpu_kernels.composite_band(
        g["mx"],
        g["my"],
        g["hA"],
        g["Bc"],
        g["hC"],
        g["o"],
        g["i0"],
        g["i1"],
        g["j0"],
        g["nj"],
        g["vid"].astype(np.int32),
        width,
        0,
        height,
        cover,
    )
    return torch.from_numpy(crow.astype(np.int64)), torch.from_numpy(col.astype(np.int64))


def render_differentiable(
    means: Tensor,
    covariances: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    eps2d: float = EPS2D,
) -> tuple[Tensor, Tensor]:
    """Render N Gaussians with (N, C) colours into one camera (viewmat (4, 4), K (3, 3)).

    Returns (image (H, W, C) = sum_i c_i alpha_i T_i, alpha (H, W) = 1 - T_final), differentiable with
    respect to ``means`` (N, 3), ``covariances`` (N, 3, 3), ``opacities`` (N,) and ``colors``.
    Numerically the feature renderer's result (same pairs, same formulas).
    """
    P = width * height
    crow, gid = composited_pairs(means, covariances, opacities, viewmat, K, width, height, near_plane, far_plane, eps2d)
    dev = means.device
    crow, gid = crow.to(dev), gid.to(dev)
    counts = crow[1:] - crow[:-1]
    pix = torch.repeat_interleave(torch.arange(P, device=dev), counts)
    proj = project_gaussians(
        means, covariances, viewmat[None], K[None], width, height, None, near_plane, far_plane, eps2d
    )
    m2, conic = proj.means2d[0][gid], proj.conics[0][gid]  # (nnz, 2), (nnz, 3)
    centre = torch.stack([(pix % width).to(m2.dtype) + 0.5, (pix // width).to(m2.dtype) + 0.5], -1)
    d = m2 - centre
    sigma = 0.5 * (conic[:, 0] * d[:, 0] ** 2 + conic[:, 2] * d[:, 1] ** 2) + conic[:, 1] * d[:, 0] * d[:, 1]
    alpha = (opacities[gid] * torch.exp(-sigma)).clamp(max=cpu_kernels.MAX_ALPHA)
    log1m = torch.log1p(-alpha.double())
    csum = torch.cumsum(log1m, 0)
    start = torch.where(crow[:-1] > 0, torch.cat([csum.new_zeros(1), csum])[crow[:-1]], csum.new_zeros(()))
    log_t_before = csum - log1m - torch.repeat_interleave(start, counts)  # exclusive, per pixel
    weights = (alpha.double() * torch.exp(log_t_before)).to(colors.dtype)
    image = torch.zeros(P, colors.shape[-1], dtype=colors.dtype, device=dev).index_add(
        0, pix, weights[:, None] * colors[gid]
    )
    cover = torch.zeros(P, dtype=colors.dtype, device=dev).index_add(0, pix, weights)
    return image.reshape(height, width, -1), cover.reshape(height, width)
