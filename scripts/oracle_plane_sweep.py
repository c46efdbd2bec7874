"""How well can plain two-view matching do on a capture? An oracle classical plane sweep, for docs/lifters.md.

For every ``--every``-th evaluation pair of ``splatdistill lifter eval`` (same pairs, same resolution),
each view is matched against the other by ZNCC of gray windows over planes uniform in inverse depth
between 0.8x the 1st and 1.25x the 99th percentile of the pair's *ground-truth* depth (a range no lifter
knows), winner-take-all per pixel. Its scale-invariant AbsRel, beside the constant's, per parallax bin:
if even this is no better than a constant, the capture's pairs do not pin depth down and no pairwise
lifter will. A diagnostic, not a lifter (no regularisation, no occlusion handling).

    python scripts/oracle_plane_sweep.py DATASET [--size 112] [--every 5] [--window 9] [--planes 128]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from splatdistill.data import load_dataset
from splatdistill.lifters.bank import load_bank, pair_views
from splatdistill.lifters.evaluate import depth_errors, eval_pairs, pair_parallax, parallax_bins
from splatdistill.lifters.plane_sweep import plane_sweep_grid, zncc_volume
from splatdistill.lifters.predictor import predictor_input_size


def oracle_depth(views, window: int, planes: int) -> np.ndarray:
    """(2, H, W) winner-take-all ZNCC depth of a pair, planes from its own ground-truth range."""
    gt = views.depths
    valid = gt[gt > 0]
    lo, hi = float(valid.quantile(0.01)) * 0.8, float(valid.quantile(0.99)) * 1.25
    depths = 1.0 / torch.linspace(1.0 / hi, 1.0 / lo, planes)
    gray = (views.images * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)
    Ks, vm = views.cameras.Ks, views.cameras.viewmats
    H, W = gt.shape[-2:]
    out = []
    for r, s in ((0, 1), (1, 0)):
        grid, z = plane_sweep_grid(Ks[r], vm[r], Ks[s], vm[s], depths, H, W)
        zc = zncc_volume(gray[r : r + 1], gray[s : s + 1], grid[None], z[None], window=window)[0]
        out.append(depths[zc.argmax(0)].numpy())
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("--size", type=int, default=112, help="shorter side (the shipped predictor's is 112)")
    ap.add_argument("--every", type=int, default=5, help="use every N-th evaluation pair")
    ap.add_argument("--window", type=int, default=9)
    ap.add_argument("--planes", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(1)
    scenes = load_dataset(args.data)
    first = scenes[0].views[0]
    size = predictor_input_size(first.height, first.width, args.size)
    bank = load_bank(scenes, size, None, progress=False, need_depth=False)
    pairs = eval_pairs(bank, scenes, 6)[:: args.every]
    preds, gts, parallax = [], [], []
    for a, b in pairs:
        v = pair_views(bank, [(a, b)], "cpu")[0]
        if not bool((v.depths > 0).any()):
            continue
        preds.append(oracle_depth(v, args.window, args.planes))
        gts.append(v.depths.numpy())
        parallax.append(pair_parallax(v.cameras, v.depths))
    pred, gt = np.concatenate(preds), np.concatenate(gts)
    constant = float(np.median(gt[gt > 0]))
    rows = parallax_bins(parallax, pred, gt, constant)
    rows.append(
        {
            "parallax_px": None,
            "pairs": len(parallax),
            "predictor": depth_errors(pred, gt),
            "constant": depth_errors(np.full_like(gt, constant), gt),
        }
    )
    print(f"{len(parallax)} pairs at {size[0]}x{size[1]}, ZNCC {args.window}x{args.window}, {args.planes} planes")
    print("| parallax | pairs | oracle sweep AbsRel / scale-inv | constant AbsRel / scale-inv |")
    print("|---|---:|---:|---:|")
    for row in rows:
        if row["parallax_px"] is None:
            name = "all"
        else:
            lo, hi = row["parallax_px"]
            name = f"{lo:g}-{hi:g} px" if hi is not None else f">= {lo:g} px"
        e, c = row["predictor"], row["constant"]
        print(
            f"| {name} | {row['pairs']} | {e['abs_rel']:.3f} / {e['abs_rel_si']:.3f} | {c['abs_rel']:.3f} / {c['abs_rel_si']:.3f} |"
        )


if __name__ == "__main__":
    main()
