"""``lifter=depth-anything-v2:WEIGHTS``: transformers' own Depth Anything V2 (random weights of a tiny config, no
download) and the alignment of monocular inverse depth to the views' metric scale (known depth)."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from splatdistill.errors import UserError


def _abs_rel(d: torch.Tensor, z: torch.Tensor) -> float:
    ok = z > 0
    return float(((d.double() - z.double()).abs() / z.double())[ok].mean())


def test_monocular_inverse_depth_is_aligned_from_the_poses(scenes, one_thread):
    """A perfect monocular prediction (the true inverse depth under an unknown affine map) becomes metric
    depth from the posed pair alone; sparse depth with outliers gives the exact map."""
    from splatdistill.lifters.mono_align import fit_to_depth, fit_to_poses, inverse_depth_to_depth
    from splatdistill.splat.scene import load_scene_views

    sv = load_scene_views(scenes[0], [0, 2], 64)
    z = sv.depths.double()
    rel = 2.5 / z + 0.3
    fits = fit_to_poses(rel, sv.images, sv.cameras)
    errs = [_abs_rel(inverse_depth_to_depth(rel[v], *fits[v]), z[v]) for v in range(2)]
    assert max(errs) < 0.08, errs
    # the same search with the other view's poses swapped (a wrong rig) does not find the scale
    wrong = fit_to_poses(rel, sv.images, sv.cameras[[1, 0]])
    assert max(_abs_rel(inverse_depth_to_depth(rel[v], *wrong[v]), z[v]) for v in range(2)) > 2 * max(errs)
    # sparse depth (2% of pixels, a tenth of them wrong by 3x): the trimmed fit recovers s = 1/2.5, t = -0.3/2.5
    g = torch.Generator().manual_seed(0)
    sparse = torch.where(torch.rand(z[0].shape, generator=g) < 0.02, z[0], torch.zeros_like(z[0]))
    idx = sparse.nonzero()
    bad = idx[torch.randperm(len(idx), generator=g)[: len(idx) // 10]]
    sparse[bad[:, 0], bad[:, 1]] *= 3
    s, t = fit_to_depth(rel[0], sparse)
    assert s == pytest.approx(1 / 2.5, rel=1e-6) and t == pytest.approx(-0.3 / 2.5, rel=1e-6)
    assert fit_to_depth(rel[0], torch.zeros_like(z[0])) is None


@pytest.fixture(scope="module")
def tiny_depth_anything(tmp_path_factory):
    """transformers' DepthAnythingForDepthEstimation at a tiny size, random weights, saved with save_pretrained."""
    tf = pytest.importorskip("transformers")
    backbone = tf.Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        mlp_ratio=2,
        out_indices=[1, 2, 3, 4],
        patch_size=14,
        image_size=56,
        reshape_hidden_states=False,
    )
    cfg = tf.DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
    )
    torch.manual_seed(0)
    model = tf.DepthAnythingForDepthEstimation(cfg)
    with torch.no_grad():  # unit-gain random weights, so the output varies (transformers' init gives ~0)
        for p in model.parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=p[0].numel() ** -0.5)
        model.head.conv3.bias.fill_(1.0)
    folder = tmp_path_factory.mktemp("da") / "tiny"
    model.save_pretrained(folder)
    return folder, model.eval()


def test_depth_anything_lifter_runs_the_real_model(tiny_depth_anything, scenes, monkeypatch, one_thread):
    from splatdistill.lifters import build_lifter
    from splatdistill.lifters.depth_anything import parse_depth_anything_spec
    from splatdistill.lifters.mono_align import fit_to_depth, inverse_depth_to_depth
    from splatdistill.splat import SplatSettings
    from splatdistill.splat.scene import load_scene_views

    folder, model = tiny_depth_anything
    lifter = build_lifter(f"depth-anything-v2:{folder}:56", SplatSettings())  # from_pretrained on the folder
    sv = load_scene_views(scenes[0], [0, 2], 42)
    raw = lifter.raw(sv.images)
    # the model's output for the released preprocessing, computed here independently: 42x42 -> 56x56 (aspect
    # kept, multiple of 14), bicubic, ImageNet normalisation; output resized back bicubically
    x = F.interpolate(sv.images.float(), size=(56, 56), mode="bicubic", align_corners=False, antialias=True)
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        out = model(pixel_values=x).predicted_depth
    ref = F.interpolate(out[:, None], size=(42, 42), mode="bicubic", align_corners=False)[:, 0]
    assert raw.shape == (2, 42, 42) and float(raw.std()) > 1e-3
    assert np.corrcoef(raw.flatten().numpy(), ref.flatten().numpy())[0, 1] > 0.99
    assert float((raw - ref).abs().max()) < 0.05 * float(ref.abs().max())
    # with the data's depth, each view's inverse depth is fitted to it, and the Gaussians sit at that depth
    feats = torch.randn(2, 5, 42, 42)
    g = lifter(dataclasses.replace(sv, features=feats))
    assert [f[0] for f in lifter.last_fit] == ["depth", "depth"] and len(g) == 2 * 42 * 42
    for v in range(2):
        expect = inverse_depth_to_depth(raw[v], *fit_to_depth(raw[v], sv.depths[v]))
        vm = sv.cameras.viewmats[v].double()
        mine = g.means[v * 42 * 42 : (v + 1) * 42 * 42].double()
        z = (mine @ vm[:3, :3].T + vm[:3, 3])[:, 2].reshape(42, 42)
        torch.testing.assert_close(z, expect.double(), rtol=1e-4, atol=1e-5)
    assert torch.equal(g.features, feats.permute(0, 2, 3, 1).reshape(-1, 5))
    # without depth: from the poses
    g = lifter(dataclasses.replace(sv, features=feats, depths=None))
    assert [f[0] for f in lifter.last_fit] == ["poses", "poses"] and torch.isfinite(g.means).all()
    # specs, and a missing transformers named in one line
    assert parse_depth_anything_spec(None) == ("depth-anything/Depth-Anything-V2-Small-hf", 518)
    assert parse_depth_anything_spec("depth-anything/Depth-Anything-V2-Small-hf:336")[1] == 336
    with pytest.raises(UserError, match="cannot load weights"):
        build_lifter(f"depth-anything-v2:{folder}/nowhere")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(
        UserError,
        match=r"needs the optional extra \[depth-anything\] \(transformers is not installed\): "
        r"pip install 'splatdistill\[depth-anything\]'",
    ):
        build_lifter(f"depth-anything-v2:{folder}")
