"""Pure-PyTorch 3DGS feature rasteriser (CPU and GPU), numerically matching gsplat 1.5.

Why not tiles: gsplat's per-tile loop is a CUDA design; on a CPU the cost that matters is the number of
(Gaussian, pixel) pairs touched and how often each is moved through memory. So this backend

1. projects every Gaussian exactly as gsplat does (EWA, Jacobian point clamped to 1.3x the field of
   view, 0.3 px^2 low-pass, near/far culling, opacity-aware extent);
2. cuts each Gaussian's pixel box -- the bounding box of its exact ``alpha >= 1/255`` ellipse
   ``0.5 d^T conic d <= ln(255 o)`` -- into small square blocks and evaluates
   ``alpha = min(0.999, o exp(-sigma))`` densely over all blocks at once, keeping pairs >= 1/255;
   blocks are listed front to back, so the pairs come out in depth order;
3. groups pairs by pixel with a *stable* sort on the pixel id (NumPy's radix sort on 16-bit keys on
   CPU), which keeps the depth order inside each pixel without sorting on depth again;
4. gets transmittance from a segmented cumulative sum of ``log(1 - alpha)`` in float64, and applies
   gsplat's exclusive stop (a pair whose next transmittance is <= 1e-4, and all behind it, is not
   composited);
5. accumulates ``alpha * T * feature`` with one sparse (pixels x Gaussians) CSR product, so any
   channel count goes in a single pass, (pairs x C) is never materialised, and the result is
   differentiable with respect to the features.

Index-heavy steps (nonzero, gathers, the radix sort) go through NumPy on CPU, where they are 5-10x
faster than torch's kernels; on GPU the same steps use torch ops.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
TRANSMITTANCE_STOP = 1e-4
EPS2D = 0.3
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
#: gsplat's cap on the bounding-box extent, in marginal standard deviations.
MAX_EXTEND = 3.33
_BLOCK_SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64)
#: dense (pixel, Gaussian) slots evaluated at once (bounds the intermediates to ~100 MB)
_SLOT_BUDGET = 1 << 22


@dataclass
class Projection:
    """Gaussians projected into cameras, gsplat layout (..., V, N, ...)."""

    means2d: Tensor  # (..., V, N, 2) pixel coordinates of the means
    conics: Tensor  # (..., V, N, 3) inverse 2D covariance (xx, xy, yy)
    depths: Tensor  # (..., V, N) camera z
    radii: Tensor  # (..., V, N, 2) int32 opacity-aware bounding-box half sizes, 0 = culled
    cov2d: Tensor  # (..., V, N, 3) 2D covariance after the low-pass (xx, xy, yy)

    @property
    def visible(self) -> Tensor:
        return self.radii[..., 0] > 0


def project_gaussians(means: Tensor, covariances: Tensor, viewmats: Tensor, Ks: Tensor,
                      width: int, height: int, opacities: Tensor | None = None,
                      near_plane: float = NEAR_PLANE, far_plane: float = FAR_PLANE,
                      eps2d: float = EPS2D) -> Projection:
    """EWA projection of Gaussians (..., N) into cameras (..., V), as gsplat's CUDA kernel does it.

    ``radii`` use gsplat's opacity-aware extent ``min(3.33, sqrt(2 ln(255 o)))`` when opacities are
    given (3.33 otherwise) and are 0 for culled Gaussians: nearer than the near plane or past the far
    plane, degenerate, opacity under 1/255, or with a bounding box entirely outside the image.
    """
    p = _project(means, covariances, viewmats, Ks, width, height, opacities, near_plane,
                 far_plane, eps2d)
    radii = torch.stack([p["rx"], p["ry"]], dim=-1).int() * p["visible"][..., None]
    return Projection(torch.stack([p["mx"], p["my"]], -1),
                      torch.stack([p["ca"], p["cb"], p["cc"]], -1), p["z"], radii,
                      torch.stack([p["a"], p["b"], p["c"]], -1))


def _project(means: Tensor, covariances: Tensor, viewmats: Tensor, Ks: Tensor, width: int,
             height: int, opacities: Tensor | None, near_plane: float, far_plane: float,
             eps2d: float) -> dict[str, Tensor]:
    """Projection as contiguous per-component (..., V, N) tensors (vectorises better than stacks)."""
    dtype = means.dtype
    mu = means.movedim(-1, 0)[:, ..., None, :].contiguous()  # (3, ..., 1, N)
    iu = ([0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2])
    S = covariances[..., iu[0], iu[1]].movedim(-1, 0)[:, ..., None, :].contiguous()  # (6, ..., 1, N)
    s00, s01, s02, s11, s12, s22 = S
    R = viewmats[..., :3, :3, None].to(dtype)  # (..., V, 3, 3, 1)
    t = viewmats[..., :3, 3, None].to(dtype)
    # camera-frame means, (..., V, N): component-wise broadcasting beats batched 3x3 matmuls;
    # in-place accumulation keeps the number of fresh (page-faulting) temporaries down
    def lin(w0, w1, w2, v0, v1, v2, bias=None):
        out = w0 * v0 if bias is None else torch.addcmul(bias, w0, v0)
        return out.addcmul_(w1, v1).addcmul_(w2, v2)

    x, y, z = (lin(R[..., i, 0, :], R[..., i, 1, :], R[..., i, 2, :], mu[0], mu[1], mu[2],
                   t[..., i, :]) for i in range(3))
    K = Ks.to(dtype)
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    # gsplat clamps the point at which the Jacobian is taken to 1.3x the field of view
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    rz = torch.reciprocal(z)
    xz, yz = x.mul_(rz), y.mul_(rz)
    # J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]], with tx/z clamped
    j00, j11 = fx * rz, fy * rz
    j02 = torch.maximum(xz, -lim_x_neg).minimum(lim_x_pos).mul_(j00).neg_()
    j12 = torch.maximum(yz, -lim_y_neg).minimum(lim_y_pos).mul_(j11).neg_()
    # T = J R (2x3 per Gaussian and camera); cov2d = T Sigma T^T
    t0 = [torch.addcmul(j02 * R[..., 2, k, :], j00, R[..., 0, k, :]) for k in range(3)]
    t1 = [torch.addcmul(j12 * R[..., 2, k, :], j11, R[..., 1, k, :]) for k in range(3)]
    u = [lin(s00, s01, s02, *t0), lin(s01, s11, s12, *t0), lin(s02, s12, s22, *t0)]
    a = lin(t0[0], t0[1], t0[2], *u).add_(eps2d)
    b = lin(t1[0], t1[1], t1[2], *u)
    u = [lin(s00, s01, s02, *t1), lin(s01, s11, s12, *t1), lin(s02, s12, s22, *t1)]
    c = lin(t1[0], t1[1], t1[2], *u).add_(eps2d)
    det = a * c - b * b
    inv = torch.reciprocal(det)
    mx, my = torch.addcmul(cx, fx, xz), torch.addcmul(cy, fy, yz)

    visible = (z >= near_plane) & (z <= far_plane) & (det > 0)
    if opacities is None:
        extend = torch.full_like(z, MAX_EXTEND)
    else:
        o = opacities.to(dtype)[..., None, :].expand_as(z)
        visible &= o >= ALPHA_THRESHOLD
        extend = torch.sqrt(2.0 * torch.log(o.clamp(min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp(max=MAX_EXTEND)
    rx = torch.ceil(extend * torch.sqrt(a.clamp(min=0))).nan_to_num(0.0).clamp(max=2 ** 30)
    ry = torch.ceil(extend * torch.sqrt(c.clamp(min=0))).nan_to_num(0.0).clamp(max=2 ** 30)
    visible &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
    return {"mx": mx, "my": my, "z": z, "ca": c * inv, "cb": -b * inv, "cc": a * inv, "a": a,
            "b": b, "c": c, "rx": rx, "ry": ry, "visible": visible}


def render_torch(means: Tensor, covariances: Tensor, opacities: Tensor, features: Tensor,
                 viewmats: Tensor, Ks: Tensor, width: int, height: int,
                 near_plane: float = NEAR_PLANE, far_plane: float = FAR_PLANE,
                 eps2d: float = EPS2D, stats: dict | None = None) -> tuple[Tensor, Tensor]:
    """Render Gaussians (..., N) into cameras (..., V).

    Returns features (..., V, H, W, C) and alpha (..., V, H, W). See :func:`render_features`.
    ``stats``, if given, receives per-render counts (visible Gaussians, pairs, composited pairs).
    """
    batch = means.shape[:-2]
    V = viewmats.shape[-3]
    N, C = means.shape[-2], features.shape[-1]
    with torch.no_grad():
        # project in float64: O(N) work, and float32's cancellation in R m + t and its 1/z^2
        # scaling cost ~1e-4 relative accuracy for Gaussians near the near plane
        f64 = torch.float64
        p = _project(means.detach().to(f64), covariances.detach().to(f64), viewmats.detach(),
                     Ks.detach(), width, height, opacities.detach(), near_plane, far_plane, eps2d)
        B = math.prod(batch)
        o = opacities.detach().to(f64)[..., None, :].expand_as(p["z"])
        # per-image rows (mx, my, a/2, b, c/2, o) of the conic's sigma = 0.5 (a dx^2 + c dy^2) + b dx dy
        table = torch.stack([p["mx"], p["my"], 0.5 * p["ca"], p["cb"], 0.5 * p["cc"], o], -2)
        table = table.to(means.dtype).reshape(B, V, 6, N)
        dep = p["z"].reshape(B, V, N)  # float64: no float32 ties in the depth order
        vis = p["visible"].reshape(B, V, N)
    ft = features.reshape(B, N, C)
    P = width * height
    grad = torch.is_grad_enabled() and features.requires_grad
    images, alphas = [], []
    out = None if grad else empty_fast((B, V, P, C), features.dtype, features.device)
    alpha = torch.empty(B, V, P, dtype=features.dtype, device=features.device)
    # a loop over images (not pixels or Gaussians): each iteration is a full vectorised render
    for bi in range(B):
        for vi in range(V):
            img = rasterize_image(table[bi, vi], dep[bi, vi], vis[bi, vi], ft[bi], width,
                                  height, alpha_out=alpha[bi, vi],
                                  out=None if out is None else out[bi, vi], stats=stats)
            images.append(img)
    img = torch.stack(images).reshape(B, V, P, C) if out is None else out
    return (img.reshape(batch + (V, height, width, C)),
            alpha.reshape(batch + (V, height, width)))


def rasterize_image(table: Tensor, depths: Tensor, visible: Tensor, features: Tensor,
                    width: int, height: int, alpha_out: Tensor, out: Tensor | None = None,
                    stats: dict | None = None) -> Tensor:
    """Composite projected Gaussians (N) into one image.

    ``table`` (6, N) holds per Gaussian (mx, my, a/2, b, c/2, opacity) with (a, b, c) the conic.

    Writes the coverage ``1 - T_final`` into ``alpha_out`` (P,) and returns the (P, C) feature image
    (written into ``out`` when given; without ``out`` the result is differentiable w.r.t. features).
    """
    device = table.device
    P = width * height
    pix, gid, alpha = _pairs(table, depths, visible, width, height)
    order = _stable_argsort(pix, P)
    counts = _bincount(pix, P)
    ends = torch.cumsum(counts, 0)
    alpha, gid = _take_pair(alpha, gid, order)  # one gather moves both
    # segmented inclusive cumsum of log(1 - alpha) per pixel, in float64 so T is exact to ~1e-12
    log1m = alpha.to(torch.float64, copy=True).neg_().log1p_()
    log_t = torch.cumsum(log1m, 0)
    cum_before = torch.zeros(P, dtype=torch.float64, device=device)
    if log_t.numel():
        cum_before[1:] = torch.where(ends[:-1] > 0, log_t[(ends[:-1] - 1).clamp(min=0)], 0.0)
    log_t -= _repeat(cum_before, counts)  # log T after each pair
    # gsplat's exclusive stop: a pair whose next transmittance is <= 1e-4 (and all behind it)
    # is not composited; log_t decreases along a pixel, so the kept pairs are a prefix of it.
    keep = log_t > math.log(TRANSMITTANCE_STOP)
    weights = torch.sub(log_t, log1m, out=log1m).exp_().mul_(alpha)  # alpha * T before the pair
    if bool(keep.all()):
        crow = torch.cat([ends.new_zeros(1), ends])
        col = gid
    else:
        kept = _flatnonzero(keep)
        kept_cum = torch.cumsum(keep, 0)
        crow = torch.zeros(P + 1, dtype=torch.int64, device=device)
        crow[1:] = torch.where(ends > 0, kept_cum[(ends - 1).clamp(min=0)], 0)
        col = _take(gid, kept)
        weights = _take(weights, kept)
        log_t = _take(log_t, kept)
    if stats is not None:
        for key, value in (("visible", int(visible.sum())), ("pairs", int(pix.numel())),
                           ("composited", int(col.numel()))):
            stats[key] = stats.get(key, 0) + value
    # coverage = 1 - T after the last composited pair of the pixel
    last = (crow[1:] - 1).clamp(min=0)
    has = crow[1:] > crow[:-1]
    if log_t.numel():
        alpha_out.copy_(torch.where(has, -torch.expm1(log_t[last]), 0.0))
    else:
        alpha_out.zero_()
    return _csr_matmul(crow, col, weights.to(features.dtype), features, P, out)


def _pairs(table: Tensor, depths: Tensor, visible: Tensor, width: int, height: int
           ) -> tuple[Tensor, Tensor, Tensor]:
    """Depth-ordered (pixel id, Gaussian id (int32), alpha) of every pair with alpha >= 1/255.

    Blocks are evaluated with the block index innermost (long vectorisable loops), then compacted in
    (block, row, column) order, which is depth order because blocks are listed Gaussian by Gaussian
    front to back.
    """
    device, dtype = table.device, table.dtype
    vid = _flatnonzero(visible)
    vid = _take(vid, torch.argsort(_take(depths, vid), stable=True))
    table = _take_cols(table, vid)
    mx, my, hA, Bc, hC, o = table.unbind(0)
    # sigma <= L  <=>  o exp(-sigma) >= 1/255; L capped like gsplat's 3.33-sigma box
    L = torch.log(o * 255.0).clamp(max=0.5 * MAX_EXTEND ** 2)
    Lm = L * (1 + 1e-4) + 1e-4  # enumeration margin: the exact alpha test below decides
    det4 = (4 * hA * hC - Bc * Bc).clamp(min=1e-30)  # det(conic)
    half_w = torch.sqrt((4 * Lm * hC / det4).clamp(min=0))  # sqrt(2 L Sigma_xx), Sigma = conic^-1
    half_h = torch.sqrt((4 * Lm * hA / det4).clamp(min=0))
    j0 = torch.ceil(mx - half_w - 0.5).clamp(min=0)
    j1 = torch.floor(mx + half_w - 0.5).clamp(max=width - 1)
    i0 = torch.ceil(my - half_h - 0.5).clamp(min=0)
    i1 = torch.floor(my + half_h - 0.5).clamp(max=height - 1)
    nj = (j1 - j0 + 1).clamp(min=0).long()
    ni = (i1 - i0 + 1).clamp(min=0).long()
    s = _block_size(ni, nj)
    ss = s * s
    bj = (nj + s - 1) // s
    nblocks = ((ni + s - 1) // s) * bj
    # blocks (Gaussian, block row, block col), Gaussian-major
    b_g = _repeat_arange(nblocks)
    Nb = b_g.numel()
    b_local = torch.arange(Nb, device=device) - _repeat(torch.cumsum(nblocks, 0) - nblocks,
                                                         nblocks)
    bjg = _repeat(bj, nblocks)
    brow = torch.div(b_local, bjg, rounding_mode="floor")
    b_i0 = _repeat(i0.long(), nblocks) + brow * s
    b_j0 = _repeat(j0.long(), nblocks) + (b_local - brow * bjg) * s
    bt = _take_cols(table, b_g)  # (6, Nb): block index innermost
    bgid = _take(vid, b_g).int()
    bpix = (b_i0 * width + b_j0).int()
    # evaluate in chunks of blocks so the dense intermediates stay bounded however large the
    # Gaussians are; chunks are contiguous block ranges, so the depth order is kept
    step = max(1, _SLOT_BUDGET // ss)
    parts = [_eval_blocks(bt[:, k:k + step], b_i0[k:k + step], b_j0[k:k + step],
                          bpix[k:k + step], bgid[k:k + step], s, width, height)
             for k in range(0, max(Nb, 1), step)]
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))


def _eval_blocks(bt: Tensor, b_i0: Tensor, b_j0: Tensor, bpix: Tensor, bgid: Tensor, s: int,
                 width: int, height: int) -> tuple[Tensor, Tensor, Tensor]:
    """Dense alpha over ``s x s`` pixel blocks (block index innermost), compacted to pairs."""
    device, dtype = bt.device, bt.dtype
    Nb, ss = bt.shape[1], s * s
    ar = torch.arange(s, device=device)
    rows = b_i0[None, :] + ar[:, None]  # (s, Nb)
    cols = b_j0[None, :] + ar[:, None]
    dy = bt[1] - (rows.to(dtype) + 0.5)  # gsplat: delta = mean - pixel centre
    dx = bt[0] - (cols.to(dtype) + 0.5)
    # sigma = 0.5 (a dx^2 + c dy^2) + b dx dy over (s_row, s_col, Nb)
    sigma = torch.addcmul((bt[4] * dy * dy)[:, None, :], (bt[3] * dy)[:, None, :],
                          dx[None, :, :]).add_((bt[2] * dx * dx)[None, :, :])
    valid = sigma >= 0  # PD conics give sigma >= 0 up to rounding; gsplat skips the rest
    alpha = sigma.neg_().exp_().mul_(bt[5]).clamp_(max=MAX_ALPHA)
    valid &= alpha >= ALPHA_THRESHOLD
    valid &= (rows < height)[:, None, :] & (cols < width)[None, :, :]
    # compact in (block, row, col) order
    valid = valid.reshape(ss, Nb).t().contiguous()  # (Nb, ss)
    idx = _flatnonzero(valid)
    alpha = _take(alpha.reshape(ss, Nb).t().contiguous().reshape(-1), idx)
    slot_offset = (ar[:, None] * width + ar[None, :]).reshape(1, ss).int()
    pix = _take((bpix[:, None] + slot_offset).reshape(-1), idx)
    gid = _repeat(bgid, valid.sum(1))
    return pix, gid, alpha


def _block_size(ni: Tensor, nj: Tensor) -> int:
    """Block side minimising evaluated slots plus a per-block overhead, over a histogram of boxes."""
    if ni.numel() == 0:
        return 1
    cap = 128
    hist = torch.bincount((ni.clamp(max=cap - 1) * cap + nj.clamp(max=cap - 1)),
                          minlength=cap * cap).reshape(cap, cap).double()
    n = torch.arange(cap, dtype=torch.float64, device=ni.device)
    best, best_cost = 1, math.inf
    for s in _BLOCK_SIZES:
        nb = torch.ceil(n / s)
        cost = float((hist * (nb[:, None] * nb[None, :])).sum()) * (s * s + 6)
        if cost < best_cost:
            best, best_cost = s, cost
    return best


def _stable_argsort(keys: Tensor, num_keys: int) -> Tensor:
    """Stable argsort of non-negative integer keys < num_keys (radix sort via NumPy on CPU)."""
    if not _np(keys):
        return torch.sort(keys, stable=True).indices
    k = keys.numpy()
    if num_keys <= 1 << 16:
        return torch.from_numpy(np.argsort(k.astype(np.uint16), kind="stable"))
    # LSD radix in two stable passes of 16 bits each (NumPy radix-sorts <= 16-bit integers)
    lo = np.argsort((k & 0xFFFF).astype(np.uint16), kind="stable")
    hi = (k[lo] >> 16).astype(np.uint16)
    return torch.from_numpy(lo[np.argsort(hi, kind="stable")])


# Index helpers: NumPy's nonzero/take/repeat/radix sort are several times faster than torch's on
# CPU; other devices use the torch ops. ``_NUMPY_ON_CPU = False`` runs the torch ops on CPU too
# (tests use it to exercise the GPU code path).
_NUMPY_ON_CPU = True


def _np(x: Tensor) -> bool:
    return _NUMPY_ON_CPU and x.device.type == "cpu"


def _flatnonzero(mask: Tensor) -> Tensor:
    if _np(mask):
        return torch.from_numpy(np.flatnonzero(mask.reshape(-1).numpy()))
    return torch.nonzero(mask.reshape(-1)).squeeze(1)


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """x[idx] for 1-D x (no autograd)."""
    if _np(x):
        return torch.from_numpy(np.take(x.detach().numpy(), idx.numpy()))
    return x[idx]


def _take_cols(x: Tensor, idx: Tensor) -> Tensor:
    """x[:, idx] of a 2-D tensor, contiguous (no autograd)."""
    if _np(x):
        return torch.from_numpy(np.take(x.detach().contiguous().numpy(), idx.numpy(), axis=1))
    return x[:, idx]


def _take_pair(a: Tensor, b: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """(a[idx], b[idx]) of 1-D tensors; on CPU two 4-byte arrays move in one 8-byte gather."""
    if not _np(a) or a.element_size() != 4 or b.element_size() != 4:
        return _take(a, idx), _take(b, idx)
    packed = np.empty((a.numel(), 2), dtype=np.int32)
    packed[:, 0] = a.numpy().view(np.int32)
    packed[:, 1] = b.numpy().view(np.int32)
    moved = np.take(packed.view(np.int64)[:, 0], idx.numpy()).view(np.int32).reshape(-1, 2)
    return (torch.from_numpy(moved[:, 0].view(a.numpy().dtype)),
            torch.from_numpy(moved[:, 1].view(b.numpy().dtype)))


def _bincount(x: Tensor, size: int) -> Tensor:
    if _np(x):
        return torch.from_numpy(np.bincount(x.numpy(), minlength=size))
    return torch.bincount(x, minlength=size)


def _repeat(values: Tensor, counts: Tensor) -> Tensor:
    """values[i] repeated counts[i] times."""
    if _np(values):
        return torch.from_numpy(np.repeat(values.numpy(), counts.numpy()))
    return torch.repeat_interleave(values, counts)


def _repeat_arange(counts: Tensor) -> Tensor:
    """i repeated counts[i] times."""
    return _repeat(torch.arange(counts.numel(), device=counts.device), counts)


def empty_fast(shape: tuple[int, ...], dtype: torch.dtype, device) -> Tensor:
    """``torch.empty`` that, on CPU, takes NumPy's allocator: NumPy madvises large blocks into
    transparent huge pages, so first touch of a 100 MB output costs ~2x less than with torch's
    4 KB pages."""
    if torch.device(device).type != "cpu" or dtype not in _NP_DTYPES:
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.from_numpy(np.empty(shape, dtype=_NP_DTYPES[dtype]))


_NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}


def _csr_matmul(crow: Tensor, col: Tensor, val: Tensor, dense: Tensor, rows: int,
                out: Tensor | None) -> Tensor:
    """(rows x N) CSR matrix @ dense (N, C); differentiable w.r.t. ``dense`` when ``out`` is None."""
    if crow.device.type == "cpu":  # MKL's sparse product is faster on 32-bit indices
        crow, col = crow.int(), col.int()
    # invariants are not checked (too slow), so hand over plain dense index arrays
    crow, col, val = crow.contiguous(), col.contiguous(), val.contiguous()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        mat = torch.sparse_csr_tensor(crow, col, val, (rows, dense.shape[0]),
                                      check_invariants=False)
        if out is None:
            return torch.sparse.mm(mat, dense)
        # beta=0 never reads ``out``, so it may hold garbage (rows without pairs are zeroed)
        return torch.addmm(out, mat, dense, beta=0, out=out)
