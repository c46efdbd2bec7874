"""Independent float64 brute-force 3DGS compositor and random scenes for renderer tests.

Written from the formulas in docs/design.md ("Gaussian splatting conventions") (and gsplat's CUDA kernels), sharing no code with
``splatdistill.render``: every pixel looks at every Gaussian, sorted by depth, and composites them in
a plain Python loop with the exact thresholds.
"""

from __future__ import annotations

import numpy as np


def _rotation(rng: np.random.Generator, n: int) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def random_scene(seed: int, n: int, channels: int, width: int = 32, height: int = 24):
    """Random Gaussians around a random camera: (means, covs, opacities, features, viewmat, K).

    Exercises the awkward cases: Gaussians behind the camera and inside the near plane, outside the
    field of view (Jacobian clamp), strongly anisotropic and huge ones, opacities from below 1/255 to
    1, and an opaque wall over part of the view (so early termination happens). Depths are not
    tied: two Gaussians within float32 rounding of one depth may legitimately swap order.
    """
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.8, 1.4) * width
    K = np.array(
        [
            [f, 0, width / 2 + rng.uniform(-2, 2)],
            [0, f * rng.uniform(0.9, 1.1), height / 2 + rng.uniform(-2, 2)],
            [0, 0, 1.0],
        ]
    )
    # camera-frame positions, then a random rigid transform to world
    z = rng.uniform(-0.5, 6.0, n)
    z[: n // 50] = rng.uniform(0.0, 0.02, n // 50)  # around the near plane
    x = rng.uniform(-0.8, 0.8, n) * np.maximum(z, 0.3)
    y = rng.uniform(-0.6, 0.6, n) * np.maximum(z, 0.3)
    scales = np.exp(rng.uniform(np.log(0.002), np.log(0.06), (n, 3))) * np.sqrt(300 / n)
    scales[: n // 40] *= 10  # some very large ones
    opac = rng.uniform(0.0, 1.0, n) ** 0.5
    opac[: n // 10] = rng.uniform(0.0, 0.01, n // 10)  # around and under 1/255
    # an opaque wall of flat Gaussians over part of the view: pixels behind it terminate early
    wall = slice(n // 5, n // 5 + int(n * rng.uniform(0.15, 0.3)))
    k = len(range(n)[wall])
    z[wall] = rng.uniform(3.0, 3.3, k)
    x[wall] = rng.uniform(-0.9, 0.3, k) * z[wall]
    y[wall] = rng.uniform(-0.6, 0.6, k) * z[wall]
    scales[wall] = np.exp(rng.uniform(np.log(0.08), np.log(0.2), (k, 3))) * np.sqrt(2000 / n)
    scales[wall, 2] *= 0.1
    opac[wall] = rng.uniform(0.95, 1.0, k)
    opac[wall][: k // 2] = 1.0
    pc = np.stack([x, y, z], 1)
    Rg = _rotation(rng, n)
    Rg[wall] = _rotation(rng, 1)[0] * 0 + np.eye(3)
    cov_c = (Rg * scales[:, None, :] ** 2) @ Rg.transpose(0, 2, 1)
    feats = rng.normal(size=(n, channels))
    R = _rotation(rng, 1)[0]
    R = R if rng.uniform() < 0.7 else np.eye(3)
    t = rng.normal(size=3)
    # world = R^T (p_c - t)  =>  viewmat = [R | t]
    means = (pc - t) @ R
    covs = R.T @ cov_c @ R
    viewmat = np.eye(4)
    viewmat[:3, :3], viewmat[:3, 3] = R, t
    perm = rng.permutation(n)
    # float32-representable, so the float64 oracle and a float32 renderer see identical inputs
    out = (means[perm], covs[perm], opac[perm], feats[perm], viewmat, K)
    return tuple(a.astype(np.float32).astype(np.float64) for a in out)


def project64(means, covs, viewmat, K, width, height, eps2d=0.3):
    """float64 EWA projection: (means2d (N,2), conics (N,3) [xx, xy, yy], depths (N,))."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    pc = means @ R.T + t
    cc = R @ covs @ R.T
    x, y, z = pc.T
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # gsplat evaluates the Jacobian at the mean clamped to 1.3x the field of view
    limx_p = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    limx_n = cx / fx + 0.3 * (0.5 * width / fx)
    limy_p = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    limy_n = cy / fy + 0.3 * (0.5 * height / fy)
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = z * np.clip(x / z, -limx_n, limx_p)
        ty = z * np.clip(y / z, -limy_n, limy_p)
        J = np.zeros((len(z), 2, 3))
        J[:, 0, 0] = fx / z
        J[:, 0, 2] = -fx * tx / z**2
        J[:, 1, 1] = fy / z
        J[:, 1, 2] = -fy * ty / z**2
        cov2 = J @ cc @ J.transpose(0, 2, 1) + eps2d * np.eye(2)
        det = cov2[:, 0, 0] * cov2[:, 1, 1] - cov2[:, 0, 1] * cov2[:, 1, 0]
        conics = np.stack([cov2[:, 1, 1] / det, -cov2[:, 0, 1] / det, cov2[:, 0, 0] / det], 1)
        means2d = np.stack([fx * x / z + cx, fy * y / z + cy], 1)
    return means2d, conics, z, det


def brute_force(means, covs, opac, feats, viewmat, K, width, height, near=0.01):
    """Per-pixel reference render in float64.

    Returns (features (H, W, C), alpha (H, W), stopped (H, W) bool: early termination happened).
    """
    means2d, conics, z, det = project64(means, covs, viewmat, K, width, height)
    ok = (z >= near) & (det > 0) & np.isfinite(means2d).all(1)
    idx = np.nonzero(ok)[0]
    idx = idx[np.argsort(z[idx], kind="stable")]
    C = feats.shape[1]
    img = np.zeros((height, width, C))
    alpha_img = np.zeros((height, width))
    stopped = np.zeros((height, width), dtype=bool)
    for v in range(height):
        for u in range(width):
            px, py = u + 0.5, v + 0.5
            dx = means2d[idx, 0] - px
            dy = means2d[idx, 1] - py
            a, b, c = conics[idx, 0], conics[idx, 1], conics[idx, 2]
            sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
            alphas = np.minimum(0.999, opac[idx] * np.exp(-sigma))
            T = 1.0
            acc = np.zeros(C)
            for k in np.nonzero((sigma >= 0) & (alphas >= 1.0 / 255.0))[0]:
                next_T = T * (1.0 - alphas[k])
                if next_T <= 1e-4:
                    stopped[v, u] = True
                    break
                acc += feats[idx[k]] * alphas[k] * T
                T = next_T
            img[v, u] = acc
            alpha_img[v, u] = 1.0 - T
    return img, alpha_img, stopped
