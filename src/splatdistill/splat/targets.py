"""Teacher targets for a target view: upsample -> lift -> splat -> blend -> downsample (steps 2-7 of
docs/design.md).

This is the only place where the 3D pipeline meets the training loop, so a different lifter or
renderer plugs in here without touching the trainer. :func:`tokens_from_render` is the last step
("rendered features -> token grid"), shared with the FiT3D baseline's field renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from splatdistill.data.views import Views
from splatdistill.render import render_features
from splatdistill.splat.blend import semantic_blend
from splatdistill.splat.lifter import Lifter, SplatSettings
from splatdistill.splat.upsample import mask_aware_upsample


@dataclass
class SplatTargets:
    """Teacher targets of T target views (or a batch ``(B, T, ...)`` of them)."""

    tokens: Tensor  # (T, C, h, w) blended render downsampled to the student's patch grid
    coverage: Tensor  # (T, h, w) rendered alpha downsampled the same way
    valid: Tensor  # (T, h, w) bool: tokens that are supervised
    pixel_features: Tensor  # (T, C, R, R) blended render at render resolution (for figures)
    pixel_alpha: Tensor  # (T, R, R)


@torch.no_grad()
def splat_targets(
    context: Views, target: Views, grid: tuple[int, int], settings: SplatSettings, lifter: Lifter
) -> SplatTargets:
    """Render the teacher features of context views into target views, one sample or a batch.

    context: (V,) or (B, V) views at render resolution R carrying the teacher's patch ``tokens`` (C, h, w),
    their ``segments``, cameras, and what the lifter reads (images, depths).
    target: (T,) or (B, T) views at the same resolution with their ``segments`` and cameras.
    A batch comes back as (B, T, ...) fields; each sample lifts its own Gaussians.
    """
    if context.images.dim() == 5:
        outs = [_splat_one(context[i], target[i], grid, settings, lifter) for i in range(len(context))]
        return SplatTargets(**{f.name: torch.stack([getattr(o, f.name) for o in outs]) for f in fields(SplatTargets)})
    return _splat_one(context, target, grid, settings, lifter)


def _splat_one(
    context: Views, target: Views, grid: tuple[int, int], settings: SplatSettings, lifter: Lifter
) -> SplatTargets:
    if context.tokens is None or context.segments is None or target.segments is None:
        raise ValueError("splat_targets needs the context's teacher tokens and both views' segments")
    cams = target.cameras
    pixel_feats = mask_aware_upsample(context.tokens, context.segments, (context.height, context.width))  # (V, C, R, R)
    gaussians = lifter(replace(context, features=pixel_feats))
    feats, alpha = render_features(
        gaussians.means,
        gaussians.covariances,
        gaussians.opacities,
        gaussians.features,
        cams.viewmats,
        cams.Ks,
        cams.width,
        cams.height,
        backend=settings.renderer,
    )
    feats = feats.movedim(-1, -3)  # (T, C, R, R)
    # An alpha-composited feature is scaled by the coverage; dividing it out gives the weighted mean
    # of the Gaussians' features, which is what the student is asked to predict.
    feats = feats / alpha.clamp_min(1e-6)[:, None]
    covered = alpha > 1e-3
    feats = torch.where(covered[:, None], feats, torch.zeros_like(feats))
    if settings.blend_alpha < 1.0:
        feats = semantic_blend(feats, target.segments, settings.blend_alpha, valid=covered)
    tokens, coverage, valid = tokens_from_render(
        feats, alpha, covered, grid, settings.min_coverage, antialias=settings.downsample == "antialias"
    )
    return SplatTargets(tokens=tokens, coverage=coverage, valid=valid, pixel_features=feats, pixel_alpha=alpha)


def tokens_from_render(
    feats: Tensor, alpha: Tensor, covered: Tensor, grid: tuple[int, int], min_coverage: float, antialias: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
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
def teacher_tokens(backbone, images: Sequence[Tensor], image_size: int | tuple[int, int], batch: int = 8) -> Tensor:
    """The teacher's patch tokens as Splat-and-Distill computes them: each full-resolution image (3, H, W)
    (sizes may differ) resized to ``image_size`` (bilinear, antialiased), ``batch`` at a time on the
    backbone's device. Returns float32 (V, C, h, w) on the CPU."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    param = next(backbone.parameters(), None)
    dev = param.device if param is not None else torch.device("cpu")
    tokens = []
    for i in range(0, len(images), batch):
        x = torch.cat(
            [
                F.interpolate(im[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
                for im in images[i : i + batch]
            ]
        )
        tokens.append(backbone.patch_features(x.to(dev)).float().cpu())
    return torch.cat(tokens)


@torch.no_grad()
def teacher_pixel_features(
    backbone, images: Sequence[Tensor], segments: Tensor, image_size: int | tuple[int, int], batch: int = 8
) -> Tensor:
    """The teacher's features as Splat-and-Distill lifts them: :func:`teacher_tokens` of the full-resolution
    ``images``, mask-aware upsampled to the ``segments`` (V, R, R) size. Returns float32 (V, C, R, R), contiguous."""
    tokens = teacher_tokens(backbone, images, image_size, batch)
    return mask_aware_upsample(tokens, segments, tuple(segments.shape[-2:])).contiguous()
