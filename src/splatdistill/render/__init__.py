"""Feature splatting: one gsplat-like entry point over a CPU/GPU torch backend and gsplat (CUDA).

``render_features`` composites Gaussians carrying C-dimensional features into one or several
cameras with 3D Gaussian Splatting's rules exactly as gsplat 1.5 applies them (docs/design.md, "Gaussian splatting conventions"), so
the backends are interchangeable: ``torch`` runs anywhere (and is the only CPU renderer), ``gsplat``
is the fast path on CUDA.
"""

from __future__ import annotations

from torch import Tensor

from splatdistill.errors import UserError
from splatdistill.render.gsplat_backend import gsplat_available, render_gsplat
from splatdistill.render.projection import EPS2D, FAR_PLANE, NEAR_PLANE, project_gaussians
from splatdistill.render.torch_backend import render_torch

BACKENDS = ("auto", "torch", "gsplat")


def render_features(
    means: Tensor,
    covariances: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backend: str = "auto",
    *,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    eps2d: float = EPS2D,
) -> tuple[Tensor, Tensor]:
    """Splat feature Gaussians into cameras.

    Args:
        means: (..., N, 3) world positions.
        covariances: (..., N, 3, 3) world covariances.
        opacities: (..., N) in [0, 1].
        features: (..., N, C), any C >= 1 (rendered in one pass by the torch backend).
        viewmats: (..., V, 4, 4) world-to-camera (OpenCV axes), or a single (4, 4).
        Ks: (..., V, 3, 3) pixel intrinsics (pixel centres at integer + 0.5), or a single (3, 3).
        width, height: image size shared by all cameras.
        backend: "torch" (CPU or GPU, ours), "gsplat" (CUDA) or "auto" (gsplat for CUDA tensors
            when it is installed, torch otherwise).

    Returns:
        features (..., V, H, W, C) = sum_i f_i alpha_i T_i and alpha (..., V, H, W) = 1 - T_final;
        without the V dim for a single (4, 4) viewmat. Differentiable w.r.t. ``features`` with the
        torch backend.
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    single = viewmats.dim() == 2
    if single:
        viewmats, Ks = viewmats[None], Ks[None]
    _check_shapes(means, covariances, opacities, features, viewmats, Ks, width, height)
    if backend == "auto":
        backend = "gsplat" if means.device.type == "cuda" and gsplat_available() else "torch"
    fn = render_gsplat if backend == "gsplat" else render_torch
    img, alpha = fn(
        means,
        covariances,
        opacities,
        features,
        viewmats,
        Ks,
        int(width),
        int(height),
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
    )
    if single:
        img, alpha = img[..., 0, :, :, :], alpha[..., 0, :, :]
    return img, alpha


def render_gaussians(gaussians, cameras, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """:func:`render_features` for :class:`~splatdistill.geometry.Gaussians` and
    :class:`~splatdistill.geometry.Cameras` (unbatched cameras give (H, W, C))."""
    return render_features(
        gaussians.means,
        gaussians.covariances,
        gaussians.opacities,
        gaussians.features,
        cameras.viewmats,
        cameras.Ks,
        cameras.width,
        cameras.height,
        backend=backend,
    )


def _check_shapes(
    means: Tensor,
    covariances: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
) -> None:
    if means.dim() < 2 or means.shape[-1] != 3:
        raise ValueError(f"means must be (..., N, 3), got {tuple(means.shape)}")
    batch, N = means.shape[:-2], means.shape[-2]
    expect = {"covariances": (covariances, batch + (N, 3, 3)), "opacities": (opacities, batch + (N,))}
    for name, (t, shape) in expect.items():
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name} must be {tuple(shape)}, got {tuple(t.shape)}")
    if features.shape[:-1] != batch + (N,) or features.dim() != means.dim():
        raise ValueError(f"features must be {tuple(batch + (N,))} + (C,), got {tuple(features.shape)}")
    if features.shape[-1] < 1:
        raise ValueError("features need at least one channel")
    if viewmats.shape[:-3] != batch or viewmats.shape[-2:] != (4, 4):
        raise ValueError(f"viewmats must be {tuple(batch)} + (V, 4, 4), got {tuple(viewmats.shape)}")
    if Ks.shape != viewmats.shape[:-2] + (3, 3):
        raise ValueError(f"Ks must be {tuple(viewmats.shape[:-2]) + (3, 3)}, got {tuple(Ks.shape)}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    devices = {t.device for t in (means, covariances, opacities, features, viewmats, Ks)}
    if len(devices) > 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")
    if not all(t.dtype.is_floating_point for t in (means, covariances, opacities, features, viewmats, Ks)):
        raise ValueError("render_features needs floating-point tensors")


__all__ = [
    "BACKENDS",
    "gsplat_available",
    "project_gaussians",
    "render_features",
    "render_gaussians",
    "render_gsplat",
    "render_torch",
]
