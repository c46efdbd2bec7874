"""Mask-aware upsampling and semantic blending: vectorised vs a per-segment loop.

Upsamples an 18 x 18 grid of ``channels``-dimensional tokens to ``size x size`` under a mask of
``segments`` Voronoi cells (superpixel-like), then blends features with their segment means. Each
step runs twice: the library's vectorised version and a straightforward per-segment loop (one masked
``F.interpolate`` / one masked mean per segment) that serves as the reference; the outputs must
agree. Printed: median times, speed-ups, peak memory, and the ratio to a bandwidth floor (writing the
output once).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from splatdistill.bench.render import PeakRSS, measure_ceilings
from splatdistill.errors import UserError
from splatdistill.splat.blend import semantic_blend
from splatdistill.splat.upsample import mask_aware_upsample


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=256, help="output side (px)")
    parser.add_argument("--grid", type=int, default=18, help="token grid side")
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)


def voronoi_segments(size: int, n: int, seed: int = 0) -> Tensor:
    """(1, size, size) int64 map of n Voronoi cells around random sites."""
    g = torch.Generator().manual_seed(seed)
    sites = torch.rand(n, 2, generator=g) * size
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    d = (yy[..., None] - sites[:, 1]) ** 2 + (xx[..., None] - sites[:, 0]) ** 2
    return d.argmin(-1)[None]


def upsample_loop(tokens: Tensor, segments: Tensor, out_size: tuple[int, int]) -> Tensor:
    """Reference: one masked bilinear interpolation per segment (plain bilinear fallback)."""
    B, C, h, w = tokens.shape
    H, W = out_size
    rows = ((torch.arange(h) + 0.5) * segments.shape[1] / h).long()
    cols = ((torch.arange(w) + 0.5) * segments.shape[2] / w).long()
    tok_lab = segments[:, rows][:, :, cols]
    out = F.interpolate(tokens, size=out_size, mode="bilinear", align_corners=False)
    for b in range(B):
        for s in torch.unique(segments[b]).tolist():
            m = (tok_lab[b] == s).to(tokens.dtype)[None, None]
            num = F.interpolate(tokens[b : b + 1] * m, size=out_size, mode="bilinear", align_corners=False)
            den = F.interpolate(m, size=out_size, mode="bilinear", align_corners=False)
            sel = (segments[b] == s) & (den[0, 0] > 0)
            out[b][:, sel] = num[0][:, sel] / den[0, 0][sel]
    return out


def blend_loop(features: Tensor, segments: Tensor, alpha: float) -> Tensor:
    """Reference: one masked mean per segment."""
    out = features.clone()
    for b in range(features.shape[0]):
        for s in torch.unique(segments[b]).tolist():
            sel = segments[b] == s
            mean = features[b][:, sel].mean(1, keepdim=True)
            out[b][:, sel] = alpha * features[b][:, sel] + (1 - alpha) * mean
    return out


def _time(fn, repeats: int) -> tuple[float, Tensor]:
    out = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def run(args: argparse.Namespace) -> int:
    if min(args.size, args.grid, args.channels, args.segments, args.repeats, args.threads) < 1:
        raise UserError("all sizes and counts must be positive")
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(1, args.channels, args.grid, args.grid, generator=g)
    segs = voronoi_segments(args.size, args.segments)
    size = (args.size, args.size)
    with torch.no_grad(), PeakRSS() as mem:
        t_vec, up = _time(lambda: mask_aware_upsample(tokens, segs, size), args.repeats)
        t_loop, up_ref = _time(lambda: upsample_loop(tokens, segs, size), max(1, args.repeats // 3))
        feats = up.contiguous()
        t_bvec, bl = _time(lambda: semantic_blend(up, segs, 0.5), args.repeats)
        t_bloop, bl_ref = _time(lambda: blend_loop(feats, segs, 0.5), max(1, args.repeats // 3))
    bandwidth, _ = measure_ceilings()
    out_bytes = 4 * args.channels * args.size * args.size
    floor_up = out_bytes / bandwidth * 2  # write the output once (copy bandwidth counts R+W)
    floor_blend = 2 * out_bytes / bandwidth * 2  # read the features, write the output
    err_up = (up - up_ref).abs().max().item()
    err_bl = (bl - bl_ref).abs().max().item()
    print(
        f"workload: {args.grid}x{args.grid} tokens x {args.channels} ch -> {args.size}x"
        f"{args.size}, {int(segs.unique().numel())} segments, {torch.get_num_threads()} threads"
    )
    print(
        f"upsample: vectorised {t_vec * 1e3:.1f} ms, per-segment loop {t_loop * 1e3:.1f} ms "
        f"-> {t_loop / t_vec:.1f}x faster (goal >= 20x); max |diff| {err_up:.1e}; "
        f"{t_vec / floor_up:.1f}x the write floor ({floor_up * 1e3:.1f} ms)"
    )
    print(
        f"blend:    vectorised {t_bvec * 1e3:.1f} ms, per-segment loop {t_bloop * 1e3:.1f} ms "
        f"-> {t_bloop / t_bvec:.1f}x faster; max |diff| {err_bl:.1e}; "
        f"{t_bvec / floor_blend:.1f}x the read+write floor ({floor_blend * 1e3:.1f} ms)"
    )
    print(f"memory: peak RSS {mem.peak / 2**30:.2f} GiB (process); copy bandwidth {bandwidth / 1e9:.1f} GB/s")
    if err_up > 1e-4 or err_bl > 1e-4:
        print("ERROR: vectorised and loop results disagree")
        return 1
    return 0
