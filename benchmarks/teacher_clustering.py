"""How clustered a teacher's patch features are, and what a random DINO prototype head makes of them.

For each backbone spec, on held-out rooms views: the correlation ratio of the L2-normalised patch tokens
by semantic class (between-class / total variance: 1 = tokens are their class, 0 = no class structure), and,
through a randomly initialised DINO head (as the trainer builds it), the normalised entropy of the teacher
targets softmax(logits / T) and how many distinct prototypes win. Targets near entropy 1 carry no signal.

    PYTHONPATH=src python3 benchmarks/teacher_clustering.py --data ROOMS --views 24 -b dinov2_vits14 -b random:...
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F

from splatdistill.backbones import load_backbone
from splatdistill.data import load_dataset
from splatdistill.distill.heads import DINOHead


def views(data: str, split: str, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 3, size, size), semantic labels (N, size, size)) of the first ``n`` views of ``split``."""
    imgs, labels = [], []
    for scene in load_dataset(data, split=split):
        for i in range(len(scene.views)):
            v = scene.load_view(i)
            img = torch.from_numpy(v.image).permute(2, 0, 1)[None]
            imgs.append(F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0])
            sem = torch.from_numpy(v.semantic.astype(np.int64))[None, None].float()
            labels.append(F.interpolate(sem, size=(size, size), mode="nearest")[0, 0].long())
            if len(imgs) == n:
                return torch.stack(imgs), torch.stack(labels)
    return torch.stack(imgs), torch.stack(labels)


def correlation_ratio(tokens: torch.Tensor, labels: torch.Tensor) -> float:
    """Between-class variance / total variance of (M, C) tokens with class ``labels`` (M,), in float64."""
    x = tokens.double()
    total = ((x - x.mean(0)) ** 2).sum()
    between = sum(((x[labels == c].mean(0) - x.mean(0)) ** 2).sum() * (labels == c).sum() for c in labels.unique())
    return float(between / total)


def measure(spec: str, images: torch.Tensor, labels: torch.Tensor, prototypes: int) -> dict:
    bb = load_backbone(spec)
    with torch.no_grad():
        feats = torch.cat([bb.patch_features(images[i : i + 8]) for i in range(0, len(images), 8)])
    h, w = feats.shape[-2:]
    tok_labels = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long().flatten()
    tokens = feats.flatten(2).transpose(1, 2).reshape(-1, feats.shape[1])
    keep = tok_labels >= 0
    out = {"spec": spec, "preprocessing": f"{bb.preprocessing.mean} / {bb.preprocessing.std}",
           "eta2": correlation_ratio(F.normalize(tokens[keep], dim=1), tok_labels[keep])}
    torch.manual_seed(0)
    head = DINOHead(bb.embed_dim, prototypes, 2048, 256).eval()
    with torch.no_grad():
        logits = head(tokens[None])[0]
    for temp in (1.0, 0.04):
        p = (logits / temp).softmax(-1)
        ent = -(p * p.clamp_min(1e-12).log()).sum(-1).mean() / math.log(prototypes)
        out[f"entropy@{temp:g}"] = float(ent)
        out[f"winners@{temp:g}"] = int(p.argmax(-1).unique().numel())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--views", type=int, default=24)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--prototypes", type=int, default=4096)
    ap.add_argument("-b", "--backbone", action="append", required=True)
    args = ap.parse_args()
    images, labels = views(args.data, args.split, args.views, args.size)
    print(f"{len(images)} {args.split} views at {args.size} px, DINO head with {args.prototypes} prototypes (seed 0)")
    print("| teacher | mean / std fed | class correlation ratio | target entropy T=1 | winners T=1 | entropy T=0.04 | winners T=0.04 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for spec in args.backbone:
        r = measure(spec, images, labels, args.prototypes)
        print(f"| `{r['spec']}` | {r['preprocessing']} | {r['eta2']:.3f} | {r['entropy@1']:.4f} | {r['winners@1']} "
              f"| {r['entropy@0.04']:.3f} | {r['winners@0.04']} |")


if __name__ == "__main__":
    main()
