"""Front-to-back compositing with torch ops (the GPU path; the CPU path uses the compiled kernels
of :mod:`splatdistill.render.cpu_kernels`): depth order and pixel boxes, dense evaluation over small
square blocks of each box, a segmented cumulative sum of ``log(1 - alpha)`` in float64 for the
transmittance, gsplat's exclusive stop, and the (pixels x Gaussians) CSR product."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from splatdistill.render.array_ops import NumpyOps, TorchOps
from splatdistill.render.cpu_kernels import ALPHA_THRESHOLD, MAX_ALPHA, TRANSMITTANCE_STOP
from splatdistill.render.projection import MAX_EXTEND

_BLOCK_SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64)


#: dense (pixel, Gaussian) slots evaluated at once (bounds the intermediates to ~100 MB)
_SLOT_BUDGET = 1 << 22


def front_to_back(op: NumpyOps, table: list, depths, visible, width: int, height: int) -> dict:
    """Visible Gaussians sorted by depth (stable: ties keep input order, like gsplat's radix
    sort) with their (mx, my, a/2, b, c/2, o) and the pixel box of their alpha >= 1/255 ellipse."""
    vid = op.flatnonzero(visible)
    vid = op.take(vid, op.argsort_float(op.take(depths, vid)))
    mx, my, hA, Bc, hC, o = (op.take(c, vid) for c in table)
    # sigma <= L  <=>  o exp(-sigma) >= 1/255; L capped like gsplat's 3.33-sigma box
    L = op.log(o * 255.0).clip(max=0.5 * MAX_EXTEND**2)
    Lm = L * (1 + 1e-4) + 1e-4  # enumeration margin: the exact alpha test decides
    det4 = (4 * hA * hC - Bc * Bc).clip(min=1e-30)  # det(conic)
    half_w = op.sqrt((4 * Lm * hC / det4).clip(min=0))  # sqrt(2 L Sigma_xx), Sigma = conic^-1
    half_h = op.sqrt((4 * Lm * hA / det4).clip(min=0))
    j0 = op.astype(op.ceil(mx - half_w - 0.5).clip(min=0), op.i64)
    j1 = op.astype(op.floor(mx + half_w - 0.5).clip(max=width - 1), op.i64)
    i0 = op.astype(op.ceil(my - half_h - 0.5).clip(min=0), op.i64)
    i1 = op.astype(op.floor(my + half_h - 0.5).clip(max=height - 1), op.i64)
    return {
        "vid": vid,
        "mx": mx,
        "my": my,
        "hA": hA,
        "Bc": Bc,
        "hC": hC,
        "o": o,
        "i0": i0,
        "i1": i1,
        "j0": j0,
        "nj": (j1 - j0 + 1).clip(min=0),
    }


def sorted_gaussians(op: NumpyOps, p: dict, bi: int, vi: int, fdt, width: int, height: int) -> dict:
    """:func:`front_to_back` for image (bi, vi) of a projection dict (as the projection functions give it)."""
    # per-Gaussian rows (mx, my, a/2, b, c/2, o) of sigma = 0.5 (a dx^2 + c dy^2) + b dx dy
    table = [
        p["mx"][bi, vi],
        p["my"][bi, vi],
        0.5 * p["ca"][bi, vi],
        p["cb"][bi, vi],
        0.5 * p["cc"][bi, vi],
        p["o"][bi, vi],
    ]
    return front_to_back(op, [op.astype(c, fdt) for c in table], p["z"][bi, vi], p["visible"][bi, vi], width, height)


def composite(op: TorchOps, gauss: tuple, width: int, r0: int, r1: int):
    """Front-to-back compositing weights of image rows [r0, r1) as a CSR (pixels x Gaussians),
    with torch ops (the CPU path uses :func:`cpu_kernels.composite_band`).

    ``gauss`` is :func:`front_to_back`'s output, per-pixel alphas are evaluated in its dtype
    (float32 like gsplat for float32 features). Returns (crow int32 (P+1,), col int32, weights
    (nnz,), coverage (P,) float64, (pairs, composited) counts) for the band's P pixels.
    """
    P = (r1 - r0) * width
    pix, gid, alpha = _pairs(op, gauss, width, r0, r1)
    order = op.stable_argsort(pix, P)
    counts = op.bincount(pix, P)
    ends = op.cumsum(counts)
    alpha, gid = op.take_pair(alpha, gid, order)  # one gather moves both on CPU
    # segmented inclusive cumsum of log(1 - alpha) per pixel, in float64 so T is exact to ~1e-12
    log1m = op.log1m_f64(alpha)
    log_t = op.cumsum(log1m)
    cum_before = op.zeros(P, op.f64)
    if log_t.shape[0]:
        cum_before[1:] = op.where(ends[:-1] > 0, log_t[(ends[:-1] - 1).clip(min=0)], 0.0)
    op.sub_(log_t, op.repeat(cum_before, counts))  # log T after each pair
    # gsplat's exclusive stop: a pair whose next transmittance is <= 1e-4 (and all behind it)
    # is not composited; log_t decreases along a pixel, so the kept pairs are a prefix of it.
    keep = log_t > math.log(TRANSMITTANCE_STOP)
    weights = op.exp_(op.neg_(op.sub_(log1m, log_t)))  # T before the pair = exp(log_t - log1m)
    weights *= alpha
    crow = op.zeros(P + 1, op.i64)
    if op.all(keep):
        crow[1:] = ends
    else:
        kept = op.flatnonzero(keep)
        kept_cum = op.cumsum(op.astype(keep, op.i64))
        crow[1:] = op.where(ends > 0, kept_cum[(ends - 1).clip(min=0)], 0)
        gid, weights, log_t = op.take(gid, kept), op.take(weights, kept), op.take(log_t, kept)
    # coverage = 1 - T after the last composited pair of the pixel
    cover = op.zeros(P, op.f64)
    if log_t.shape[0]:
        last = (crow[1:] - 1).clip(min=0)
        cover = op.where(crow[1:] > crow[:-1], -op.expm1(log_t[last]), 0.0)
    return (
        op.astype(crow, op.i32),
        gid,
        op.astype(weights, alpha.dtype),
        cover,
        (int(pix.shape[0]), int(gid.shape[0])),
    )


def _pairs(op: TorchOps, g: dict, width: int, r0: int, r1: int):
    """Depth-ordered (pixel id in the band, Gaussian id (int32), alpha) of every pair with
    alpha >= 1/255 whose pixel lies in image rows [r0, r1)."""
    sel = op.flatnonzero((g["i1"] >= r0) & (g["i0"] < r1))  # Gaussians reaching the band
    vid, mx, my, hA, Bc, hC, o, i0, i1, j0, nj = (
        op.take(g[k], sel) for k in ("vid", "mx", "my", "hA", "Bc", "hC", "o", "i0", "i1", "j0", "nj")
    )
    i0 = i0.clip(min=r0)
    ni = (i1.clip(max=r1 - 1) - i0 + 1).clip(min=0)
    s = _block_size(op.to_host(ni), op.to_host(nj))
    bj = (nj + s - 1) // s
    nblocks = ((ni + s - 1) // s) * bj
    # blocks (Gaussian, block row, block col), Gaussian-major
    b_g = op.repeat(op.arange(nblocks.shape[0]), nblocks)
    Nb = b_g.shape[0]
    b_local = op.arange(Nb) - op.repeat(op.cumsum(nblocks) - nblocks, nblocks)
    bjg = op.repeat(bj, nblocks)
    brow = b_local // bjg.clip(min=1)
    b_i0 = op.repeat(i0, nblocks) + brow * s
    b_j0 = op.repeat(j0, nblocks) + (b_local - brow * bjg) * s
    bt = [op.take(c, b_g) for c in (mx, my, hA, Bc, hC, o)]
    bgid = op.astype(op.take(vid, b_g), op.i32)
    bpix = op.astype((b_i0 - r0) * width + b_j0, op.i32)
    # evaluate in chunks of blocks so the dense intermediates stay bounded however large the
    # Gaussians are; chunks are contiguous block ranges, so the depth order is kept
    step = max(1, _SLOT_BUDGET // (s * s))
    parts = [
        _eval_blocks(
            op,
            [c[k : k + step] for c in bt],
            b_i0[k : k + step],
            b_j0[k : k + step],
            bpix[k : k + step],
            bgid[k : k + step],
            s,
            width,
            r1,
        )
        for k in range(0, max(Nb, 1), step)
    ]
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat([q[i] for q in parts]) for i in range(3))


def _eval_blocks(op: TorchOps, bt: list, b_i0, b_j0, bpix, bgid, s: int, width: int, height: int):
    """Dense alpha over ``s x s`` pixel blocks (block index innermost), compacted to pairs in
    (block, row, column) order; ``height`` is the row bound (the band's end)."""
    mx, my, hA, Bc, hC, o = bt
    Nb, ss = mx.shape[0], s * s
    ar = op.arange(s)
    # gsplat's delta = mean - pixel centre, for the block's first row/column, then step by 1 px
    dy0 = my - (op.astype(b_i0, my.dtype) + 0.5)
    dx0 = mx - (op.astype(b_j0, mx.dtype) + 0.5)
    arf = op.astype(ar, mx.dtype)[:, None]
    dy = dy0[None, :] - arf  # (s, Nb)
    dx = dx0[None, :] - arf
    # -sigma = -(0.5 (a dx^2 + c dy^2) + b dx dy) over (s_row, s_col, Nb)
    # (negating the per-block coefficients, exactly, saves a pass over the dense array)
    nsig = (-hC * dy * dy)[:, None, :] + (-Bc * dy)[:, None, :] * dx[None, :, :]
    nsig += (-hA * dx * dx)[None, :, :]
    valid = nsig <= 0  # PD conics give sigma >= 0 up to rounding; gsplat skips the rest
    alpha = op.exp_(nsig)
    alpha *= o
    if float(o.max()) > MAX_ALPHA if Nb else False:
        op.clip_max_(alpha, MAX_ALPHA)
    valid &= alpha >= ALPHA_THRESHOLD
    if Nb and (int(b_i0.max()) + s > height or int(b_j0.max()) + s > width):
        rows = b_i0[None, :] + ar[:, None]  # blocks overhanging the image edge
        cols = b_j0[None, :] + ar[:, None]
        valid &= (rows < height)[:, None, :] & (cols < width)[None, :, :]
    valid = op.tcopy(valid.reshape(ss, Nb))  # (Nb, ss): block-major = depth order
    idx = op.flatnonzero(valid)
    alpha = op.take(op.tcopy(alpha.reshape(ss, Nb)).reshape(-1), idx)
    slot = op.astype((ar[:, None] * width + ar[None, :]).reshape(1, ss), op.i32)
    pix = op.take((bpix[:, None] + slot).reshape(-1), idx)
    gid = op.repeat(bgid, op.count_nonzero_rows(valid))
    return pix, gid, alpha


def _block_size(ni: np.ndarray, nj: np.ndarray) -> int:
    """Block side minimising evaluated slots plus a per-block overhead, over a histogram of boxes."""
    if ni.size == 0:
        return 1
    cap = 128
    hist = (
        np.bincount(np.minimum(ni, cap - 1) * cap + np.minimum(nj, cap - 1), minlength=cap * cap)
        .reshape(cap, cap)
        .astype(np.float64)
    )
    n = np.arange(cap, dtype=np.float64)
    best, best_cost = 1, math.inf
    for s in _BLOCK_SIZES:
        nb = np.ceil(n / s)
        cost = float((hist * (nb[:, None] * nb[None, :])).sum()) * (s * s + 6)
        if cost < best_cost:
            best, best_cost = s, cost
    return best


def csr_matmul(crow: Tensor, col: Tensor, val: Tensor, dense: Tensor, rows: int, out: Tensor | None) -> Tensor:
    """(rows x N) CSR matrix @ dense (N, C); differentiable w.r.t. ``dense`` when ``out`` is None."""
    device = dense.device
    if device.type == "cpu" and dense.dtype not in (torch.float32, torch.float64):
        # MKL's sparse product has no half-precision kernels: accumulate in float32
        res = csr_matmul(crow, col, val.float(), dense.float(), rows, None)
        return res.to(dense.dtype) if out is None else out.copy_(res)
    # invariants are not checked (too slow), so hand over plain dense index arrays
    crow, col, val = (t.to(device).contiguous() for t in (crow, col, val))
    if device.type != "cpu":
        crow, col = crow.long(), col.long()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        mat = torch.sparse_csr_tensor(crow, col, val, (rows, dense.shape[0]), check_invariants=False)
        if out is None:
            return torch.sparse.mm(mat, dense)
        # beta=0 never reads ``out``, so it may hold garbage (rows without pairs are zeroed)
        return torch.addmm(out, mat, dense, beta=0, out=out)
