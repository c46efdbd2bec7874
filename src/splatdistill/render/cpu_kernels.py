"""Compiled CPU kernels of the torch backend: compositing and the feature product of one row band.

Why hand-written: no maintained library rasterises Gaussians on a CPU (gsplat and the reference
rasteriser are CUDA-only), and the vectorised NumPy/torch formulation in
:mod:`splatdistill.render.torch_backend` has to materialise, sort and re-read every (Gaussian,
pixel) pair several times and then hand a sparse matrix to MKL, whose CSR product runs at a tenth
of the matmul rate here. Compiled with numba, one pass over the depth-sorted Gaussians evaluates
each pair once, composites it on the spot (a pixel's Gaussians arrive front to back, so its
transmittance is a running product), and keeps only the composited pairs; a counting sort then
lists them per pixel, and each output row is accumulated in L1 from the pixel's feature rows.

All kernels release the GIL (``nogil``): the renderer runs one band per worker thread.
"""

from __future__ import annotations

import math

import numba
import numpy as np

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
TRANSMITTANCE_STOP = 1e-4
#: the rows of :func:`project`'s output, named as in ``projection.project_torch``'s dict
PROJECTION_ROWS = ("mx", "my", "z", "a", "b", "c", "ca", "cb", "cc", "rx", "ry", "o")


@numba.njit(nogil=True, cache=True)
def composite_band(mx, my, hA, Bc, hC, o, i0, i1, j0, nj, gids, width, r0, r1, cover):
    """Composite depth-sorted Gaussians into image rows [r0, r1) (3DGS rules, as gsplat 1.5).

    Per Gaussian (front to back): ``alpha = min(0.999, o exp(-sigma))`` with
    ``sigma = hA dx^2 + Bc dx dy + hC dy^2`` (``dx, dy`` = mean - pixel centre) over its pixel box
    rows ``i0..i1`` and columns ``j0 .. j0+nj-1``, in the dtype of ``mx`` (float32 like gsplat, or
    float64); pairs with ``sigma < 0`` or ``alpha < 1/255`` are skipped. A pair whose next
    transmittance would be ``<= 1e-4`` stops its pixel (exclusive: neither it nor any pair behind
    it is composited). Transmittance is carried in float64.

    Returns the composited pairs as a CSR over the band's pixels, row-major from ``r0``:
    ``(start (P+1,) int64, gaussian id (nnz,) int32 from gids, weight alpha*T (nnz,), pairs)``,
    where ``pairs`` counts every pair with ``alpha >= 1/255`` (composited or not), and writes
    ``cover[p] = 1 - T_final``.
    """
    P = (r1 - r0) * width
    trans = np.ones(P, np.float64)
    stopped = np.zeros(P, np.bool_)
    counts = np.zeros(P + 1, np.int64)
    slots = 0
    for g in range(mx.shape[0]):
        rows = min(i1[g], r1 - 1) - max(i0[g], r0) + 1
        if rows > 0 and nj[g] > 0:
            slots += rows * nj[g]
    # Gaussian-major (pixel, gaussian, weight) of the composited pairs. One Gaussian adds at most
    # P, so a buffer of >= P always makes progress; when full, it is doubled and the pass resumed
    # at the next Gaussian (growing inside the loop makes numba's code for it 2.5x slower).
    cap = max(P, min(slots, 64 * P))
    pix_buf = np.empty(cap, np.int32)
    gid_buf = np.empty(cap, np.int32)
    w_buf = np.empty(cap, mx.dtype)
    g, nnz, pairs = 0, 0, 0
    while True:
        g, nnz, pairs = _composite_pairs(
            mx,
            my,
            hA,
            Bc,
            hC,
            o,
            i0,
            i1,
            j0,
            nj,
            gids,
            width,
            r0,
            r1,
            trans,
            stopped,
            counts,
            pix_buf,
            gid_buf,
            w_buf,
            g,
            nnz,
            pairs,
        )
        if g == mx.shape[0]:
            break
        pix_buf, gid_buf, w_buf = (_grown(pix_buf, nnz), _grown(gid_buf, nnz), _grown(w_buf, nnz))
    for p in range(P):
        counts[p + 1] += counts[p]
        cover[p] = 1.0 - trans[p]
    # counting sort by pixel; stable, so each pixel's pairs stay front to back
    fill = counts[:-1].copy()
    col = np.empty(nnz, np.int32)
    weight = np.empty(nnz, mx.dtype)
    for k in range(nnz):
        p = pix_buf[k]
        pos = fill[p]
        fill[p] = pos + 1
        col[pos] = gid_buf[k]
        weight[pos] = w_buf[k]
    return counts, col, weight, pairs


