"""Multi-view feature consistency: how similar a backbone's features of the same 3D point are in two
views (ground-truth depth and poses, occlusion-checked), compared with random point pairs.

A 3D-aware backbone should give a high cosine for corresponding points and a clearly lower one for
random pairs; the gap (and the AUC, the probability that a corresponding pair beats a random pair) is
the number that moves. Features are sampled bilinearly from the patch grids at the exact projected
locations, so the grid resolution does not quantise the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from splatdistill.data.scene import ViewData
from splatdistill.eval.correspondence import PairGeometry, gt_correspondences
from splatdistill.eval.features import sample_features


@dataclass
class ConsistencySamples:
    positive: np.ndarray  # cosine of features of the same 3D point in A and B
    random: np.ndarray  # cosine of A's point against a uniformly random location in B


def pair_consistency(
    feat_a: torch.Tensor,
    feat_b: torch.Tensor,
    view_a: ViewData,
    view_b: ViewData,
    points: int,
    rng: np.random.Generator,
    occlusion_tol: float = 0.05,
    geometry: PairGeometry | None = None,
) -> ConsistencySamples | None:
    """Cosine similarities of up to ``points`` corresponding points and as many random pairs."""
    geo = geometry or gt_correspondences(view_a, view_b, 1, occlusion_tol)
    vis = np.flatnonzero(geo.visible)
    if vis.size == 0:
        return None
    sel = rng.choice(vis, size=min(points, vis.size), replace=False)
    Ha, Wa = view_a.image.shape[:2]
    Hb, Wb = view_b.image.shape[:2]
    fa = sample_features(feat_a, geo.xy_a[sel], Wa, Ha)
    fb = sample_features(feat_b, geo.xy_b[sel], Wb, Hb)
    rand_xy = rng.uniform(0, 1, size=(sel.size, 2)) * np.array([Wb, Hb])
    fr = sample_features(feat_b, rand_xy, Wb, Hb)
    pos = F.cosine_similarity(fa, fb, dim=1).double().numpy()
    neg = F.cosine_similarity(fa, fr, dim=1).double().numpy()
    return ConsistencySamples(pos, neg)


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(positive > negative) + 0.5 P(tie) over all pairs (Mann-Whitney U / (n m)), via ranks."""
    pos = np.asarray(positive, np.float64)
    neg = np.asarray(negative, np.float64)
    if pos.size == 0 or neg.size == 0:
        return float("nan")

    ranks = rankdata(np.concatenate([pos, neg]))  # ties get their average rank
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def summarise(samples: list[ConsistencySamples]) -> dict:
    """Pooled means over all sampled points of all pairs, their difference, and the AUC."""
    samples = [s for s in samples if s is not None]
    if not samples:
        return {"pairs": 0}
    pos = np.concatenate([s.positive for s in samples])
    neg = np.concatenate([s.random for s in samples])
    return {
        "positive_cos": float(pos.mean()),
        "random_cos": float(neg.mean()),
        "gap": float(pos.mean() - neg.mean()),
        "auc": auc(pos, neg),
        "pairs": len(samples),
        "points": int(pos.size),
    }
