"""``splatdistill lifter eval`` on captures of any size: a two-view stereo pair (Middlebury's Motorcycle,
real photos with metric ground truth), sparse depth from structure-from-motion points, and the
scale-invariant error, each checked against a float64 computation of its own."""

from __future__ import annotations

import numpy as np
import pytest

from _real_data import motorcycle
from splatdistill.cli import main
from splatdistill.data import load_dataset
from splatdistill.data.views import Views
from splatdistill.lifters.evaluate import (
    depth_errors,
    evaluate_saved_predictor,
    pair_parallax,
    parallax_bins,
    sparse_depth,
)
from splatdistill.lifters.predictor import PredictorLifter, load_predictor, predictor_input_size
from splatdistill.lifters.pretrained import resolve_predictor


def _abs_rel(pred: np.ndarray, gt: np.ndarray) -> float:
    m = gt > 0
    return float(np.mean(np.abs(pred[m].astype(np.float64) - gt[m]) / gt[m]))


def test_depth_errors_scale_invariant_against_an_analytic_case():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 3.0, (3, 8, 10))
    gt[0, :2] = 0  # pixels without ground truth are left out
    pred = gt * np.array([2.0, 0.5, 3.0])[:, None, None]  # right up to a per-view scale
    e = depth_errors(pred, gt)
    m = gt > 0
    assert e["abs_rel"] == pytest.approx(np.mean((np.abs(pred - gt) / np.where(m, gt, 1))[m]))
    assert e["abs_rel_si"] == pytest.approx(0.0, abs=1e-12) and e["delta1"] < 0.5
    noisy = pred * rng.uniform(0.9, 1.1, gt.shape)
    assert 0.01 < depth_errors(noisy, gt)["abs_rel_si"] < 0.06


def test_sparse_depth_projects_points_at_their_camera_depth():
    rng = np.random.default_rng(1)
    K = np.array([[50.0, 0, 20], [0, 50, 15], [0, 0, 1]])
    viewmat = np.eye(4)
    viewmat[:3, 3] = [0.1, -0.2, 0.3]
    uv = rng.uniform([0, 0], [40, 30], (200, 2))
    z = rng.uniform(1.0, 4.0, 200)
    cam = np.c_[(uv - K[:2, 2]) / 50.0 * z[:, None], z]
    world = cam - viewmat[:3, 3]  # rotation is the identity
    d = sparse_depth(world, K, viewmat, 30, 40)
    for u, v in uv:  # every pixel holds the nearest point that lands in it
        same = (np.floor(uv[:, 0]) == np.floor(u)) & (np.floor(uv[:, 1]) == np.floor(v))
        assert d[int(v), int(u)] == pytest.approx(z[same].min(), rel=1e-5)
    assert (d > 0).sum() == len({(int(u), int(v)) for u, v in uv})


