"""Ground-truth correspondences, matching and consistency on analytic scenes with exact geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splatdistill.data.scene import ViewData
from splatdistill.eval import consistency as cons
from splatdistill.eval import correspondence as corr
from splatdistill.eval.features import sample_features
from splatdistill.eval.synthetic import intrinsics, look_rotation, make_scene, render_view

pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: no thread contention


@pytest.fixture(scope="module")
def scene_views() -> list[ViewData]:
    scene = make_scene("s", size=(64, 48), num_views=5, seed=3, yaw_step_deg=10.0)
    return [scene.load_view(i) for i in range(len(scene))]


def world_points(v: ViewData) -> np.ndarray:
    """(H, W, 3) world coordinates of every pixel, computed independently of the module under test."""
    H, W = v.depth.shape
    out = np.zeros((H, W, 3))
    Kinv = np.linalg.inv(v.K)
    for y in range(H):
        for x in range(W):
            ray = Kinv @ np.array([x + 0.5, y + 0.5, 1.0])
            out[y, x] = v.cam_to_world[:3, :3] @ (ray * v.depth[y, x]) + v.cam_to_world[:3, 3]
    return out


def oracle_features(v: ViewData, dim: int = 256, sigma: float = 0.15) -> torch.Tensor:
    """Per-pixel random Fourier features of the world point: cosine similarity ~ a Gaussian of 3D distance."""
    rng = np.random.default_rng(0)  # same projection for every view
    omega = rng.normal(0, 1 / sigma, (dim, 3))
    phase = rng.uniform(0, 2 * np.pi, dim)
    f = np.cos(world_points(v) @ omega.T + phase)
    return torch.from_numpy(f.transpose(2, 0, 1).astype(np.float32))


def test_identity_pair_maps_pixels_to_themselves(scene_views):
    v = scene_views[0]
    geo = corr.gt_correspondences(v, v)
    assert geo.visible.all()
    np.testing.assert_allclose(geo.xy_b, geo.xy_a, atol=1e-6)
    np.testing.assert_allclose(geo.depth_b, v.depth[v.depth > 0].ravel(), rtol=1e-5)


def test_stereo_translation_gives_disparity():
    """A camera moved by b along its x axis sees a point at depth Z shifted by f b / Z pixels."""
    W = H = 40
    K = intrinsics(W, H)
    left = np.eye(4)
    left[:3, :3] = look_rotation(30.0, 0.0)
    left[:3, 3] = [-0.5, -0.2, -0.5]
    right = left.copy()
    right[:3, 3] = left[:3, 3] + left[:3, :3] @ np.array([0.2, 0.0, 0.0])
    a, b = render_view(K, left, W, H), render_view(K, right, W, H)
    geo = corr.gt_correspondences(a, b)
    z = a.depth[a.depth > 0].ravel().astype(np.float64)
    np.testing.assert_allclose(geo.xy_b[:, 0], geo.xy_a[:, 0] - K[0, 0] * 0.2 / z, atol=1e-3)
    np.testing.assert_allclose(geo.xy_b[:, 1], geo.xy_a[:, 1], atol=1e-3)
    inside = geo.xy_b[:, 0] >= 0
    assert geo.visible[~inside].sum() == 0  # landing left of the image is not visible
    assert geo.visible[inside].mean() > 0.9  # a small baseline occludes little


def test_projection_hits_the_same_world_point(scene_views):
    a, b = scene_views[0], scene_views[2]
    geo = corr.gt_correspondences(a, b)
    pa = world_points(a)[a.depth > 0].reshape(-1, 3)
    pb_img = world_points(b)
    vis = np.flatnonzero(geo.visible)
    col = np.floor(geo.xy_b[vis, 0]).astype(int)
    row = np.floor(geo.xy_b[vis, 1]).astype(int)
    # The pixel of B under the projection sees (almost) the same world point (within a pixel footprint).
    dist = np.linalg.norm(pb_img[row, col] - pa[vis], axis=1)
    assert np.median(dist) < 0.05
    assert 0.3 < geo.overlap < 1.0


def test_occluded_points_are_not_visible():
    """A point hidden behind the furniture box in B must not count as visible."""
    W = H = 48
    K = intrinsics(W, H)
    a_pose = np.eye(4)
    a_pose[:3, :3] = look_rotation(0.0, 0.0)  # looking along +z at the box (x 0.3..1.3, z 0.6..1.6)
    a_pose[:3, 3] = [-1.5, 0.5, -2.0]
    b_pose = np.eye(4)
    b_pose[:3, :3] = look_rotation(-35.0, 0.0)
    b_pose[:3, 3] = [1.8, 0.5, -2.0]
    a, b = render_view(K, a_pose, W, H), render_view(K, b_pose, W, H)
    geo = corr.gt_correspondences(a, b)
    inside = (
        np.isfinite(geo.xy_b).all(1)
        & (geo.xy_b[:, 0] >= 0)
        & (geo.xy_b[:, 0] < W)
        & (geo.xy_b[:, 1] >= 0)
        & (geo.xy_b[:, 1] < H)
        & (geo.depth_b > 0)
    )
    idx = np.flatnonzero(inside)
    seen = b.depth[np.floor(geo.xy_b[idx, 1]).astype(int), np.floor(geo.xy_b[idx, 0]).astype(int)]
    occluded = seen < 0.9 * geo.depth_b[idx]  # B sees something clearly in front of the point
    assert occluded.sum() > 20
    assert not geo.visible[idx[occluded]].any()
    # The rule: visible exactly when B's depth there agrees with the point's depth within 5%.
    agree = np.abs(seen - geo.depth_b[idx]) <= 0.05 * seen
    assert np.array_equal(geo.visible[idx], agree)


def test_nearest_neighbour_ratio_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.8, 0.6]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    idx, ratio = corr.nearest_neighbour_ratio(a, b)
    assert idx.tolist() == [0, 0]
    assert ratio[0] == pytest.approx(0.0)
    # cos 0.8 and 0.6 -> distances sqrt(0.4) and sqrt(0.8)
    assert ratio[1] == pytest.approx(math.sqrt(0.4 / 0.8))
    _, ratio = corr.nearest_neighbour_ratio(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    assert ratio[0] == pytest.approx(1.0)  # two equally good candidates: not distinctive


def test_mutual_check_and_best_matches():
    a = torch.tensor([[1.0, 0.0], [0.9, 0.1]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    idx, ratio = corr.nearest_neighbour_ratio(a, b, mutual=True)
    assert idx.tolist() == [0, 0] and np.isinf(ratio[1])  # b[0]'s best is a[0], not a[1]
    assert corr.best_matches(np.array([0.5, 0.1, np.inf, 0.5, 0.2]), 3).tolist() == [1, 4, 0]


def test_matches_from_gt_geometry_give_recall_one(scene_views):
    geo = corr.gt_correspondences(scene_views[0], scene_views[1])
    vis = geo.visible
    errors = corr.match_errors(geo.xy_b[vis], geo.xy_b[vis])
    from splatdistill.eval.metrics import recall_at_thresholds

    assert recall_at_thresholds(errors) == {"recall_5": 1.0, "recall_10": 1.0, "recall_20": 1.0}


def test_oracle_features_match_perfectly_and_random_features_do_not(scene_views):
    cfg = corr.CorrespondenceConfig(queries=400, keep=200, min_overlap=0.2, max_pairs=6)
    pairs = corr.select_pairs(scene_views, ["s"] * len(scene_views), cfg)
    assert pairs and all(i != j for i, j in pairs)
    oracle = [oracle_features(v) for v in scene_views]
    rng = np.random.default_rng(0)
    noise = [torch.from_numpy(rng.normal(size=(32, 6, 8)).astype(np.float32)) for _ in scene_views]
    good = [
        corr.evaluate_pair(oracle[i], oracle[j], scene_views[i], scene_views[j], cfg, np.random.default_rng(k))
        for k, (i, j) in enumerate(pairs)
    ]
    bad = [
        corr.evaluate_pair(noise[i], noise[j], scene_views[i], scene_views[j], cfg, np.random.default_rng(k))
        for k, (i, j) in enumerate(pairs)
    ]
    sg, sb = corr.summarise_pairs(good), corr.summarise_pairs(bad)
    assert sg["recall_5"] == 1.0 and sg["recall_20"] == 1.0
    assert sb["recall_5"] < 0.2
    assert sg["pairs"] == len(pairs) and sg["matches_per_pair"] == 200
    assert sum(b["pairs"] for b in sg["recall_10_by_rotation"].values()) == len(pairs)


def test_select_pairs_respects_scenes_overlap_and_budget(scene_views):
    other = make_scene("t", size=(64, 48), num_views=3, seed=9)
    views = scene_views + [other.load_view(i) for i in range(3)]
    groups = ["s"] * len(scene_views) + ["t"] * 3
    cfg = corr.CorrespondenceConfig(min_overlap=0.3, max_pairs=100)
    pairs = corr.select_pairs(views, groups, cfg)
    assert pairs
    for i, j in pairs:
        assert groups[i] == groups[j]
        assert corr.gt_correspondences(views[i], views[j], 4).overlap >= 0.3
    assert len(set(pairs)) == len(pairs)
    assert corr.select_pairs(views, groups, corr.CorrespondenceConfig(min_overlap=0.3, max_pairs=3)) == pairs[:3]


def test_consistency_oracle_constant_and_noise(scene_views):
    a, b = scene_views[0], scene_views[1]
    oracle = cons.pair_consistency(oracle_features(a), oracle_features(b), a, b, 300, np.random.default_rng(0))
    s = cons.summarise([oracle])
    assert s["positive_cos"] > 0.9 and s["gap"] > 0.7 and s["auc"] > 0.95
    const = torch.ones(8, 6, 8)
    s = cons.summarise([cons.pair_consistency(const, const, a, b, 300, np.random.default_rng(0))])
    assert s["positive_cos"] == pytest.approx(1.0) and s["gap"] == pytest.approx(0.0, abs=1e-6)
    assert s["auc"] == pytest.approx(0.5, abs=0.02)


def test_sample_features_hits_cell_centres():
    feat = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    # A 40x30 image covered by a 4x3 grid: cell (r, c) is centred at ((c + 0.5) * 10, (r + 0.5) * 10).
    xy = np.array([[5.0, 5.0], [35.0, 25.0], [15.0, 15.0]])
    out = sample_features(feat, xy, 40, 30)
    assert out[:, 0].tolist() == pytest.approx([0.0, 11.0, 5.0], abs=1e-5)
    # half-way between two cells horizontally -> their mean
    assert sample_features(feat, np.array([[10.0, 5.0]]), 40, 30)[0, 0].item() == pytest.approx(0.5)
