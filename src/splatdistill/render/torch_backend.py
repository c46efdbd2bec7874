"""Our 3DGS feature rasteriser (CPU and GPU), numerically matching gsplat 1.5.

Why not tiles: gsplat's per-tile loop is a CUDA design; on a CPU the cost that matters is the number of
(Gaussian, pixel) pairs touched and how often each is moved through memory. So this backend

1. projects every Gaussian exactly as gsplat does (EWA, Jacobian point clamped to 1.3x the field of
   view, 0.3 px^2 low-pass, near/far culling, opacity-aware extent), in float64;
2. orders the visible Gaussians front to back (stable, like gsplat's radix sort) and bounds each by
   the pixel box of its exact ``alpha >= 1/255`` ellipse ``0.5 d^T conic d <= ln(255 o)``;
3. evaluates ``alpha = min(0.999, o exp(-sigma))`` over the boxes, keeps pairs >= 1/255 and
   composites them front to back with gsplat's exclusive stop at transmittance 1e-4;
4. accumulates ``alpha * T * feature`` per pixel, so any channel count goes in a single pass and
   (pairs x C) is never materialised; with autograd the weights form a sparse (pixels x Gaussians)
   CSR matrix whose product is differentiable with respect to the features.

On CPU, steps 1, 3 and 4 are compiled kernels (:mod:`splatdistill.render.cpu_kernels`: one pass per
Gaussian, then per pixel), run on worker threads over slices of Gaussians and row bands of the image
(the kernels release the GIL, and unlike per-op OpenMP teams the bands never wait on each other).
On other devices (and on CPU when ``_NUMPY_ON_CPU`` is off, which the tests use to check that both
agree) the same steps are vectorised torch ops: pairs are evaluated densely over small square blocks
of each box, grouped by pixel with a stable sort on the pixel id (keeping the depth order), their
transmittance comes from a segmented cumulative sum of ``log(1 - alpha)`` in float64, and the
product is one sparse CSR matmul.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from splatdistill.memory import empty_fast, release_buffers  # noqa: F401  (re-exported)
from splatdistill.render import cpu_kernels
from splatdistill.render.cpu_kernels import ALPHA_THRESHOLD, MAX_ALPHA, TRANSMITTANCE_STOP

EPS2D = 0.3
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
#: gsplat's cap on the bounding-box extent, in marginal standard deviations.
MAX_EXTEND = 3.33
_BLOCK_SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64)
#: dense (pixel, Gaussian) slots evaluated at once (bounds the intermediates to ~100 MB)
_SLOT_BUDGET = 1 << 22
#: use the compiled kernels (and NumPy) on CPU (tests set it False to run the torch path on CPU)
_NUMPY_ON_CPU = True


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


# --- array ops: one interface, torch (any device) and the part of it NumPy runs on CPU ---------

class _NumpyOps:
    """The array operations the CPU path uses outside the compiled kernels (depth ordering and
    pixel boxes in :func:`_front_to_back`), on NumPy arrays."""

    f64, i32, i64 = np.float64, np.int32, np.int64

    def __init__(self, device: torch.device):
        self.device = device

    def float_dtype(self, t: Tensor):
        """Working precision for per-pair alphas: float64 for float64 features, else float32."""
        return np.float64 if t.dtype == torch.float64 else np.float32

    def astype(self, x, dtype):
        return x.astype(dtype, copy=False)

    def flatnonzero(self, mask):
        return np.flatnonzero(mask)

    def take(self, x, idx, axis=None):
        return np.take(x, idx, axis=axis)

    def argsort_float(self, x):
        if x.dtype == np.float64 and not np.isnan(x).any():
            return cpu_kernels.stable_argsort_f64(x)  # radix: 3-4x NumPy's stable sort
        return np.argsort(x, kind="stable")

    def sqrt(self, x):
        return np.sqrt(x)

    def log(self, x):
        return np.log(x)

    def ceil(self, x):
        return np.ceil(x)

    def floor(self, x):
        return np.floor(x)


class _TorchOps(_NumpyOps):
    """All array operations of the vectorised path, with torch (GPU, or CPU when the compiled
    kernels are switched off); the NumPy methods it inherits are all overridden."""

    f64, i32, i64 = torch.float64, torch.int32, torch.int64

    def asarray(self, t: Tensor) -> Tensor:
        return t.detach()

    def tensor(self, a: Tensor) -> Tensor:
        return a.contiguous()

    def float_dtype(self, t: Tensor):
        return torch.float64 if t.dtype == torch.float64 else torch.float32

    def arange(self, n, dtype=torch.int64):
        return torch.arange(n, dtype=dtype, device=self.device)

    def zeros(self, n, dtype):
        return torch.zeros(n, dtype=dtype, device=self.device)

    def astype(self, x, dtype):
        return x.to(dtype)

    def components(self, x, k):
        return x.movedim(-1, 0).contiguous()

    def tcopy(self, x):
        return x.t().contiguous()

    def flatnonzero(self, mask):
        return torch.nonzero(mask.reshape(-1)).squeeze(1)

    def take(self, x, idx, axis=None):
        return x[idx] if axis is None else x.index_select(axis, idx)

    def take_pair(self, a, b, idx):
        return a[idx], b[idx]

    def repeat(self, values, counts):
        return torch.repeat_interleave(values, counts)

    def bincount(self, x, n):
        return torch.bincount(x.long(), minlength=n)

    def cumsum(self, x):
        return torch.cumsum(x, 0)

    def argsort_float(self, x):
        return torch.argsort(x, stable=True)

    def stable_argsort(self, keys, num_keys):
        return torch.sort(keys, stable=True).indices

    def exp_(self, x):
        return x.exp_()

    def neg_(self, x):
        return x.neg_()

    def clip_max_(self, x, v):
        return x.clamp_(max=v)

    def log1m_f64(self, a):
        return a.to(torch.float64, copy=True).neg_().log1p_()

    def sub_(self, x, y):
        return x.sub_(y)

    def expm1(self, x):
        return torch.expm1(x)

    def where(self, c, a, b):
        return torch.where(c, a, b)

    def sqrt(self, x):
        return torch.sqrt(x)

    def log(self, x):
        return torch.log(x)

    def ceil(self, x):
        return torch.ceil(x)

    def floor(self, x):
        return torch.floor(x)

    def maximum(self, a, b):
        return torch.maximum(a, b)

    def minimum(self, a, b):
        return torch.minimum(a, b)

    def nan_to_num(self, x):
        return torch.nan_to_num(x, nan=0.0)

    def full_like(self, x, v):
        return torch.full_like(x, v)

    def to_host(self, x) -> np.ndarray:
        return x.cpu().numpy()

    def count_nonzero_rows(self, x):
        return torch.count_nonzero(x, dim=1)

    def all(self, x) -> bool:
        return bool(x.all())


def _ops(device: torch.device) -> _NumpyOps:
    if _NUMPY_ON_CPU and device.type == "cpu":
        return _NumpyOps(device)
    return _TorchOps(device)


# --- projection ---------------------------------------------------------------------------------

def project_gaussians(means: Tensor, covariances: Tensor, viewmats: Tensor, Ks: Tensor,
                      width: int, height: int, opacities: Tensor | None = None,
                      near_plane: float = NEAR_PLANE, far_plane: float = FAR_PLANE,
                      eps2d: float = EPS2D) -> Projection:
    """EWA projection of Gaussians (..., N) into cameras (..., V), as gsplat's CUDA kernel does it.

    Computed in the dtype of ``means`` (the renderer uses float64). ``radii`` use gsplat's
    opacity-aware extent ``min(3.33, sqrt(2 ln(255 o)))`` when opacities are given (3.33
    otherwise) and are 0 for culled Gaussians: nearer than the near plane or past the far plane,
    degenerate, opacity under 1/255, or with a bounding box entirely outside the image.
    """
    batch, N, V = means.shape[:-2], means.shape[-2], viewmats.shape[-3]
    B = math.prod(batch)
    op = _TorchOps(means.device)
    dtype = means.dtype
    p = _project(op, means.reshape(B, N, 3), covariances.reshape(B, N, 3, 3),
                 viewmats.reshape(B, V, 4, 4).to(dtype), Ks.reshape(B, V, 3, 3).to(dtype),
                 width, height, None if opacities is None else opacities.reshape(B, N),
                 near_plane, far_plane, eps2d)
    shape = batch + (V, N)
    radii = torch.stack([p["rx"], p["ry"]], dim=-1).int() * p["visible"][..., None]
    return Projection(torch.stack([p["mx"], p["my"]], -1).reshape(shape + (2,)),
                      torch.stack([p["ca"], p["cb"], p["cc"]], -1).reshape(shape + (3,)),
                      p["z"].reshape(shape), radii.reshape(shape + (2,)),
                      torch.stack([p["a"], p["b"], p["c"]], -1).reshape(shape + (3,)))


def _project(op: _TorchOps, means, covariances, viewmats, Ks, width: int, height: int,
             opacities, near_plane: float, far_plane: float, eps2d: float) -> dict:
    """Projection of (B, N) Gaussians into (B, V) cameras as per-component (B, V, N) arrays."""
    mu = op.components(means, 3)[:, :, None, :]  # (3, B, 1, N)
    S = op.components(covariances.reshape(covariances.shape[:-2] + (9,))[..., [0, 1, 2, 4, 5, 8]],
                      6)[:, :, None, :]  # (6, B, 1, N): xx xy xz yy yz zz
    s00, s01, s02, s11, s12, s22 = S
    R = viewmats[..., :3, :3, None]  # (B, V, 3, 3, 1)
    t = viewmats[..., :3, 3, None]

    def lin(w, v, bias=None):  # component-wise w . v: no batched 3x3 matmuls
        out = w[0] * v[0]
        out += w[1] * v[1]  # in place: fewer fresh (page-faulting) temporaries
        out += w[2] * v[2]
        if bias is not None:
            out += bias
        return out

    x, y, z = (lin((R[..., i, 0, :], R[..., i, 1, :], R[..., i, 2, :]), mu, t[..., i, :])
               for i in range(3))
    fx, fy = Ks[..., 0, 0, None], Ks[..., 1, 1, None]
    cx, cy = Ks[..., 0, 2, None], Ks[..., 1, 2, None]
    # gsplat clamps the point at which the Jacobian is taken to 1.3x the field of view
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    rz = 1.0 / z
    xz, yz = x * rz, y * rz
    # J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]], with tx/z clamped
    j00, j11 = fx * rz, fy * rz
    j02 = -j00 * op.minimum(op.maximum(xz, -lim_x_neg), lim_x_pos)
    j12 = -j11 * op.minimum(op.maximum(yz, -lim_y_neg), lim_y_pos)
    # T = J R (2x3 per Gaussian and camera); cov2d = T Sigma T^T
    t0 = [j00 * R[..., 0, k, :] + j02 * R[..., 2, k, :] for k in range(3)]
    t1 = [j11 * R[..., 1, k, :] + j12 * R[..., 2, k, :] for k in range(3)]
    rows = ((s00, s01, s02), (s01, s11, s12), (s02, s12, s22))
    u = [lin(r, t0) for r in rows]
    a = lin(t0, u) + eps2d
    b = lin(t1, u)
    c = lin(t1, [lin(r, t1) for r in rows]) + eps2d
    det = a * c - b * b
    inv = 1.0 / det
    mx, my = fx * xz + cx, fy * yz + cy

    visible = (z >= near_plane) & (z <= far_plane) & (det > 0)
    if opacities is None:
        extend = op.full_like(z, MAX_EXTEND)
    else:
        o = opacities[:, None, :] + 0 * z  # broadcast to (B, V, N)
        visible &= o >= ALPHA_THRESHOLD
        extend = op.sqrt(2.0 * op.log(o.clip(min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clip(max=MAX_EXTEND)
    rx = op.nan_to_num(op.ceil(extend * op.sqrt(a.clip(min=0)))).clip(max=2 ** 30)
    ry = op.nan_to_num(op.ceil(extend * op.sqrt(c.clip(min=0)))).clip(max=2 ** 30)
    visible &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
    return {"mx": mx, "my": my, "z": z, "ca": c * inv, "cb": -b * inv, "cc": a * inv, "a": a,
            "b": b, "c": c, "rx": rx, "ry": ry, "visible": visible,
            "o": None if opacities is None else o}


# --- rendering ----------------------------------------------------------------------------------

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
    B = math.prod(batch)
    op = _ops(means.device)
    n_bands = _num_bands(op, width, height)
    pool = _pool(op)
    compiled = _compiled_path(op)
    # project in float64: O(N) work, and float32's cancellation in R m + t and its 1/z^2
    # scaling cost ~1e-4 relative accuracy for Gaussians near the near plane. On CPU, slices
    # of the Gaussians are projected concurrently on the worker threads.
    if compiled:
        p = _project_compiled(pool, means.reshape(B, N, 3), covariances.reshape(B, N, 3, 3),
                              opacities.reshape(B, N), viewmats.reshape(B, V, 4, 4),
                              Ks.reshape(B, V, 3, 3), width, height, near_plane, far_plane, eps2d)
    else:
        def arr(t: Tensor, shape):
            return op.astype(op.asarray(t.reshape(shape)), op.f64)

        p = _project(op, arr(means, (B, N, 3)), arr(covariances, (B, N, 3, 3)),
                     arr(viewmats, (B, V, 4, 4)), arr(Ks, (B, V, 3, 3)), width, height,
                     arr(opacities, (B, N)), near_plane, far_plane, eps2d)
    fdt = op.float_dtype(features)
    P = width * height
    grad = torch.is_grad_enabled() and features.requires_grad
    ft = features.reshape(B, N, C)
    out = None if grad else empty_fast((B, V, P, C), features.dtype, features.device)
    # coverage at least in float32 (half precision cannot tell 0.999 from 1)
    alpha = torch.empty(B, V, P, dtype=torch.promote_types(features.dtype, torch.float32),
                        device=features.device)
    if compiled and out is not None:
        # the kernels read float32/float64 features and write the output in place
        kdt = torch.float64 if fdt == np.float64 else torch.float32
        kernel_ft = ft.detach().to(kdt).contiguous().numpy()
        kernel_out = out if out.dtype == kdt else torch.empty(out.shape, dtype=kdt)
    rows = [k * height // n_bands for k in range(n_bands + 1)]
    images = []
    # a loop over images (not pixels or Gaussians): each iteration is a full vectorised render
    for bi in range(B):
        for vi in range(V):
            # per-Gaussian rows (mx, my, a/2, b, c/2, o) of sigma = 0.5 (a dx^2 + c dy^2) + b dx dy
            table = [p["mx"][bi, vi], p["my"][bi, vi], 0.5 * p["ca"][bi, vi], p["cb"][bi, vi],
                     0.5 * p["cc"][bi, vi], p["o"][bi, vi]]
            visible = p["visible"][bi, vi]
            gauss = _front_to_back(op, [op.astype(c, fdt) for c in table], p["z"][bi, vi],
                                   visible, width, height)
            img_out = None if out is None else out[bi, vi]
            cover_img = alpha[bi, vi]

            if compiled:
                g_args = [gauss[k] for k in ("mx", "my", "hA", "Bc", "hC", "o", "i0", "i1", "j0",
                                             "nj")] + [op.astype(gauss["vid"], np.int32)]
                cover_np = cover_img.numpy()
                img_np = None if img_out is None else kernel_out[bi, vi].numpy()

                def band(r0: int, r1: int):
                    """Composite (and, without autograd, multiply out) image rows [r0, r1)."""
                    crow, col, weights, pairs = cpu_kernels.composite_band(
                        *g_args, width, r0, r1, cover_np[r0 * width:r1 * width])
                    if img_np is not None:
                        cpu_kernels.accumulate(crow, col, weights, kernel_ft[bi],
                                               img_np[r0 * width:r1 * width])
                    return (torch.from_numpy(crow.astype(np.int32)), torch.from_numpy(col),
                            torch.from_numpy(weights), (pairs, int(crow[-1])))
            else:
                def band(r0: int, r1: int):
                    """Composite (and, without autograd, multiply out) image rows [r0, r1)."""
                    crow, col, weights, cover, counts = composite(op, gauss, width, r0, r1)
                    cover_img[r0 * width:r1 * width] = op.tensor(cover).to(alpha.device,
                                                                          alpha.dtype)
                    crow, col = op.tensor(crow), op.tensor(col)
                    weights = op.tensor(weights).to(features.dtype)
                    if img_out is not None:
                        _csr_matmul(crow, col, weights, ft[bi], (r1 - r0) * width,
                                    img_out[r0 * width:r1 * width])
                    return crow, col, weights, counts

            # independent row bands on worker threads: the kernels release the GIL, and unlike
            # per-op OpenMP teams the bands never wait on each other until the end; bands are
            # small enough for a band's pair arrays to stay in cache
            results = _map(pool if n_bands > 1 else None, band, rows[:-1], rows[1:])
            if stats is not None:
                stats["visible"] = stats.get("visible", 0) + int(visible.sum())
                for key, k in (("pairs", 0), ("composited", 1)):
                    stats[key] = stats.get(key, 0) + sum(r[3][k] for r in results)
            if img_out is None:  # autograd: one differentiable product over all bands
                offsets = np.cumsum([0] + [int(r[0][-1]) for r in results])
                crow = torch.cat([results[0][0][:1]] + [r[0][1:] + int(o)
                                                        for r, o in zip(results, offsets)])
                images.append(_csr_matmul(crow, torch.cat([r[1] for r in results]),
                                          torch.cat([r[2] for r in results]).to(features.dtype),
                                          ft[bi], P, None))
    if compiled and out is not None and kernel_out is not out:
        out.copy_(kernel_out)
    img = torch.stack(images).reshape(B, V, P, C) if out is None else out
    return (img.reshape(batch + (V, height, width, C)),
            alpha.reshape(batch + (V, height, width)))


#: pixels per row band on CPU: a band's pair arrays (~25 pairs per pixel) then fit in L2/L3
_BAND_PIXELS = 1 << 13
#: Gaussians per projection slice on CPU (slices run concurrently on the worker threads)
_PROJECT_SLICE = 1 << 16
_POOL: dict[int, object] = {}


def _num_bands(op: _NumpyOps, width: int, height: int) -> int:
    """Row bands per image on the CPU path (1 on other devices)."""
    if not _compiled_path(op):
        return 1
    return max(1, min(height, -(-(width * height) // _BAND_PIXELS)))


def _project_compiled(pool, means: Tensor, covariances: Tensor, opacities: Tensor,
                      viewmats: Tensor, Ks: Tensor, width: int, height: int, near_plane: float,
                      far_plane: float, eps2d: float) -> dict:
    """:func:`_project`'s dict, computed by the compiled kernel in slices of Gaussians on the
    worker threads (inputs are read in their own dtype and promoted per element)."""
    B, N = means.shape[:2]
    V = viewmats.shape[1]
    args = [t.detach().to(torch.float64 if t.dtype == torch.float64 else torch.float32)
            .contiguous().numpy() for t in (means, covariances, opacities, viewmats, Ks)]
    out = np.empty((12, B, V, N))  # NumPy: huge pages; not recycled (leaves the cache to outputs)
    visible = np.empty((B, V, N), dtype=np.bool_)
    n_slices = max(1, -(-N // _PROJECT_SLICE)) if pool is not None else 1
    cuts = [k * N // n_slices for k in range(n_slices + 1)]
    _map(pool if n_slices > 1 else None, lambda a, b: cpu_kernels.project(
        *args, width, height, near_plane, far_plane, eps2d, MAX_EXTEND, out, visible, a, b),
        cuts[:-1], cuts[1:])
    p = dict(zip(cpu_kernels.PROJECTION_ROWS, out))
    p["visible"] = visible
    return p


def _compiled_path(op: _NumpyOps) -> bool:
    """Whether bands are composited by the compiled kernels (CPU) or by array ops (other devices,
    or CPU with ``_NUMPY_ON_CPU`` off)."""
    return type(op) is _NumpyOps


def _pool(op: _NumpyOps):
    """Worker threads for bands and slices: one per torch intra-op thread (None: run inline)."""
    n = torch.get_num_threads()
    if not _compiled_path(op) or n <= 1:
        return None
    if n not in _POOL:
        from concurrent.futures import ThreadPoolExecutor
        _POOL[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="splat")
    return _POOL[n]


def _map(pool, fn, *iterables) -> list:
    if pool is None:
        return [fn(*args) for args in zip(*iterables)]
    return list(pool.map(fn, *iterables))


def _front_to_back(op: _NumpyOps, table: list, depths, visible, width: int, height: int
                   ) -> dict:
    """Visible Gaussians sorted by depth (stable: ties keep input order, like gsplat's radix
    sort) with their (mx, my, a/2, b, c/2, o) and the pixel box of their alpha >= 1/255 ellipse."""
    vid = op.flatnonzero(visible)
    vid = op.take(vid, op.argsort_float(op.take(depths, vid)))
    mx, my, hA, Bc, hC, o = (op.take(c, vid) for c in table)
    # sigma <= L  <=>  o exp(-sigma) >= 1/255; L capped like gsplat's 3.33-sigma box
    L = op.log(o * 255.0).clip(max=0.5 * MAX_EXTEND ** 2)
    Lm = L * (1 + 1e-4) + 1e-4  # enumeration margin: the exact alpha test decides
    det4 = (4 * hA * hC - Bc * Bc).clip(min=1e-30)  # det(conic)
    half_w = op.sqrt((4 * Lm * hC / det4).clip(min=0))  # sqrt(2 L Sigma_xx), Sigma = conic^-1
    half_h = op.sqrt((4 * Lm * hA / det4).clip(min=0))
    j0 = op.astype(op.ceil(mx - half_w - 0.5).clip(min=0), op.i64)
    j1 = op.astype(op.floor(mx + half_w - 0.5).clip(max=width - 1), op.i64)
    i0 = op.astype(op.ceil(my - half_h - 0.5).clip(min=0), op.i64)
    i1 = op.astype(op.floor(my + half_h - 0.5).clip(max=height - 1), op.i64)
    return {"vid": vid, "mx": mx, "my": my, "hA": hA, "Bc": Bc, "hC": hC, "o": o,
            "i0": i0, "i1": i1, "j0": j0, "nj": (j1 - j0 + 1).clip(min=0)}


def composite(op: _TorchOps, gauss: tuple, width: int, r0: int, r1: int):
    """Front-to-back compositing weights of image rows [r0, r1) as a CSR (pixels x Gaussians),
    with torch ops (the CPU path uses :func:`cpu_kernels.composite_band`).

    ``gauss`` is :func:`_front_to_back`'s output, per-pixel alphas are evaluated in its dtype
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
    return (op.astype(crow, op.i32), gid, op.astype(weights, alpha.dtype), cover,
            (int(pix.shape[0]), int(gid.shape[0])))