@numba.njit(nogil=True, cache=True)
def _composite_pairs(
    mx,
    my,
    hA,
    Bc,
    hC,
    o,
    i0,
    i1,
    j0,
    nj,
    gids,
    width,
    r0,
    r1,
    trans,
    stopped,
    counts,
    pix_buf,
    gid_buf,
    w_buf,
    g_first,
    nnz,
    pairs,
):
    """The pass of :func:`composite_band` from Gaussian ``g_first`` until the end or until the
    pair buffers could overflow; returns (next Gaussian, pairs kept, pairs seen)."""
    ftype = mx.dtype.type
    half, amax, amin = ftype(0.5), ftype(MAX_ALPHA), ftype(ALPHA_THRESHOLD)
    cap = pix_buf.shape[0]
    for g in range(g_first, mx.shape[0]):
        a = max(i0[g], r0)
        b = min(i1[g], r1 - 1)
        if b < a or nj[g] <= 0:
            continue
        if nnz + (b - a + 1) * nj[g] > cap:
            return g, nnz, pairs
        gx, gy, ha, bc, hc, og = mx[g], my[g], hA[g], Bc[g], hC[g], o[g]
        gid = gids[g]
        for i in range(a, b + 1):
            dy = gy - (ftype(i) + half)
            # -sigma = (-hC dy^2) + (-Bc dy) dx + (-hA dx^2): the NumPy path's operation order
            ty = -hc * dy * dy
            by = -bc * dy
            base = (i - r0) * width
            for j in range(j0[g], j0[g] + nj[g]):
                dx = gx - (ftype(j) + half)
                nsig = ty + by * dx
                nsig += -ha * dx * dx
                if not nsig <= 0:  # not positive definite up to rounding (or NaN): skipped
                    continue
                alpha = min(og * math.exp(nsig), amax)
                if alpha < amin:
                    continue
                pairs += 1
                p = base + j
                if stopped[p]:
                    continue
                t = trans[p]
                t_next = t * (1.0 - np.float64(alpha))
                if t_next <= TRANSMITTANCE_STOP:
                    stopped[p] = True
                    continue
                trans[p] = t_next
                pix_buf[nnz] = p
                gid_buf[nnz] = gid
                w_buf[nnz] = alpha * t
                nnz += 1
                counts[p + 1] += 1
    return mx.shape[0], nnz, pairs


@numba.njit(nogil=True, cache=True)
def _grown(buf, used):
    """A buffer of twice the size holding ``buf[:used]``."""
    out = np.empty(2 * buf.shape[0], buf.dtype)
    out[:used] = buf[:used]
    return out


@numba.njit(nogil=True, cache=True, fastmath={"contract"})
def accumulate(start, col, weight, features, out):
    """``out[p] = sum_k weight[k] features[col[k]]`` over each pixel's pairs ``start[p]:start[p+1]``.

    Four feature rows are combined per pass over the output row, so each output element is read
    and written once per four pairs (the row stays in L1; the feature rows stream from cache).
    """
    C = features.shape[1]
    zero = out.dtype.type(0)
    for p in range(start.shape[0] - 1):
        row = out[p]
        for c in range(C):
            row[c] = zero
        k, end = start[p], start[p + 1]
        while k + 4 <= end:
            w0, w1, w2, w3 = weight[k], weight[k + 1], weight[k + 2], weight[k + 3]
            f0, f1 = features[col[k]], features[col[k + 1]]
            f2, f3 = features[col[k + 2]], features[col[k + 3]]
            for c in range(C):
                row[c] += (w0 * f0[c] + w1 * f1[c]) + (w2 * f2[c] + w3 * f3[c])
            k += 4
        while k < end:
            w0, f0 = weight[k], features[col[k]]
            for c in range(C):
                row[c] += w0 * f0[c]
            k += 1


