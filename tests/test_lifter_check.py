"""``splatdistill lifter check SPEC``: its figures against an independent computation on the same pair."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from splat_oracle import brute_force


def test_lifter_check_reports_depth_opacity_and_coverage(rooms, scenes, tmp_path, capsys, one_thread):
    from splatdistill.cli import main
    from splatdistill.lifters import build_lifter
    from splatdistill.splat import SplatSettings
    from splatdistill.splat.scene import load_scene_views

    out = tmp_path / "check.json"
    assert main(["lifter", "check", "auto", "--data", str(rooms), "--size", "24", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    rep = json.loads(out.read_text())
    assert rep["scene"] == scenes[0].name and rep["context"] == [0, 2] and rep["target"] == 1
    assert rep["gaussians"] == 2 * 24 * 24

    # independent: the predictor's own depth and opacity maps for the same pair, the data's depth, and a
    # float64 brute-force render of the same Gaussians into the target view
    sv = load_scene_views(scenes[0], [0, 2, 1], 24)
    lifter = build_lifter("auto", SplatSettings())
    with torch.no_grad():
        depth, opacity, _ = lifter.predict(sv[:2])
        g = lifter(dataclasses.replace(sv[:2], features=sv.images[:2], depths=None))
    d = depth.double().numpy().reshape(2, -1)
    for v in range(2):
        q = np.quantile(d[v], [0, 0.05, 0.5, 0.95, 1])
        got = rep["depth"][v]
        np.testing.assert_allclose([got[k] for k in ("min", "p05", "median", "p95", "max")], q, rtol=1e-4)
        gt = sv.depths[v].double().numpy().ravel()
        np.testing.assert_allclose(rep["depth_abs_rel"][v], np.mean(np.abs(d[v] - gt) / gt), rtol=1e-4)
    o = opacity.double().numpy().ravel()
    np.testing.assert_allclose(
        [rep["opacity"]["mean"], rep["opacity"]["median"], rep["opacity"]["share_ge_0.5"]],
        [o.mean(), np.median(o), (o >= 0.5).mean()],
        rtol=1e-5,
    )
    cam = sv.cameras[2:]
    _, alpha, _ = brute_force(
        g.means.double().numpy(),
        g.covariances.double().numpy(),
        g.opacities.double().numpy(),
        np.ones((len(g), 1)),
        cam.viewmats[0].double().numpy(),
        cam.Ks[0].double().numpy(),
        24,
        24,
    )
    assert abs(rep["coverage"] - (alpha > 0.5).mean()) <= 2 / alpha.size
    assert 0.3 < rep["coverage"] <= 1.0
    # the printed report carries the same numbers
    assert f"median {rep['depth'][0]['median']:.3f}" in text and f"{rep['coverage']:.1%} of pixels" in text
    assert f"mean {rep['opacity']['mean']:.3f}" in text and "AbsRel view 0" in text


def test_lifter_check_warns_about_a_broken_lifter(rooms, tmp_path, capsys, monkeypatch, one_thread):
    """A lifter whose depth is 10x too far and nearly transparent is flagged before training."""
    import sys
    import types

    from splatdistill.cli import main

    mod = types.ModuleType("broken_lifter_mod")

    def make(settings):
        from splatdistill.splat.lifter import lifter_from_predictor

        class Far:
            def predict(self, views):
                V, _, H, W = views.images.shape
                return torch.full((V, H, W), 25.0), torch.full((V, H, W), 0.02), None

        return lifter_from_predictor(Far(), settings)

    mod.make = make
    monkeypatch.setitem(sys.modules, "broken_lifter_mod", mod)
    assert main(["lifter", "check", "python:broken_lifter_mod:make", "--data", str(rooms), "--size", "16"]) == 0
    text = capsys.readouterr().out
    assert "depth view 0: min 25.000" in text and "fewer than 10% of the Gaussians are opaque" in text
    assert "AbsRel > 0.3" in text and "warning(s): fix before training" in text
    assert main(["lifter", "check", "bogus", "--data", str(rooms)]) == 2
