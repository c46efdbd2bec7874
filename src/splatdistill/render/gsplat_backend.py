"""gsplat (CUDA) backend: ``gsplat.rasterization`` with explicit covariances.

gsplat is imported only when this backend runs, so ``splatdistill.render`` works without it (and
without CUDA). Its compositing is the reference that the torch backend reproduces: EWA projection
with the 0.3 px^2 low-pass, alpha clamp 0.999, skip under 1/255, exclusive stop at T <= 1e-4,
near-plane culling (``z < near_plane``), opacity-aware tile bounds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from splatdistill.errors import UserError, require_extra

#: gsplat renders at most this many channels per kernel launch (it pads to 1, 2, 3, 4, 5, 8, 9,
#: 16, 17, ..., 512, 513); wider features are chunked inside ``gsplat.rasterization``.
GSPLAT_MAX_CHANNELS = 513


def gsplat_available() -> bool:
    """True if gsplat imports (its CUDA kernels are JIT-compiled or prebuilt on first use)."""
    try:
        import gsplat  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA toolchain raising at import
        return False
    return True


def render_gsplat(
    means: Tensor,
    covariances: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    channel_chunk: int = 32,
    packed: bool = False,
) -> tuple[Tensor, Tensor]:
    """Render with ``gsplat.rasterization``; returns (features (..., V, H, W, C), alpha (..., V, H, W)).

    ``channel_chunk`` is passed through: gsplat loops over chunks of that many channels (its CUDA
    kernel keeps a per-pixel accumulator of that width in registers; 32 is its tuned default). Set it
    to C (<= 513) for a single pass.
    """
    rasterization = require_extra("gsplat", "gpu", "renderer=gsplat", hint="or pass renderer=torch").rasterization
    if means.device.type != "cuda":
        raise UserError("the gsplat backend needs CUDA tensors; pass renderer=torch (or renderer=auto) on CPU")
    dtype = features.dtype  # gsplat's kernels are float32-only
    f32 = torch.float32
    colors, alphas, _meta = rasterization(
        means.to(f32),
        None,
        None,
        opacities.to(f32),
        features.to(f32),
        viewmats.to(f32),
        Ks.to(f32),
        int(width),
        int(height),
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
        sh_degree=None,
        packed=packed,
        render_mode="RGB",
        rasterize_mode="classic",
        channel_chunk=int(channel_chunk),
        covars=covariances.to(f32),
    )
    return colors.to(dtype), alphas[..., 0].to(dtype)
