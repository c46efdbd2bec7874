"""``splatdistill features IMAGE --out FILE.png``: an image beside a PCA of its patch features."""

from __future__ import annotations

import argparse
from pathlib import Path

from splatdistill.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features", help="write an image beside a 3-component PCA of its patch features", description=__doc__
    )
    p.add_argument("image", help="input image (PNG, JPEG, ...)")
    p.add_argument("--backbone", default="dinov2_vits14", help="backbone spec (default: dinov2_vits14)")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--size", type=int, default=448, help="shorter image side fed to the backbone (default 448)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def feature_figure(image, backbone_spec: str, size: int = 448, device: str = "cpu"):
    """(image, PCA) side-by-side figure as float RGB; ``image`` is (H, W, 3) in [0, 1]."""
    import torch
    import torch.nn.functional as F

    from splatdistill.backbones import load_backbone
    from splatdistill.viz import pca_rgb, resize_nearest, side_by_side

    bb = load_backbone(backbone_spec, device=device)
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    H, W = x.shape[-2:]
    scale = size / min(H, W)
    h, w = max(bb.patch_size, round(H * scale)), max(bb.patch_size, round(W * scale))
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True).to(device)
    with torch.no_grad():
        feats = bb.patch_features(x)[0].cpu()
    pca = pca_rgb(feats)[0]
    return side_by_side([image, resize_nearest(pca, image.shape[0], image.shape[1])])


def run(args: argparse.Namespace) -> int:
    from splatdistill.viz import read_image, save_png

    image = read_image(args.image)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError("output must be a .png file", out)
    if args.size < 14:
        raise UserError(f"--size must be at least 14, got {args.size}")
    fig = feature_figure(image, args.backbone, args.size, args.device)
    save_png(fig, out)
    print(f"wrote {out}")
    return 0
