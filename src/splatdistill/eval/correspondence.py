"""Multi-view correspondence: ground-truth pixel correspondences from depth and poses, feature matching
by cosine nearest neighbour with a ratio test, and recall of the best matches (docs/evaluation.md).

Both views are matched on a regular pixel grid whose spacing is ``grid_step_ref`` pixels of the 160x120
reference resolution (so the grid cannot blur the 5 px threshold). Per pair (A, B): grid pixels of A
with valid depth are back-projected and projected into B; those landing inside B (and, when B has
depth, not occluded there) are the queries, each with its ground-truth location in B. Descriptors are
sampled bilinearly from each view's patch grid. Each query takes its cosine nearest neighbour in B; the ``keep`` matches with
the smallest ratio d1/d2 of the two nearest descriptor distances are scored by their reprojection error
(matched candidate vs ground-truth location, in B's pixels), against thresholds of 5/10/20 reference
pixels scaled by B's image diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from splatdistill.data.scene import ViewData
from splatdistill.eval.features import sample_features
from splatdistill.eval.metrics import (
    CORRESPONDENCE_THRESHOLDS_PX,
    correspondence_threshold_scale,
    recall_at_thresholds,
    rotation_bin_label,
    rotation_bin_labels,
)
from splatdistill.geometry.cameras import rotation_angle_deg
from splatdistill.geometry.warp import view_warp

if TYPE_CHECKING:  # for annotations only (the config imports nothing heavy)
    from splatdistill.eval.config import EvalConfig


@dataclass
class CorrespondenceConfig:
    """Matching knobs."""

    queries: int = 8192  # cap on queries per pair (visible grid pixels of A; random subset if more)
    keep: int = 1000  # best matches (by ratio) scored per pair
    grid_step_ref: float = 2.0  # candidate spacing in B, in pixels of the 160x120 reference
    occlusion_tol: float = 0.05  # relative depth tolerance of the visibility test in B
    min_overlap: float = 0.25  # pair selection: fraction of A's valid pixels visible in B
    max_pairs: int = 48  # pairs per dataset
    mutual: bool = False  # also require B's match to point back to the query (off: ratio test only)


@dataclass
class PairGeometry:
    """Pixels of A with valid depth, where they land in B, and whether B sees them there."""

    xy_a: np.ndarray  # (N, 2) continuous pixel coordinates in A (pixel centres)
    xy_b: np.ndarray  # (N, 2) ground-truth location in B
    depth_b: np.ndarray  # (N,) z-depth in B's camera
    visible: np.ndarray  # (N,) inside B, in front of it, and not occluded (if B has depth)

    @property
    def overlap(self) -> float:
        return float(self.visible.mean()) if self.visible.size else 0.0


def pixel_grid(width: int, height: int, step: int = 1) -> np.ndarray:
    """Continuous coordinates (N, 2) of the centres of every ``step``-th pixel (the same pixels
    :func:`gt_correspondences` uses for ``step``)."""
    xs = np.arange(0, width, step) + 0.5
    ys = np.arange(0, height, step) + 0.5
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], 1)


def grid_step(width: int, height: int, step_ref: float) -> int:
    """Matching-grid spacing in pixels of a ``width x height`` image for ``step_ref`` reference pixels."""
    return max(1, int(np.round(step_ref * correspondence_threshold_scale(width, height))))


def gt_correspondences(view_a: ViewData, view_b: ViewData, step: int = 1, occlusion_tol: float = 0.05) -> PairGeometry:
    """Ground-truth correspondences A -> B from A's depth and both poses (every ``step``-th pixel)."""
    if view_a.depth is None:
        raise ValueError(f"view {view_a.name or 'A'} has no depth")
    _, xy_a, xy_b, zb = view_warp(view_a, view_b, step)
    Hb, Wb = view_b.image.shape[:2]
    inside = (zb > 1e-6) & (xy_b[:, 0] >= 0) & (xy_b[:, 0] < Wb) & (xy_b[:, 1] >= 0) & (xy_b[:, 1] < Hb)
    visible = inside.copy()
    if view_b.depth is not None:
        idx = np.flatnonzero(inside)
        col = np.clip(np.floor(xy_b[idx, 0]).astype(np.int64), 0, Wb - 1)
        row = np.clip(np.floor(xy_b[idx, 1]).astype(np.int64), 0, Hb - 1)
        db = view_b.depth[row, col].astype(np.float64)
        visible[idx] = (db > 0) & (np.abs(zb[idx] - db) <= occlusion_tol * np.maximum(db, 1e-9))
    xy_b = np.where(np.isfinite(xy_b), xy_b, np.nan)
    return PairGeometry(xy_a, xy_b, zb, visible)


