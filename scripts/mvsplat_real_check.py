"""Check ``lifter=mvsplat:CKPT`` against MVSplat's real classes: each Gaussian sits on its own pixel.

Why: the adapter assumes MVSplat returns one Gaussian per pixel in view-major raster order (so Gaussian
``i`` can carry the teacher feature of pixel ``i``) and drops the padding's Gaussians. MVSplat places each
mean on its pixel's ray, moved by a learned sub-pixel offset of at most half a pixel, so projecting every
mean into its own view must land within half a pixel of its pixel's centre, whatever the weights.

Run with MVSplat's encoder requirements and its repository root on PYTHONPATH (docs/lifters.md):

    PYTHONPATH=src:/path/to/mvsplat python scripts/mvsplat_real_check.py CKPT [--size 72]
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from splatdistill.data import load_dataset
from splatdistill.lifters import build_lifter
from splatdistill.splat.scene import load_scene_views


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--size", type=int, default=72, help="not a multiple of 16: exercises the padding")
    ap.add_argument("--near", type=float, default=0.5)
    ap.add_argument("--far", type=float, default=20.0)
    args = ap.parse_args()
    lifter = build_lifter(f"mvsplat:{args.checkpoint}:{args.near}:{args.far}")
    sv = load_scene_views(load_dataset("rooms")[0], [0, 2], args.size)
    V, _, H, W = sv.images.shape
    g = lifter(dataclasses.replace(sv, features=sv.images, depths=None))
    print(f"{len(g)} Gaussians for {V} views of {H}x{W} (padded to a multiple of {lifter.multiple})")
    worst = 0.0
    for v in range(V):
        idx = slice(v * H * W, (v + 1) * H * W)
        vm, K = sv.cameras.viewmats[v].double(), sv.cameras.Ks[v].double()
        cam = g.means[idx].double() @ vm[:3, :3].T + vm[:3, 3]
        uv = (cam @ K.T)[:, :2] / cam[:, 2:]
        ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
        off = (uv - torch.stack([xs, ys], -1).reshape(-1, 2).double()).abs().max(1).values
        worst = max(worst, float(off.max()))
        print(
            f"view {v}: z {float(cam[:, 2].min()):.3f}..{float(cam[:, 2].max()):.3f}; largest offset from its own "
            f"pixel centre {float(off.max()):.3f} px (median {float(off.median()):.3f})"
        )
    print("OK: every Gaussian lies on its own pixel" if worst <= 0.5 + 1e-3 else f"FAIL: offsets up to {worst:.3f} px")


if __name__ == "__main__":
    main()
