"""Teacher targets for a target view: upsample -> lift -> splat -> blend -> downsample (steps 2-7 of
docs/design.md).

This is the only place where the 3D pipeline meets the training loop, so a different lifter or
renderer plugs in here without touching the trainer. :func:`tokens_from_render` is the last step
("rendered features -> token grid"), shared with the FiT3D baseline's field renders.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from splatdistill.geometry.cameras import Cameras
from splatdistill.render import render_features
from splatdistill.splat.blend import semantic_blend
from splatdistill.splat.lifter import Lifter, SplatSettings
from splatdistill.splat.upsample import mask_aware_upsample


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
    tokens, coverage, valid = tokens_from_render(feats, alpha, covered, grid, settings.min_coverage,
                                                 antialias=settings.downsample == "antialias")
    return SplatTargets(tokens=tokens, coverage=coverage, valid=valid, pixel_features=feats, pixel_alpha=alpha)


def tokens_from_render(feats: Tensor, alpha: Tensor, covered: Tensor, grid: tuple[int, int], min_coverage: float,
                       antialias: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Rendered features (T, C, R, R), zero where not ``covered`` (T, R, R), to the student's token grid.

    Returns (tokens (T, C, h, w), coverage (T, h, w) = the downsampled alpha, valid (T, h, w) =
    coverage >= ``min_coverage``). Tokens whose footprint is partly uncovered are re-normalised by the
    covered fraction (the zeros would otherwise shrink them). ``antialias`` averages each token's whole
    footprint instead of sampling bilinearly at its centre (see ``SplatSettings.downsample``).
    """
    def down(x: Tensor) -> Tensor:
        return F.interpolate(x, size=grid, mode="bilinear", align_corners=False, antialias=antialias)

    tokens = down(feats)
    coverage = down(alpha[:, None])[:, 0]
    covered_frac = down(covered[:, None].float())[:, 0]
    tokens = tokens / covered_frac.clamp_min(1e-6)[:, None]
    return tokens, coverage, coverage >= min_coverage


@torch.no_grad()
def teacher_pixel_features(backbone, images: Tensor, segments: Tensor, image_size: int | tuple[int, int],
                           batch: int = 8) -> Tensor:
    """The teacher's features as Splat-and-Distill lifts them: full-resolution ``images`` (V, 3, H, W)
    resized to ``image_size``, patch tokens, mask-aware upsampled to the ``segments`` (V, R, R) size.

    Returns float32 (V, C, R, R), contiguous.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    dev = next(backbone.parameters()).device
    tokens = []
    for i in range(0, len(images), batch):
        x = F.interpolate(images[i:i + batch].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        tokens.append(backbone.patch_features(x.to(dev)).float().cpu())
    return mask_aware_upsample(torch.cat(tokens), segments, tuple(segments.shape[-2:])).contiguous()