def test_lifter_eval_on_a_two_view_stereo_capture(tmp_path, capsys):
    """A two-view capture used to be refused ("no held-out context pairs"); now its one pair is
    evaluated, and the figures equal a float64 recomputation from the lifter's own depth."""
    data = motorcycle(tmp_path / "moto", width=320)
    H, W = predictor_input_size(216, 320, 112)  # the size the shipped predictor runs at
    assert main(["lifter", "eval", "shipped", "--data", str(data), "--json", str(tmp_path / "r.json"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "1 view pairs, 2 views" in out and "scale-inv AbsRel" in out and "constant" in out
    res = evaluate_saved_predictor("shipped", str(data), progress=False)
    assert res["pairs"] == 1 and res["views"] == 2 and res["size"] == [H, W]
    scene = load_dataset(data)[0]
    views = Views.from_view_data([scene.load_view(i) for i in range(2)], mask_mode=None, size=(H, W))
    gt = views.depths.numpy().astype(np.float64)
    assert gt.shape == (2, H, W) and (gt > 0).mean() > 0.5
    lifter = PredictorLifter(load_predictor(resolve_predictor("shipped")))  # at its own size: no resizing here
    depth = lifter.predict(views)[0].numpy()
    assert res["predictor"]["abs_rel"] == pytest.approx(_abs_rel(depth, gt), abs=1e-4)
    med = np.median(gt[gt > 0])
    assert res["constant_depth"]["value"] == pytest.approx(med, rel=1e-5)
    assert res["constant_depth"]["abs_rel"] == pytest.approx(_abs_rel(np.full_like(gt, med), gt), abs=1e-6)
    aligned = np.stack([d * np.median(g[g > 0]) / np.median(d[g > 0]) for d, g in zip(depth, gt)])
    assert res["predictor"]["abs_rel_si"] == pytest.approx(_abs_rel(aligned, gt), abs=1e-4)
    # its one pair's parallax: focal x baseline / median depth, from the calibration by hand
    K, c = views.cameras.Ks.double().numpy(), np.linalg.inv(views.cameras.viewmats.double().numpy())[:, :3, 3]
    expect = K[:, [0, 1], [0, 1]].mean() * np.linalg.norm(c[0] - c[1]) / med
    (row,) = res["by_parallax"]
    lo, hi = row["parallax_px"]
    assert row["pairs"] == 1 and lo <= expect < (hi or np.inf) and expect > 10  # a stereo rig: real parallax
    assert row["predictor"]["abs_rel"] == pytest.approx(res["predictor"]["abs_rel"], abs=1e-9)


def test_pair_parallax_and_its_bins_against_hand_computations():
    """Parallax = focal x baseline / median depth (10 px for f 100, 0.2 m at 2 m); a camera that only
    turns has none. The bins split both views of each pair and score each bin as depth_errors does."""
    import torch

    from splatdistill.geometry.cameras import Cameras

    K = torch.tensor([[100.0, 0, 20], [0, 100, 15], [0, 0, 1]]).expand(2, 3, 3)
    depths = torch.full((2, 30, 40), 2.0)
    depths[0, :5] = 0  # no ground truth there: left out of the median
    depths[1, 10:] = 6.0  # median over both views' valid pixels: 1400 at 2 m, 800 at 6 m -> 2 m
    slid = torch.eye(4).expand(2, 4, 4).clone()
    slid[1, 0, 3] = -0.2  # camera 1 sits 0.2 m to the right
    valid = depths[depths > 0]
    assert float(valid.median()) == 2.0
    assert pair_parallax(Cameras(K, slid, 40, 30), depths) == pytest.approx(10.0, rel=1e-6)
    turned = torch.eye(4).expand(2, 4, 4).clone()
    turned[1, :3, :3] = torch.tensor([[0.96, 0.0, 0.28], [0.0, 1.0, 0.0], [-0.28, 0.0, 0.96]])
    assert pair_parallax(Cameras(K, turned, 40, 30), depths) == pytest.approx(0.0, abs=1e-5)
    assert np.isnan(pair_parallax(Cameras(K, slid, 40, 30), torch.zeros(2, 30, 40)))
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 3, (6, 4, 5))
    pred = gt * rng.uniform(0.8, 1.2, gt.shape)
    rows = parallax_bins([0.5, 12.0, 30.0], pred, gt, constant=2.0)
    assert [r["pairs"] for r in rows] == [1, 2] and rows[1]["parallax_px"][1] is None
    assert rows[1]["predictor"] == depth_errors(pred[2:], gt[2:])
    assert rows[0]["constant"] == depth_errors(np.full_like(gt[:2], 2.0), gt[:2])


def test_lifter_eval_without_any_depth_is_one_line(tmp_path, capsys):
    data = motorcycle(tmp_path / "moto", width=120)
    for p in (data / "motorcycle" / "depth").iterdir():
        p.unlink()
    import json

    sj = data / "motorcycle" / "scene.json"
    doc = json.loads(sj.read_text())
    for v in doc["views"]:
        v.pop("depth", None)
    sj.write_text(json.dumps(doc))
    assert main(["lifter", "eval", "shipped", "--data", str(data), "-q"]) == 2
    assert "no depth to evaluate against" in capsys.readouterr().err


def test_oakd_pairs_without_ground_truth_are_lifted_at_their_rigs_scale(tmp_path, capsys):
    """OAK-D pairs (real, 7.5 cm baseline, no ground truth): eval refuses them in one line, and the
    default lifter puts an indoor scene at indoor depths (the old fixed-plane predictor said ~2 m for
    everything). Qualitative: the bounds are the calibration file's own depth range, widened 2x."""
    from _real_data import oakd_dataset

    data = oakd_dataset(tmp_path / "oak", ["desk"])
    assert main(["lifter", "eval", "shipped", "--data", str(data), "-q"]) == 2
    assert "no depth to evaluate against" in capsys.readouterr().err
    scene = load_dataset(data)[0]
    views = Views.from_view_data([scene.load_view(i) for i in range(2)], mask_mode=None, size=(112, 148))
    depth = PredictorLifter(load_predictor(resolve_predictor("shipped"))).predict(views)[0]
    assert 0.5 < float(depth.median()) < 10.0


@pytest.mark.slow
def test_lifter_eval_on_sfm_points_of_real_photos(tmp_path):
    """Maupertuis (4 real photos): structure from motion, then eval against its points (sparse depth,
    no metric scale), every overlapping pair of a capture too small for the sampler."""
    import shutil

    from _real_data import maupertuis

    photos = tmp_path / "photos"
    shutil.copytree(maupertuis() / "images", photos)
    assert main(["data", "from-images", str(photos), "--out", str(tmp_path / "ds")]) == 0
    res = evaluate_saved_predictor("shipped", str(tmp_path / "ds"), progress=False)
    assert res["sparse_depth_views"] == 4 and res["pairs"] == 6 and res["splits"] == ["all"]
    assert res["predictor"]["abs_rel_si"] < res["constant_depth"]["abs_rel_si"]
