"""Self-render identity of the teacher targets: a view's own tokens, lifted and splatted back into it.

Rendering a view's teacher features into its own camera (ground-truth depth, no blending) should give
its tokens back; what it loses is what the render -> token-grid downsample (``SplatSettings.downsample``)
and the mask-aware upsample cost every target. Printed per downsample mode: the cosine to the original
tokens over supervised tokens (mean and 5th percentile) and the share of tokens supervised.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from splatdistill.backbones import load_backbone
from splatdistill.data import load_dataset
from splatdistill.data.views import Views, fit_size
from splatdistill.errors import UserError
from splatdistill.splat import SplatSettings, depth_lifter, splat_targets


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="rooms", help="dataset folder with depth, or 'rooms' (default)")
    p.add_argument("--split", default="val")
    p.add_argument("--views", type=int, default=24, help="views measured (spread over the split's scenes)")
    p.add_argument("--backbone", default="dinov2_vits14")
    p.add_argument("--image-size", default="224", help="teacher input: short side or HxW")
    p.add_argument("--render-size", default="112", help="render resolution: short side or HxW")


@torch.no_grad()
def self_render_cosines(backbone, views: Views, render_size, downsample: str) -> tuple[np.ndarray, float]:
    """Cosines (supervised tokens) between each view's tokens and their render into the same view."""
    R = fit_size(render_size, views.height, views.width)
    small = views.at(R)
    settings = SplatSettings(blend_alpha=1.0, renderer="torch", downsample=downsample)
    lifter = depth_lifter(settings)
    cos, supervised = [], []
    for i in range(len(views)):
        tokens = backbone.patch_features(views.images[i : i + 1])
        one = small[i : i + 1]
        out = splat_targets(dataclasses.replace(one, tokens=tokens), one, tuple(tokens.shape[-2:]), settings, lifter)
        c = F.cosine_similarity(out.tokens, tokens, dim=1)[out.valid]
        cos.append(c.numpy())
        supervised.append(float(out.valid.float().mean()))
    return np.concatenate(cos), float(np.mean(supervised))


def run(args: argparse.Namespace) -> int:
    scenes = load_dataset(args.data, split=args.split)
    picks = [(s, i) for s in scenes for i in range(0, len(s), max(1, len(s) * len(scenes) // max(1, args.views)))]
    picks = picks[: args.views]
    loaded = [s.load_view(i) for s, i in picks]
    if any(v.depth is None for v in loaded):
        raise UserError(f"{args.data}: bench targets lifts with ground-truth depth; some views have none")
    first = loaded[0]
    views = Views.from_view_data(loaded, mask_mode="auto", size=fit_size(args.image_size, first.height, first.width))
    backbone = load_backbone(args.backbone)
    print(
        f"bench targets: {backbone.name}, {len(loaded)} {args.split} views of {len(scenes)} scenes, "
        f"input {views.height}x{views.width}, render {args.render_size}; own tokens rendered back into their view"
    )
    for mode in ("bilinear", "antialias"):
        cos, share = self_render_cosines(backbone, views, args.render_size, mode)
        print(
            f"  downsample={mode:9s}  cosine to the original tokens: mean {cos.mean():.4f}, "
            f"5th percentile {np.percentile(cos, 5):.4f}, min {cos.min():.4f}; supervised {share:.1%}"
        )
    return 0
