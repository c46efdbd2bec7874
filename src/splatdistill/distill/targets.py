"""Teacher targets for a target view: upsample -> lift -> splat -> blend -> downsample (DESIGN steps 2-7).

This is the only place where the 3D pipeline meets the training loop, so a different lifter or
renderer plugs in here without touching the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from splatdistill.distill.blend import semantic_blend
from splatdistill.distill.upsample import mask_aware_upsample
from splatdistill.geometry.cameras import Cameras
from splatdistill.geometry.gaussians import Gaussians
from splatdistill.geometry.lifting import lift_depth
from splatdistill.render import render_features

#: A lifter turns context views into feature Gaussians: (features (V,C,H,W), depth (V,H,W) or None,
#: images (V,3,H,W), cameras (V)) -> Gaussians. The default uses the dataset's depth.
Lifter = Callable[[Tensor, "Tensor | None", Tensor, Cameras], Gaussians]


@dataclass
class SplatSettings:
    blend_alpha: float = 0.5
    gaussian_scale: float = 1.0
    gaussian_opacity: float = 0.95
    renderer: str = "auto"
    min_coverage: float = 0.5


def depth_lifter(settings: SplatSettings) -> Lifter:
    def lift(features: Tensor, depth: Tensor | None, images: Tensor, cameras: Cameras) -> Gaussians:
        if depth is None:
            raise ValueError("the depth lifter needs context depth maps")
        return lift_depth(depth, cameras, features, scale_factor=settings.gaussian_scale,
                          opacity=settings.gaussian_opacity)
    return lift


@dataclass
class SplatTargets:
    tokens: Tensor  # (T, C, h, w) blended render downsampled to the student's patch grid
    coverage: Tensor  # (T, h, w) rendered alpha downsampled the same way
    valid: Tensor  # (T, h, w) bool: tokens that are supervised
    pixel_features: Tensor  # (T, C, R, R) blended render at render resolution (for figures)
    pixel_alpha: Tensor  # (T, R, R)


@torch.no_grad()
def splat_targets(context_tokens: Tensor, context_segments: Tensor, context_cameras: Cameras,
                  target_segments: Tensor, target_cameras: Cameras, grid: tuple[int, int],
                  settings: SplatSettings, lifter: Lifter, context_depth: Tensor | None = None,
                  context_images: Tensor | None = None) -> SplatTargets:
    """Render one sample's teacher features into its target views.

    context_tokens: (V, C, h, w) teacher patch tokens of the context views.
    context_segments / target_segments: (V|T, R, R) integer segment maps at render resolution.
    context_cameras / target_cameras: cameras at render resolution R x R.
    """
    R_h, R_w = context_cameras.height, context_cameras.width
    pixel_feats = mask_aware_upsample(context_tokens, context_segments, (R_h, R_w))  # (V, C, R, R)
    gaussians = lifter(pixel_feats, context_depth, context_images, context_cameras)
    feats, alpha = render_features(gaussians.means, gaussians.covariances, gaussians.opacities,
                                   gaussians.features, target_cameras.viewmats, target_cameras.Ks,
                                   target_cameras.width, target_cameras.height, backend=settings.renderer)
    feats = feats.movedim(-1, -3)  # (T, C, R, R)
    # An alpha-composited feature is scaled by the coverage; dividing it out gives the weighted mean
    # of the Gaussians' features, which is what the student is asked to predict.
    feats = feats / alpha.clamp_min(1e-6)[:, None]
    covered = alpha > 1e-3
    feats = torch.where(covered[:, None], feats, torch.zeros_like(feats))
    if settings.blend_alpha < 1.0:
        feats = semantic_blend(feats, target_segments, settings.blend_alpha, valid=covered)
    tokens = F.interpolate(feats, size=grid, mode="bilinear", align_corners=False, antialias=True)
    coverage = F.interpolate(alpha[:, None], size=grid, mode="bilinear", align_corners=False, antialias=True)[:, 0]
    # re-normalise tokens whose footprint is partly uncovered (the zeros above would shrink them)
    covered_frac = F.interpolate(covered[:, None].float(), size=grid, mode="bilinear", align_corners=False,
                                 antialias=True)[:, 0]
    tokens = tokens / covered_frac.clamp_min(1e-6)[:, None]
    valid = coverage >= settings.min_coverage
    return SplatTargets(tokens=tokens, coverage=coverage, valid=valid, pixel_features=feats, pixel_alpha=alpha)