def query_geometry(view_a: ViewData, view_b: ViewData, cfg: CorrespondenceConfig) -> PairGeometry:
    """Ground truth for the queries of a pair: A's pixels on the matching grid."""
    Ha, Wa = view_a.image.shape[:2]
    return gt_correspondences(view_a, view_b, grid_step(Wa, Ha, cfg.grid_step_ref), cfg.occlusion_tol)


def relative_rotation_deg(view_a: ViewData, view_b: ViewData) -> float:
    return rotation_angle_deg(view_a.cam_to_world[:3, :3], view_b.cam_to_world[:3, :3])


def nearest_neighbour_ratio(
    desc_a: torch.Tensor, desc_b: torch.Tensor, mutual: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``desc_a``, the index of its cosine nearest neighbour in ``desc_b`` and the ratio
    d1/d2 of the Euclidean distances (between unit descriptors) to the nearest and second nearest.

    A ratio near 0 is a distinctive match; 1 means the two best candidates are equally good (also used
    when d2 = 0 or B has a single candidate). With ``mutual``, matches whose neighbour in B does not
    point back get ratio ``inf`` so they sort last.
    """
    a = F.normalize(desc_a.float(), dim=1)
    b = F.normalize(desc_b.float(), dim=1)
    sim = a @ b.T
    k = min(2, b.shape[0])
    top, idx = sim.topk(k, dim=1)
    d = torch.sqrt((2 - 2 * top.double()).clamp_min(0))
    if k == 2:
        ratio = torch.where(d[:, 1] > 0, d[:, 0] / d[:, 1].clamp_min(1e-12), torch.ones_like(d[:, 0]))
    else:
        ratio = torch.ones_like(d[:, 0])
    nn_idx = idx[:, 0]
    if mutual:
        back = sim.argmax(dim=0)
        ok = back[nn_idx] == torch.arange(a.shape[0])
        ratio = torch.where(ok, ratio, torch.full_like(ratio, float("inf")))
    return nn_idx.numpy(), ratio.numpy()


def best_matches(ratio: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` matches with the smallest ratio (stable, so ties keep query order)."""
    order = np.argsort(ratio, kind="stable")
    order = order[np.isfinite(ratio[order])]
    return order[:keep]


def match_errors(xy_pred: np.ndarray, xy_gt: np.ndarray) -> np.ndarray:
    """Reprojection error (pixels) of each match: predicted location vs ground truth in B."""
    return np.linalg.norm(np.asarray(xy_pred, np.float64) - np.asarray(xy_gt, np.float64), axis=1)


@dataclass
class PairResult:
    errors: np.ndarray  # (k,) reprojection errors of the kept matches, pixels of B
    scale: float  # threshold scale of B (reference pixels -> B pixels)
    rotation_deg: float
    overlap: float
    recall: dict[str, float]


def evaluate_pair(
    feat_a: torch.Tensor,
    feat_b: torch.Tensor,
    view_a: ViewData,
    view_b: ViewData,
    cfg: CorrespondenceConfig,
    rng: np.random.Generator,
    geometry: PairGeometry | None = None,
) -> PairResult | None:
    """Match A's visible grid pixels into B's grid with features (C, h, w) of each view; None if
    nothing is visible."""
    geo = geometry or query_geometry(view_a, view_b, cfg)
    vis = np.flatnonzero(geo.visible)
    if vis.size == 0:
        return None
    sel = np.sort(rng.choice(vis, size=min(cfg.queries, vis.size), replace=False))
    Ha, Wa = view_a.image.shape[:2]
    Hb, Wb = view_b.image.shape[:2]
    scale = correspondence_threshold_scale(Wb, Hb)
    cand = pixel_grid(Wb, Hb, grid_step(Wb, Hb, cfg.grid_step_ref))
    desc_a = sample_features(feat_a, geo.xy_a[sel], Wa, Ha)
    desc_b = sample_features(feat_b, cand, Wb, Hb)
    nn_idx, ratio = nearest_neighbour_ratio(desc_a, desc_b, cfg.mutual)
    kept = best_matches(ratio, cfg.keep)
    errors = match_errors(cand[nn_idx[kept]], geo.xy_b[sel][kept])
    return PairResult(
        errors=errors,
        scale=scale,
        rotation_deg=relative_rotation_deg(view_a, view_b),
        overlap=geo.overlap,
        recall=recall_at_thresholds(errors, CORRESPONDENCE_THRESHOLDS_PX, scale),
    )


# ------------------------------------------------------------------ Probe3D's matcher (suite=paper)


def reference_scale(width: int, height: int) -> float:
    """The factor taking a ``width x height`` view to the 160x120 reference (0.25 for 640x480; other sizes
    by the ratio of diagonals)."""
    return 1.0 / correspondence_threshold_scale(width, height)


def downsample_view(view: ViewData, scale: float) -> ViewData:
    """Depth resampled with torch's nearest rule at ``scale`` (as Probe3D's ``interpolate(depth,
    scale_factor=0.25)``) and K scaled with it; the image is a placeholder of the new size."""
    d = torch.from_numpy(np.ascontiguousarray(view.depth, dtype=np.float32))[None, None]
    small = F.interpolate(d, scale_factor=scale)[0, 0].numpy()
    K = np.array(view.K, dtype=np.float64)
    K[0] *= small.shape[1] / view.depth.shape[1]
    K[1] *= small.shape[0] / view.depth.shape[0]
    return ViewData(np.zeros((*small.shape, 3), np.float32), K, view.cam_to_world, small, name=view.name)


def probe3d_pair(
    feat_a: torch.Tensor, feat_b: torch.Tensor, view_a: ViewData, view_b: ViewData, keep: int = 1000, chunk: int = 4096
) -> PairResult | None:
    """One pair matched as Probe3D's ScanNet evaluation does it (``estimate_correspondence_depth``).

    Both depth maps go to the 160x120 reference (nearest); every pixel with depth, in either view, is a
    point with the feature sampled at its centre. Each point of A takes its cosine nearest neighbour among
    all points of B and the weight ``1 - d1/d2`` of the cosine distances to the two nearest; the ``keep``
    best-weighted matches are scored by the distance, in reference pixels, between A's point projected
    into B and its match's pixel. Nothing is filtered for visibility: a match of a point B does not see
    counts with its error. Returns None when either view has no depth.
    """
    if view_a.depth is None or view_b.depth is None:
        return None
    a = downsample_view(view_a, reference_scale(view_a.depth.shape[1], view_a.depth.shape[0]))
    b = downsample_view(view_b, reference_scale(view_b.depth.shape[1], view_b.depth.shape[0]))
    _, uv_a, uv_a_in_b, z_in_b = view_warp(a, b)
    valid_b = b.depth > 0
    rows, cols = np.nonzero(valid_b)
    uv_b = np.stack([cols + 0.5, rows + 0.5], 1).astype(np.float64)  # B's points project to their own pixels
    if uv_a.shape[0] == 0 or uv_b.shape[0] == 0:
        return None
    hb, wb = b.depth.shape
    ha, wa = a.depth.shape
    desc_a = F.normalize(sample_features(feat_a, uv_a, wa, ha), dim=1)
    desc_b = F.normalize(sample_features(feat_b, uv_b, wb, hb), dim=1)
    k = min(2, desc_b.shape[0])
    nn_idx = torch.empty(desc_a.shape[0], dtype=torch.long)
    weight = torch.empty(desc_a.shape[0], dtype=torch.float64)
    for start in range(0, desc_a.shape[0], chunk):  # the full similarity matrix is ~1.5 GB at 160x120
        top, idx = (desc_a[start : start + chunk] @ desc_b.T).topk(k, dim=1)
        dist = (1 - top.double()).clamp_min(1e-9)  # cosine distance, clamped as the reference does
        nn_idx[start : start + chunk] = idx[:, 0]
        weight[start : start + chunk] = 1 - dist[:, 0] / dist[:, -1] if k == 2 else 0.0
    kept = torch.topk(weight, min(keep, weight.numel())).indices.numpy()
    matched = uv_b[nn_idx.numpy()[kept]]
    errors = match_errors(matched, uv_a_in_b[kept])
    errors[~(z_in_b[kept] > 0)] = np.inf  # behind B: the reference's clamped division gives a huge error
    return PairResult(
        errors=errors,
        scale=1.0,
        rotation_deg=relative_rotation_deg(view_a, view_b),
        overlap=float("nan"),
        recall=recall_at_thresholds(errors, CORRESPONDENCE_THRESHOLDS_PX, 1.0),
    )


def summarise_pairs(results: list[PairResult]) -> dict:
    """Mean over pairs of recall@5/10/20, and recall@10 per relative-rotation bin (with pair counts)."""
    out: dict = {"pairs": len(results)}
    if not results:
        return out
    keys = list(results[0].recall)
    for key in keys:
        out[key] = float(np.mean([r.recall[key] for r in results]))
    by_bin: dict[str, dict] = {}
    for label in rotation_bin_labels():
        members = [r for r in results if rotation_bin_label(r.rotation_deg) == label]
        by_bin[label] = {
            "recall_10": float(np.mean([r.recall["recall_10"] for r in members])) if members else None,
            "pairs": len(members),
        }
    out["recall_10_by_rotation"] = by_bin
    out["matches_per_pair"] = float(np.mean([r.errors.size for r in results]))
    return out


def select_pairs(
    views: list[ViewData], groups: list[str], cfg: CorrespondenceConfig, seed: int = 0
) -> list[tuple[int, int]]:
    """Pairs (i, j) of views from the same group (scene) whose overlap is at least ``min_overlap``.

    Up to ``max_pairs`` are taken round-robin over the relative-rotation bins (random order within a
    bin, seeded), so large viewpoint changes are represented when the data has them.
    """
    rng = np.random.default_rng(seed)
    by_bin: dict[str, list[tuple[int, int]]] = {label: [] for label in rotation_bin_labels()}
    for i in range(len(views)):
        if views[i].depth is None:
            continue
        for j in range(len(views)):
            if i == j or groups[i] != groups[j] or (j < i and views[j].depth is not None):
                continue  # one direction per pair, unless only A has depth
            geo = gt_correspondences(views[i], views[j], step=4, occlusion_tol=cfg.occlusion_tol)
            if geo.overlap >= cfg.min_overlap:
                by_bin[rotation_bin_label(relative_rotation_deg(views[i], views[j]))].append((i, j))
    queues = []
    for label in rotation_bin_labels():
        pairs = by_bin[label]
        order = rng.permutation(len(pairs))
        queues.append([pairs[k] for k in order])
    chosen: list[tuple[int, int]] = []
    while len(chosen) < cfg.max_pairs and any(queues):
        for q in queues:
            if q and len(chosen) < cfg.max_pairs:
                chosen.append(q.pop(0))
    return chosen


def correspondence_settings(cfg: EvalConfig) -> CorrespondenceConfig:
    """The correspondence settings of an evaluation config."""
    return CorrespondenceConfig(
        queries=cfg.correspondence.corr_queries,
        keep=cfg.correspondence.corr_keep,
        grid_step_ref=cfg.correspondence.corr_grid_step,
        occlusion_tol=cfg.correspondence.occlusion_tol,
        min_overlap=cfg.correspondence.corr_min_overlap,
        max_pairs=cfg.correspondence.corr_pairs,
    )
