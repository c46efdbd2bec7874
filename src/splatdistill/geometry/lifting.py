"""Pixel-aligned lifting: one Gaussian per valid depth pixel, carrying that pixel's feature.

This is the feed-forward stand-in for MVSplat's output (docs/design.md, "The method", step 3): the mean lies on
the pixel's ray at the given z-depth and the covariance is the pixel's footprint at that depth, so a
lifted view rendered back into its own camera reproduces itself, and any depth source (ground truth,
a monocular/multi-view predictor) plugs in.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from splatdistill.geometry.cameras import Cameras
from splatdistill.geometry.gaussians import Gaussians
from splatdistill.memory import empty_fast

#: Standard deviation of a uniform distribution over a unit interval: a Gaussian with this
#: footprint std has the second moments of the pixel's box footprint.
BOX_STD = 1.0 / math.sqrt(12.0)


def footprint_covariances(depth: Tensor, cameras: Cameras, scale_factor: float | Tensor = 1.0) -> Tensor:
    """World covariances (..., H, W, 3, 3) of pixel-footprint Gaussians at z-depths (..., H, W).

    In the camera frame the covariance is diagonal with standard deviations
    ``scale_factor * BOX_STD * depth * (1/fx, 1/fy, 1/sqrt(fx*fy))``: at ``scale_factor=1`` its
    image-plane extent matches the pixel's box footprint (variance 1/12 px^2 before the renderer's
    0.3 px^2 low-pass), and the depth axis gets the geometric-mean footprint so the Gaussian is as
    thick as it is wide.
    """
    K = cameras.Ks[..., None, None, :, :]
    fx, fy = K[..., 0, 0], K[..., 1, 1]
    s = torch.as_tensor(scale_factor, dtype=depth.dtype, device=depth.device) * BOX_STD * depth
    var = torch.stack([(s / fx) ** 2, (s / fy) ** 2, s * s / (fx * fy)], dim=-1)
    R_c2w = cameras.viewmats[..., :3, :3].transpose(-1, -2)[..., None, None, :, :]
    return (R_c2w * var[..., None, :]) @ R_c2w.transpose(-1, -2)


def lift_depth(
    depth: Tensor,
    cameras: Cameras,
    features: Tensor | None = None,
    *,
    scale_factor: float | Tensor = 1.0,
    opacity: float | Tensor = 0.95,
    keep_invalid: bool = False,
) -> Gaussians:
    """Lift z-depth maps into pixel-aligned Gaussians.

    Args:
        depth: (..., H, W) z-depth; values <= 0, inf or NaN are invalid.
        cameras: cameras with batch shape ``...`` and size W x H.
        features: (..., C, H, W) per-pixel features (channels first, as upsampled teacher features
            come); ``None`` gives zero-channel Gaussians.
        scale_factor: footprint multiplier (scalar or (..., H, W)); see :func:`footprint_covariances`.
        opacity: scalar or (..., H, W) opacity in [0, 1].
        keep_invalid: if False (default) invalid pixels produce no Gaussian and all views are
            flattened into one unbatched set (N = number of valid pixels, in view-major raster
            order). If True the result keeps the batch shape with N = H * W, and invalid pixels get
            opacity 0 and a finite mean (they never render), so batches stay dense.
    """
    H, W = cameras.height, cameras.width
    if depth.shape[-2:] != (H, W) or depth.shape[:-2] != cameras.batch_shape:
        raise ValueError(
            f"depth {tuple(depth.shape)} does not match cameras batch {tuple(cameras.batch_shape)} of size {H}x{W}"
        )
    batch = depth.shape[:-2]
    dtype, device = cameras.dtype, cameras.device
    depth = depth.to(device, dtype)
    valid = torch.isfinite(depth) & (depth > 0)
    safe_depth = torch.where(valid, depth, torch.ones_like(depth))

    means = cameras.unproject(safe_depth)  # (..., H, W, 3)
    covs = footprint_covariances(safe_depth, cameras, scale_factor)
    opac = torch.as_tensor(opacity, dtype=dtype, device=device)
    if opac.dim() > 0 and opac.shape[-2:] != (H, W):
        raise ValueError(f"opacity must be a scalar or (..., {H}, {W}), got {tuple(opac.shape)}")
    if bool(((opac < 0) | (opac > 1)).any()):
        raise ValueError("opacity must lie in [0, 1]")
    opac = torch.broadcast_to(opac, depth.shape)
    if features is None:
        feats = torch.zeros(batch + (H, W, 0), dtype=dtype, device=device)
    else:
        if features.shape[-2:] != (H, W) or features.shape[:-3] != batch:
            raise ValueError(f"features must be {tuple(batch)} + (C, {H}, {W}), got {tuple(features.shape)}")
        feats = features.movedim(-3, -1)  # (..., H, W, C)

    if keep_invalid:
        opac = torch.where(valid, opac, torch.zeros_like(opac))
        return Gaussians(means.flatten(-3, -2), covs.flatten(-4, -3), opac.flatten(-2), feats.flatten(-3, -2))
    sel = valid.reshape(-1)
    n = sel.numel()
    index = None if bool(sel.all()) else sel.nonzero()[:, 0]
    pick = (lambda t: t.contiguous()) if index is None else (lambda t: t.index_select(0, index))
    return Gaussians(
        pick(means.reshape(n, 3)), pick(covs.reshape(n, 3, 3)), pick(opac.reshape(n)), _pixel_rows(feats, index)
    )


def _pixel_rows(feats: Tensor, index: Tensor | None) -> Tensor:
    """(..., H, W, C) channels-last view -> (rows, C) contiguous, all pixels or the ``index`` ones.

    The view is a transpose of channels-first features, so this copy is the bulk of lifting's cost
    for wide features (384 channels). Without autograd on the CPU it goes into huge-page memory
    (:func:`splatdistill.memory.empty_fast`), about 2x faster than into fresh torch memory.
    """
    C = feats.shape[-1]
    n = math.prod(feats.shape[:-1])
    if feats.requires_grad or feats.device.type != "cpu" or C == 0:
        flat = feats.reshape(n, C)
        return flat if index is None else flat.index_select(0, index)
    if index is None:
        out = empty_fast((n, C), feats.dtype, feats.device, recycle=False)
        out.view(feats.shape).copy_(feats)
        return out
    full = empty_fast((n, C), feats.dtype, feats.device)  # a temporary: recycled
    full.view(feats.shape).copy_(feats)
    out = empty_fast((index.numel(), C), feats.dtype, feats.device, recycle=False)
    torch.index_select(full, 0, index, out=out)
    return out