@numba.njit(nogil=True, cache=True)
def stable_argsort_f64(values):
    """Stable argsort of float64 values (no NaNs) by an LSD radix sort on 16-bit digits of their
    order-preserving integer image: 3-4x faster than NumPy's stable (merge) sort on ~10^5 depths,
    and ties keep input order like gsplat's radix sort."""
    n = values.shape[0]
    bits = (values + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0: they tie, as in NumPy
    keys = np.empty(n, np.uint64)
    sign = np.uint64(1) << np.uint64(63)
    for i in range(n):  # flip negatives entirely, set the sign bit of positives
        b = bits[i]
        keys[i] = ~b if b & sign else b | sign
    order = np.arange(n)
    tmp = np.empty(n, np.int64)
    counts = np.empty(1 << 16, np.int64)
    mask = np.uint64(0xFFFF)
    for shift in range(0, 64, 16):
        sh = np.uint64(shift)
        counts[:] = 0
        for i in range(n):
            counts[(keys[i] >> sh) & mask] += 1
        if n == 0 or counts[(keys[0] >> sh) & mask] == n:
            continue  # every key has this digit: the pass would not move anything
        total = 0
        for d in range(1 << 16):
            c = counts[d]
            counts[d] = total
            total += c
        for i in range(n):
            idx = order[i]
            d = (keys[idx] >> sh) & mask
            tmp[counts[d]] = idx
            counts[d] += 1
        order, tmp = tmp, order
    return order


@numba.njit(nogil=True, cache=True, error_model="numpy")
def project(
    means,
    covariances,
    opacities,
    viewmats,
    Ks,
    width,
    height,
    near_plane,
    far_plane,
    eps2d,
    max_extend,
    out,
    visible,
    n_first,
    n_end,
):
    """EWA projection of (B, N) Gaussians into (B, V) cameras in float64 (whatever the input
    dtype): the CPU twin of ``projection.project_torch``, with the same formulas in the same order
    (one pass per Gaussian instead of ~100 array passes and no float64 copies of the inputs).

    Writes Gaussians ``n_first:n_end`` of ``out`` (12, B, V, N) float64 -- rows
    :data:`PROJECTION_ROWS`: 2D mean, depth, 2D covariance (a, b, c) after the low-pass, conic
    (ca, cb, cc), opacity-aware box half sizes, opacity -- and of ``visible`` (B, V, N) bool.
    """
    B = means.shape[0]
    V = viewmats.shape[1]
    for bi in range(B):
        for vi in range(V):
            vm, K = viewmats[bi, vi], Ks[bi, vi]
            r00, r01, r02 = np.float64(vm[0, 0]), np.float64(vm[0, 1]), np.float64(vm[0, 2])
            r10, r11, r12 = np.float64(vm[1, 0]), np.float64(vm[1, 1]), np.float64(vm[1, 2])
            r20, r21, r22 = np.float64(vm[2, 0]), np.float64(vm[2, 1]), np.float64(vm[2, 2])
            tx, ty, tz = np.float64(vm[0, 3]), np.float64(vm[1, 3]), np.float64(vm[2, 3])
            fx, fy = np.float64(K[0, 0]), np.float64(K[1, 1])
            cx, cy = np.float64(K[0, 2]), np.float64(K[1, 2])
            # gsplat clamps the point at which the Jacobian is taken to 1.3x the field of view
            lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
            lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
            lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
            lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
            for n in range(n_first, n_end):
                m0, m1, m2 = (np.float64(means[bi, n, 0]), np.float64(means[bi, n, 1]), np.float64(means[bi, n, 2]))
                x = r00 * m0 + r01 * m1 + r02 * m2 + tx
                y = r10 * m0 + r11 * m1 + r12 * m2 + ty
                z = r20 * m0 + r21 * m1 + r22 * m2 + tz
                rz = 1.0 / z
                xz, yz = x * rz, y * rz
                j00, j11 = fx * rz, fy * rz
                j02 = -j00 * min(max(xz, -lim_x_neg), lim_x_pos)
                j12 = -j11 * min(max(yz, -lim_y_neg), lim_y_pos)
                # T = J R (2 x 3); cov2d = T S T^T
                t00, t01, t02 = j00 * r00 + j02 * r20, j00 * r01 + j02 * r21, j00 * r02 + j02 * r22
                t10, t11, t12 = j11 * r10 + j12 * r20, j11 * r11 + j12 * r21, j11 * r12 + j12 * r22
                S = covariances[bi, n]
                s00, s01, s02 = np.float64(S[0, 0]), np.float64(S[0, 1]), np.float64(S[0, 2])
                s11, s12, s22 = np.float64(S[1, 1]), np.float64(S[1, 2]), np.float64(S[2, 2])
                u0 = s00 * t00 + s01 * t01 + s02 * t02  # S t0
                u1 = s01 * t00 + s11 * t01 + s12 * t02
                u2 = s02 * t00 + s12 * t01 + s22 * t02
                v0 = s00 * t10 + s01 * t11 + s02 * t12  # S t1
                v1 = s01 * t10 + s11 * t11 + s12 * t12
                v2 = s02 * t10 + s12 * t11 + s22 * t12
                a = t00 * u0 + t01 * u1 + t02 * u2 + eps2d
                b = t10 * u0 + t11 * u1 + t12 * u2
                c = t10 * v0 + t11 * v1 + t12 * v2 + eps2d
                det = a * c - b * b
                inv = 1.0 / det
                o = np.float64(opacities[bi, n])
                extend = min(math.sqrt(2.0 * math.log(max(o, ALPHA_THRESHOLD) / ALPHA_THRESHOLD)), max_extend)
                rx = math.ceil(extend * math.sqrt(max(a, 0.0)))
                ry = math.ceil(extend * math.sqrt(max(c, 0.0)))
                rx = min(0.0 if math.isnan(rx) else rx, 2.0**30)
                ry = min(0.0 if math.isnan(ry) else ry, 2.0**30)
                gx, gy = fx * xz + cx, fy * yz + cy
                visible[bi, vi, n] = (
                    z >= near_plane
                    and z <= far_plane
                    and det > 0
                    and o >= ALPHA_THRESHOLD
                    and gx + rx > 0
                    and gx - rx < width
                    and gy + ry > 0
                    and gy - ry < height
                )
                out[0, bi, vi, n], out[1, bi, vi, n], out[2, bi, vi, n] = gx, gy, z
                out[3, bi, vi, n], out[4, bi, vi, n], out[5, bi, vi, n] = a, b, c
                out[6, bi, vi, n], out[7, bi, vi, n], out[8, bi, vi, n] = c * inv, -b * inv, a * inv
                out[9, bi, vi, n], out[10, bi, vi, n], out[11, bi, vi, n] = rx, ry, o
