"""EWA projection of 3D Gaussians into cameras, exactly as gsplat 1.5's CUDA kernel does it
(Jacobian point clamped to 1.3x the field of view, 0.3 px^2 low-pass, near/far culling,
opacity-aware extent); torch ops, and the compiled CPU kernel in slices on the worker threads."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from splatdistill.render import cpu_kernels
from splatdistill.render.array_ops import TorchOps
from splatdistill.render.cpu_kernels import ALPHA_THRESHOLD
from splatdistill.render.workers import map_on, project_slice

EPS2D = 0.3
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
#: gsplat's cap on the bounding-box extent, in marginal standard deviations.
MAX_EXTEND = 3.33


@dataclass
class Projection:
    """Gaussians projected into cameras, gsplat layout (..., V, N, ...)."""

    means2d: Tensor  # (..., V, N, 2) pixel coordinates of the means
    conics: Tensor  # (..., V, N, 3) inverse 2D covariance (xx, xy, yy)
    depths: Tensor  # (..., V, N) camera z
    radii: Tensor  # (..., V, N, 2) int32 opacity-aware bounding-box half sizes, 0 = culled
    cov2d: Tensor  # (..., V, N, 3) 2D covariance after the low-pass (xx, xy, yy)

    @property
    def visible(self) -> Tensor:
        return self.radii[..., 0] > 0


def project_gaussians(
    means: Tensor,
    covariances: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    opacities: Tensor | None = None,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    eps2d: float = EPS2D,
) -> Projection:
    """EWA projection of Gaussians (..., N) into cameras (..., V), as gsplat's CUDA kernel does it.

    Computed in the dtype of ``means`` (the renderer uses float64). ``radii`` use gsplat's
    opacity-aware extent ``min(3.33, sqrt(2 ln(255 o)))`` when opacities are given (3.33
    otherwise) and are 0 for culled Gaussians: nearer than the near plane or past the far plane,
    degenerate, opacity under 1/255, or with a bounding box entirely outside the image.
    """
    batch, N, V = means.shape[:-2], means.shape[-2], viewmats.shape[-3]
    B = math.prod(batch)
    op = TorchOps(means.device)
    dtype = means.dtype
    p = project_torch(
        op,
        means.reshape(B, N, 3),
        covariances.reshape(B, N, 3, 3),
        viewmats.reshape(B, V, 4, 4).to(dtype),
        Ks.reshape(B, V, 3, 3).to(dtype),
        width,
        height,
        None if opacities is None else opacities.reshape(B, N),
        near_plane,
        far_plane,
        eps2d,
    )
    shape = batch + (V, N)
    radii = torch.stack([p["rx"], p["ry"]], dim=-1).int() * p["visible"][..., None]
    return Projection(
        torch.stack([p["mx"], p["my"]], -1).reshape(shape + (2,)),
        torch.stack([p["ca"], p["cb"], p["cc"]], -1).reshape(shape + (3,)),
        p["z"].reshape(shape),
        radii.reshape(shape + (2,)),
        torch.stack([p["a"], p["b"], p["c"]], -1).reshape(shape + (3,)),
    )


def _lin(w, v, bias=None):
    """Component-wise dot product ``w . v`` (+ ``bias``) of 3-component sequences: no batched 3x3 matmuls."""
    out = w[0] * v[0]
    out += w[1] * v[1]  # in place: fewer fresh (page-faulting) temporaries
    out += w[2] * v[2]
    if bias is not None:
        out += bias
    return out


def project_torch(
    op: TorchOps,
    means,
    covariances,
    viewmats,
    Ks,
    width: int,
    height: int,
    opacities,
    near_plane: float,
    far_plane: float,
    eps2d: float,
) -> dict:
    """Projection of (B, N) Gaussians into (B, V) cameras as per-component (B, V, N) arrays."""
    mu = op.components(means, 3)[:, :, None, :]  # (3, B, 1, N)
    S = op.components(covariances.reshape(covariances.shape[:-2] + (9,))[..., [0, 1, 2, 4, 5, 8]], 6)[
        :, :, None, :
    ]  # (6, B, 1, N): xx xy xz yy yz zz
    s00, s01, s02, s11, s12, s22 = S
    R = viewmats[..., :3, :3, None]  # (B, V, 3, 3, 1)
    t = viewmats[..., :3, 3, None]
    x, y, z = (_lin((R[..., i, 0, :], R[..., i, 1, :], R[..., i, 2, :]), mu, t[..., i, :]) for i in range(3))
    fx, fy = Ks[..., 0, 0, None], Ks[..., 1, 1, None]
    cx, cy = Ks[..., 0, 2, None], Ks[..., 1, 2, None]
    # gsplat clamps the point at which the Jacobian is taken to 1.3x the field of view
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    rz = 1.0 / z
    xz, yz = x * rz, y * rz
    # J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]], with tx/z clamped
    j00, j11 = fx * rz, fy * rz
    j02 = -j00 * op.minimum(op.maximum(xz, -lim_x_neg), lim_x_pos)
    j12 = -j11 * op.minimum(op.maximum(yz, -lim_y_neg), lim_y_pos)
    # T = J R (2x3 per Gaussian and camera); cov2d = T Sigma T^T
    t0 = [j00 * R[..., 0, k, :] + j02 * R[..., 2, k, :] for k in range(3)]
    t1 = [j11 * R[..., 1, k, :] + j12 * R[..., 2, k, :] for k in range(3)]
    rows = ((s00, s01, s02), (s01, s11, s12), (s02, s12, s22))
    u = [_lin(r, t0) for r in rows]
    a = _lin(t0, u) + eps2d
    b = _lin(t1, u)
    c = _lin(t1, [_lin(r, t1) for r in rows]) + eps2d
    det = a * c - b * b
    inv = 1.0 / det
    mx, my = fx * xz + cx, fy * yz + cy

    visible = (z >= near_plane) & (z <= far_plane) & (det > 0)
    if opacities is None:
        extend = op.full_like(z, MAX_EXTEND)
    else:
        o = opacities[:, None, :] + 0 * z  # broadcast to (B, V, N)
        visible &= o >= ALPHA_THRESHOLD
        extend = op.sqrt(2.0 * op.log(o.clip(min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clip(max=MAX_EXTEND)
    rx = op.nan_to_num(op.ceil(extend * op.sqrt(a.clip(min=0)))).clip(max=2**30)
    ry = op.nan_to_num(op.ceil(extend * op.sqrt(c.clip(min=0)))).clip(max=2**30)
    visible &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
    return {
        "mx": mx,
        "my": my,
        "z": z,
        "ca": c * inv,
        "cb": -b * inv,
        "cc": a * inv,
        "a": a,
        "b": b,
        "c": c,
        "rx": rx,
        "ry": ry,
        "visible": visible,
        "o": None if opacities is None else o,
    }


def project_compiled(
    pool,
    means: Tensor,
    covariances: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
) -> dict:
    """:func:`project_torch`'s dict, computed by the compiled kernel in slices of Gaussians on the
    worker threads (inputs are read in their own dtype and promoted per element)."""
    B, N = means.shape[:2]
    V = viewmats.shape[1]
    args = [
        t.detach().to(torch.float64 if t.dtype == torch.float64 else torch.float32).contiguous().numpy()
        for t in (means, covariances, opacities, viewmats, Ks)
    ]
    out = np.empty((12, B, V, N))  # NumPy: huge pages; not recycled (leaves the cache to outputs)
    visible = np.empty((B, V, N), dtype=np.bool_)
    n_slices = max(1, -(-N // project_slice())) if pool is not None else 1
    cuts = [k * N // n_slices for k in range(n_slices + 1)]
    map_on(
        pool if n_slices > 1 else None,
        lambda a, b: cpu_kernels.project(
            *args, width, height, near_plane, far_plane, eps2d, MAX_EXTEND, out, visible, a, b
        ),
        cuts[:-1],
        cuts[1:],
    )
    p = dict(zip(cpu_kernels.PROJECTION_ROWS, out))
    p["visible"] = visible
    return p