def _pairs(op: _TorchOps, g: dict, width: int, r0: int, r1: int):
    """Depth-ordered (pixel id in the band, Gaussian id (int32), alpha) of every pair with
    alpha >= 1/255 whose pixel lies in image rows [r0, r1)."""
    sel = op.flatnonzero((g["i1"] >= r0) & (g["i0"] < r1))  # Gaussians reaching the band
    vid, mx, my, hA, Bc, hC, o, i0, i1, j0, nj = (
        op.take(g[k], sel) for k in ("vid", "mx", "my", "hA", "Bc", "hC", "o", "i0", "i1", "j0",
                                     "nj"))
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
    parts = [_eval_blocks(op, [c[k:k + step] for c in bt], b_i0[k:k + step], b_j0[k:k + step],
                          bpix[k:k + step], bgid[k:k + step], s, width, r1)
             for k in range(0, max(Nb, 1), step)]
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat([q[i] for q in parts]) for i in range(3))


def _eval_blocks(op: _TorchOps, bt: list, b_i0, b_j0, bpix, bgid, s: int, width: int,
                 height: int):
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
    hist = np.bincount(np.minimum(ni, cap - 1) * cap + np.minimum(nj, cap - 1),
                       minlength=cap * cap).reshape(cap, cap).astype(np.float64)
    n = np.arange(cap, dtype=np.float64)
    best, best_cost = 1, math.inf
    for s in _BLOCK_SIZES:
        nb = np.ceil(n / s)
        cost = float((hist * (nb[:, None] * nb[None, :])).sum()) * (s * s + 6)
        if cost < best_cost:
            best, best_cost = s, cost
    return best


def _csr_matmul(crow: Tensor, col: Tensor, val: Tensor, dense: Tensor, rows: int,
                out: Tensor | None) -> Tensor:
    """(rows x N) CSR matrix @ dense (N, C); differentiable w.r.t. ``dense`` when ``out`` is None."""
    device = dense.device
    if device.type == "cpu" and dense.dtype not in (torch.float32, torch.float64):
        # MKL's sparse product has no half-precision kernels: accumulate in float32
        res = _csr_matmul(crow, col, val.float(), dense.float(), rows, None)
        return res.to(dense.dtype) if out is None else out.copy_(res)
    # invariants are not checked (too slow), so hand over plain dense index arrays
    crow, col, val = (t.to(device).contiguous() for t in (crow, col, val))
    if device.type != "cpu":
        crow, col = crow.long(), col.long()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        mat = torch.sparse_csr_tensor(crow, col, val, (rows, dense.shape[0]),
                                      check_invariants=False)
        if out is None:
            return torch.sparse.mm(mat, dense)
        # beta=0 never reads ``out``, so it may hold garbage (rows without pairs are zeroed)
        return torch.addmm(out, mat, dense, beta=0, out=out)
