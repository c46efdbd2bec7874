"""Monocular depth to the views' metric scale: fit ``1/z = s * r + t`` per view.

Why: monocular models (Depth Anything V2's relative models) predict affine-invariant inverse depth
``r``: right up to an unknown scale and shift, which differ per image. Splatting needs depth in the
cameras' units, so each view's ``(s, t)`` is fitted from what the data knows:

- :func:`fit_to_depth`: where the data has depth at some pixels (a sensor, or sparse SfM points), a
  robust least-squares fit of ``1/z`` on ``r`` at those pixels (trimmed: the worst 20% residuals are
  dropped and the fit repeated);
- :func:`fit_to_poses`: otherwise from the posed pair itself: the other view, warped into this one
  through the candidate depth, must look like this one. The poses are metric, so the photometric error
  is smallest at the metric ``(s, t)``: a search over the depths of ``r``'s 5th and 95th percentiles
  (log-spaced, anchored at the camera baseline), refined by shrinking local grids.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from splatdistill.geometry.cameras import Cameras
from splatdistill.lifters.photometric import inverse_warp, photo_error
from splatdistill.threads import torch_threads

#: photometric error charged to a pixel that the candidate depth sends out of the other view
OUT_OF_VIEW_ERROR = 0.35
MIN_DEPTH_PIXELS = 16


def fit_to_depth(rel: Tensor, depth: Tensor, trim: float = 0.2, rounds: int = 3) -> tuple[float, float] | None:
    """``(s, t)`` with ``1/depth ~ s * rel + t`` on the pixels where ``depth > 0`` (None if fewer than
    :data:`MIN_DEPTH_PIXELS`)."""
    ok = (depth > 0) & torch.isfinite(depth) & torch.isfinite(rel)
    if int(ok.sum()) < MIN_DEPTH_PIXELS:
        return None
    x, y = rel[ok].double(), 1.0 / depth[ok].double()
    if float(x.std()) <= 1e-6 * max(float(x.abs().mean()), 1e-12):  # a flat prediction: the shift alone
        return 0.0, float(y.median())
    keep = torch.ones_like(x, dtype=torch.bool)
    s = t = 0.0
    for _ in range(rounds):
        A = torch.stack([x[keep], torch.ones_like(x[keep])], 1)
        sol = torch.linalg.lstsq(A, y[keep, None]).solution[:, 0]
        s, t = float(sol[0]), float(sol[1])
        res = (s * x + t - y).abs()
        keep = res <= torch.quantile(res, 1 - trim)
    return s, t


def _small(x: Tensor, cameras: Cameras, size: int) -> tuple[Tensor, Tensor, int, int]:
    """Resize maps/images (V, C, H, W) so the long side is ``size``: (resized, scaled Ks, h, w)."""
    H, W = x.shape[-2:]
    f = size / max(H, W)
    h, w = max(8, round(H * f)), max(8, round(W * f))
    K = cameras.Ks.double().clone()
    K[:, 0] *= w / W
    K[:, 1] *= h / H
    return F.interpolate(x.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=True), K.float(), h, w


def _cost(
    q_near: Tensor,
    q_far: Tensor,
    r: Tensor,
    img_a: Tensor,
    K_a: Tensor,
    vm_a: Tensor,
    srcs: list[tuple[Tensor, Tensor, Tensor]],
) -> Tensor:
    """Photometric error of view a for candidate inverse depths at r's percentiles (N,) -> (N,)."""
    N = q_near.shape[0]
    q = q_far[:, None, None] + (q_near - q_far)[:, None, None] * r[None]
    depth = 1.0 / q.clamp_min(q_far[:, None, None] * 0.2)
    errs = []
    for img_b, K_b, vm_b in srcs:
        warped, inside = inverse_warp(
            depth,
            K_a.expand(N, 3, 3),
            vm_a.expand(N, 4, 4),
            img_b.expand(N, -1, -1, -1),
            K_b.expand(N, 3, 3),
            vm_b.expand(N, 4, 4),
        )
        err = photo_error(warped, img_a.expand(N, -1, -1, -1))
        errs.append(torch.where(inside, err, torch.full_like(err, OUT_OF_VIEW_ERROR)))
    return torch.stack(errs).amin(0).mean((1, 2))  # per pixel the best source (occlusions), then the mean


