"""Geometric consistency measures between views: the checks behind "the ground truth is right".

- :func:`reprojection_error`: view A's depth, lifted to 3D and projected into view B, against B's
  depth on pixels both see (relative error).
- :func:`normals_from_depth` / :func:`normal_agreement`: normals derived from depth by finite
  differences against the stored normals on planar regions (degrees).
- :func:`label_transfer_agreement`: instance ids of A's pixels against B's ids where they land.
- :func:`boundary_contrast`: image gradient on label boundaries over the gradient elsewhere
  (labels that are shifted or scrambled relative to the image lose the contrast).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splatdistill.data.scene import ViewData
from splatdistill.geometry.warp import depth_at_np, view_warp


def pixel_rays(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) camera-frame directions with z = 1 through the pixel centres (u + 0.5, v + 0.5)."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    pix = np.stack([u, v, np.ones_like(u)], -1)
    return pix @ np.linalg.inv(K).T


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points (H, W, 3) of a z-depth map."""
    return pixel_rays(K, *depth.shape) * depth[..., None]


@dataclass
class Reprojection:
    median_rel_error: float
    mean_rel_error: float
    visible_fraction: float  # share of A's valid pixels found in B within the occlusion tolerance
    n_pixels: int
    rel_errors: np.ndarray
    median_abs_error: float = float("inf")  # metres, on the same pixels


def reprojection_error(a: ViewData, b: ViewData, occlusion_tol: float = 0.05) -> Reprojection:
    """Relative depth error of A's depth reprojected into B, on mutually visible pixels.

    A pixel counts as visible in B when it lands inside B in front of the camera and B's depth
    there is not nearer by more than ``occlusion_tol`` (relative), i.e. it is not hidden.
    The tolerance only separates occlusions; a wrong pose or depth shows as a large median.
    """
    assert a.depth is not None and b.depth is not None
    valid_a, _, uv, z = view_warp(a, b)
    inside, zb = depth_at_np(b.depth, uv, z)
    ok = inside & (zb > 0)
    diff = np.abs(z[ok] - zb[ok])
    rel = diff / zb[ok]
    # Occluded in B: B sees something clearly nearer.
    visible = zb[ok] >= z[ok] * (1 - occlusion_tol)
    rel = rel[visible]
    diff = diff[visible]
    n = int(valid_a.sum())
    return Reprojection(
        float(np.median(rel)) if rel.size else float("inf"),
        float(np.mean(rel)) if rel.size else float("inf"),
        rel.size / max(n, 1),
        int(rel.size),
        rel,
        float(np.median(diff)) if diff.size else float("inf"),
    )


def normals_from_depth(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame normals from central differences of back-projected depth (0 where undefined)."""
    p = backproject(depth, K)
    dx = np.zeros_like(p)
    dy = np.zeros_like(p)
    dx[:, 1:-1] = p[:, 2:] - p[:, :-2]
    dy[1:-1] = p[2:] - p[:-2]
    n = np.cross(dy, dx)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    n = np.where(norm > 1e-12, n / np.maximum(norm, 1e-12), 0.0)
    # Face the camera (the point's direction from the camera is p itself).
    flip = np.sum(n * p, axis=-1) > 0
    n[flip] *= -1
    valid = depth > 0
    ok = np.zeros_like(valid)
    ok[1:-1, 1:-1] = valid[1:-1, 1:-1] & valid[1:-1, 2:] & valid[1:-1, :-2] & valid[2:, 1:-1] & valid[:-2, 1:-1]
    n[~ok] = 0
    return n.astype(np.float32)


def planar_mask(normals: np.ndarray, labels: np.ndarray | None = None, tol_deg: float = 1.0) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood has one normal (within ``tol_deg``) and one label: a planar patch."""
    valid = np.any(normals != 0, axis=-1)
    cos_tol = np.cos(np.radians(tol_deg))
    ok = valid.copy()
    ok[[0, -1], :] = False
    ok[:, [0, -1]] = False
    H, W = valid.shape
    c = normals[1:-1, 1:-1]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            nb = normals[1 + dy : H - 1 + dy, 1 + dx : W - 1 + dx]
            same = np.sum(c * nb, axis=-1) >= cos_tol
            if labels is not None:
                same &= labels[1:-1, 1:-1] == labels[1 + dy : H - 1 + dy, 1 + dx : W - 1 + dx]
            ok[1:-1, 1:-1] &= same
    return ok


def normal_agreement(view: ViewData) -> tuple[float, int]:
    """(median angle in degrees, pixel count) between stored normals and depth-derived normals on planar regions."""
    assert view.depth is not None and view.normals is not None
    derived = normals_from_depth(view.depth, view.K)
    mask = planar_mask(view.normals, view.instance) & np.any(derived != 0, axis=-1)
    if not mask.any():
        return float("nan"), 0
    cos = np.clip(np.sum(derived[mask] * view.normals[mask], axis=-1), -1, 1)
    return float(np.degrees(np.median(np.arccos(cos)))), int(mask.sum())


def label_transfer_agreement(a: ViewData, b: ViewData, occlusion_tol: float = 0.01) -> tuple[float, int]:
    """Share of A's pixels (visible in B, depth-consistent within ``occlusion_tol``) whose instance id matches B's."""
    assert a.depth is not None and b.depth is not None and a.instance is not None and b.instance is not None
    valid_a, _, uv, z = view_warp(a, b)
    inside, zb = depth_at_np(b.depth, uv, z)
    ok = inside & (zb > 0) & (np.abs(z - zb) <= occlusion_tol * zb)
    col, row = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    ia = a.instance[valid_a][ok]
    ib = b.instance[row[ok], col[ok]]
    return (float(np.mean(ia == ib)) if ia.size else float("nan")), int(ia.size)


def boundary_contrast(image: np.ndarray, labels: np.ndarray) -> float:
    """Mean colour gradient on label boundaries / mean gradient elsewhere (>1 when labels follow image edges)."""
    g = image.astype(np.float64)
    gx = np.zeros(g.shape[:2])
    gy = np.zeros(g.shape[:2])
    gx[:, :-1] = np.abs(g[:, 1:] - g[:, :-1]).sum(-1)
    gy[:-1] = np.abs(g[1:] - g[:-1]).sum(-1)
    bx = np.zeros(labels.shape, bool)
    by = np.zeros(labels.shape, bool)
    bx[:, :-1] = labels[:, 1:] != labels[:, :-1]
    by[:-1] = labels[1:] != labels[:-1]
    on = np.concatenate([gx[bx], gy[by]])
    off = np.concatenate([gx[~bx], gy[~by]])
    return float(on.mean() / max(off.mean(), 1e-9)) if on.size and off.size else float("nan")