def fit_to_poses(
    rel: Tensor, images: Tensor, cameras: Cameras, size: int = 40, steps: tuple[int, int] = (24, 10), rounds: int = 4
) -> list[tuple[float, float]]:
    """Per view ``(s, t)`` with ``1/z = s * rel + t`` from the photometric consistency of the posed views
    (V >= 2; rel (V, H, W), images (V, 3, H, W) in [0, 1]); see the module docstring. One thread: the
    ops are small (several times slower on two contended threads)."""
    with torch.no_grad(), torch_threads(1):
        return _fit_to_poses(rel, images, cameras, size, steps, rounds)


def _fit_to_poses(
    rel: Tensor, images: Tensor, cameras: Cameras, size: int, steps: tuple[int, int], rounds: int
) -> list[tuple[float, float]]:
    V = rel.shape[0]
    r_small, K, _, _ = _small(rel[:, None], cameras, size)
    img_small, _, _, _ = _small(images, cameras, size)
    vms = cameras.viewmats.float()
    centres = torch.linalg.inv(vms)[:, :3, 3]
    out = []
    for a in range(V):
        r = r_small[a, 0]
        lo, hi = torch.quantile(r.flatten(), torch.tensor([0.05, 0.95], dtype=r.dtype)).tolist()
        span = hi - lo if hi - lo > 1e-6 * max(abs(hi), abs(lo), 1e-12) else 1.0  # flat: one depth for all
        rn = (r - lo) / span  # 0 at the far percentile, 1 at the near one
        others = [b for b in range(V) if b != a]
        srcs = [(img_small[b : b + 1], K[b : b + 1], vms[b : b + 1]) for b in others]
        base = max(min(float((centres[a] - centres[b]).norm()) for b in others), 1e-6)
        # candidates: near depth in [0.2, 200] baselines, far/near ratio in [1, 40] (log grids)
        log_near = torch.linspace(math.log(0.2 * base), math.log(200 * base), steps[0], dtype=torch.float64)
        log_ratio = torch.linspace(0.0, math.log(40.0), steps[1], dtype=torch.float64)
        ln, lr = torch.meshgrid(log_near, log_ratio, indexing="ij")
        ln, lr = ln.flatten(), lr.flatten()
        dn, dr = float(log_near[1] - log_near[0]), float(log_ratio[1] - log_ratio[0])
        for k in range(rounds + 1):
            cost = _cost(
                torch.exp(-ln).float(),
                torch.exp(-(ln + lr)).float(),
                rn,
                img_small[a : a + 1],
                K[a : a + 1],
                vms[a : a + 1],
                srcs,
            )
            best = int(cost.argmin())
            bn, br = float(ln[best]), float(lr[best])
            if k == rounds:
                break
            grid = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
            gn, gr = torch.meshgrid(bn + grid * dn, (br + grid * dr).clamp_min(0.0), indexing="ij")
            ln, lr = gn.flatten(), gr.flatten()
            dn, dr = dn / 2, dr / 2
        q_near, q_far = math.exp(-bn), math.exp(-(bn + br))
        s = (q_near - q_far) / span
        out.append((s, q_far - s * lo))
    return out


def inverse_depth_to_depth(rel: Tensor, s: float, t: float, max_depth: float | None = None) -> Tensor:
    """``1 / (s * rel + t)``, with inverse depths at or below 0 (beyond the fit's range) clamped to the
    farthest fitted depth x 5 (or ``max_depth``)."""
    q = s * rel.double() + t
    q_min = float(q[q > 0].min()) / 5 if bool((q > 0).any()) else 1e-3
    if max_depth is not None:
        q_min = max(q_min, 1.0 / max_depth)
    return (1.0 / q.clamp_min(q_min)).to(rel.dtype)
