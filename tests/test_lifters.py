"""Lifters: the learned predictor (plane sweep, training, checkpoints), the PLY lifter, lifter specs, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap

import numpy as np
import pytest
import torch

from splatdistill.data.views import Views
from splatdistill.errors import UserError
from splatdistill.geometry.cameras import Cameras, look_at_viewmat

pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: no thread contention


@pytest.fixture(scope="module")
def trained(rooms, tmp_path_factory):
    """A predictor trained for 120 steps on the tiny rooms (one train scene), and its metrics."""
    from splatdistill.config import build_config
    from splatdistill.lifters.train_predictor import LifterTrainConfig, train_predictor

    out = tmp_path_factory.mktemp("predictor")
    cfg = build_config(
        LifterTrainConfig,
        dict(
            data=str(rooms),
            out=str(out),
            steps=120,
            batch_size=4,
            lr=2e-3,
            image_size=48,
            num_depths=24,
            channels=32,
            eval_pairs=4,
            checkpoint_every=30,
            progress=False,
            seed=1,
        ),
        validate=False,
    )
    res = train_predictor(cfg, log=lambda *_: None)
    return out, res


# ---- plane sweep ------------------------------------------------------------------------------------


def _texture(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """A smooth 3-channel texture on the plane, (..., 3)."""
    return torch.stack([torch.sin(2.0 * X + 1.0), torch.cos(1.5 * Y), torch.sin(X - Y)], -1)


def test_plane_sweep_warp_is_exact_for_a_fronto_parallel_plane():
    """Features of view B warped into view A at the true plane depth reproduce A's features, and the
    warp coordinates equal an independent projection of the plane points."""
    from splatdistill.lifters.plane_sweep import cost_volume, plane_sweep_grid

    H = W = 48
    f = 40.0
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], dtype=torch.float64)
    vm_a = torch.eye(4, dtype=torch.float64)  # camera A = world, looking along +z
    vm_b = look_at_viewmat(
        torch.tensor([0.25, -0.1, 0.05], dtype=torch.float64),
        torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64),
        torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64),
    )
    z0 = 2.0
    depths = torch.tensor([1.0, 1.5, z0, 3.0, 4.0], dtype=torch.float64)
    grid, zsrc = plane_sweep_grid(K[None], vm_a[None], K[None], vm_b[None], depths, H, W)
    # independent reference: the 3D points of A's pixel centres at z0, projected with Cameras
    cams = Cameras(torch.stack([K, K]), torch.stack([vm_a, vm_b]), W, H)
    pts = cams[0].unproject(torch.full((H, W), z0, dtype=torch.float64)).reshape(-1, 3)
    uv, z = cams[1].project(pts)
    expect = torch.stack([uv[:, 0] / W * 2 - 1, uv[:, 1] / H * 2 - 1], -1).reshape(H, W, 2)
    assert torch.allclose(grid[0, 2], expect, atol=1e-9)
    assert torch.allclose(zsrc[0, 2], z.reshape(H, W), atol=1e-9)

    # B's features: the texture where B's pixel rays hit the plane z = z0 (world = A's frame)
    c2w_b = torch.linalg.inv(vm_b)
    rays = cams[1].ray_directions()  # (H, W, 3) world, unnormalised
    o = c2w_b[:3, 3]
    s = (z0 - o[2]) / rays[..., 2]
    hit = o + s[..., None] * rays
    feat_b = _texture(hit[..., 0], hit[..., 1]).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    pa = pts.reshape(H, W, 3)
    feat_a = _texture(pa[..., 0], pa[..., 1]).permute(2, 0, 1)[None].float()
    sampled = torch.nn.functional.grid_sample(feat_b, grid[:, 2].float(), mode="bilinear", align_corners=False)
    inside = (grid[0, 2].abs() < 0.9).all(-1)
    assert inside.float().mean() > 0.5
    err = (sampled[0] - feat_a[0]).abs().amax(0)[inside]
    assert float(err.max()) < 0.02  # bilinear interpolation error of a smooth texture only
    # and the correlation cost peaks at the true plane for the well-inside pixels
    cost = cost_volume(feat_a, feat_b, grid.float(), zsrc.float())  # (1, D, H, W)
    true_cost = (feat_a * feat_a).sum(1) / math.sqrt(3)
    assert torch.allclose(cost[0, 2][inside], true_cost[0][inside], atol=0.05)


def test_predictor_is_symmetric_in_its_context_views():
    from splatdistill.lifters.predictor import GaussianPredictor, PredictorConfig

    torch.manual_seed(0)
    m = GaussianPredictor(PredictorConfig(channels=16, num_depths=8, image_size=32)).eval()
    img = torch.rand(1, 2, 3, 32, 32)
    K = torch.tensor([[30.0, 0, 16], [0, 30, 16], [0, 0, 1]]).expand(1, 2, 3, 3)
    vm = torch.eye(4).repeat(1, 2, 1, 1)
    vm[0, 1, 0, 3] = -0.2
    with torch.no_grad():
        a = m(Views(img, Cameras(K, vm, 32, 32)))
        b = m(Views(img[:, [1, 0]], Cameras(K[:, [1, 0]], vm[:, [1, 0]], 32, 32)))
    assert torch.allclose(a.depth, b.depth[:, [1, 0]], atol=1e-5)
    assert a.depth.shape == (1, 2, 32, 32) and bool((a.depth > 0).all())
    assert bool(((a.scale >= 0.5) & (a.scale <= 15)).all()) and bool(((a.opacity > 0) & (a.opacity < 1)).all())
    with pytest.raises(ValueError, match="at least 2"):
        m(Views(img[:, :1], Cameras(K[:, :1], vm[:, :1], 32, 32)))


# ---- training, evaluation, checkpoints ------------------------------------------------------------


def test_short_training_beats_constant_depth_on_held_out_rooms(trained):
    out, res = trained
    ho = res["held_out"]
    assert ho["views"] > 0 and set(ho["splits"]) == {"val", "test"}
    # the constant a depth-blind model could learn from the training views (lifter eval's constant_depth is
    # now the held-out views' own median, an oracle that a 120-step predictor on one tiny scene need not beat)
    constant = ho["constant_train_median"]
    assert ho["predictor"]["abs_rel"] < constant["abs_rel"] - 0.01, ho
    assert ho["predictor"]["delta1"] > constant["delta1"], ho
    log = [line for line in (out / "log.jsonl").read_text().splitlines() if line]
    assert len(log) == 120
    first = np.mean([json.loads(x)["depth"] for x in log[:5]])
    last = np.mean([json.loads(x)["depth"] for x in log[-5:]])
    assert last < first
    assert (out / "predictor.safetensors").is_file() and (out / "metrics.json").is_file()


def test_checkpoint_roundtrip_and_clear_errors(trained, tmp_path):
    import shutil

    from splatdistill.lifters.predictor import GaussianPredictor, PredictorConfig, load_predictor, save_predictor

    out, _ = trained
    m = load_predictor(out)
    assert m.config.image_size == 48 and not m.training
    copy = tmp_path / "copy"
    save_predictor(m, copy, {"note": "x"})
    m2 = load_predictor(copy / "predictor.safetensors")
    img = torch.rand(1, 2, 3, 64, 64)
    K = torch.tensor([[50.0, 0, 32], [0, 50, 32], [0, 0, 1]]).expand(1, 2, 3, 3)
    vm = torch.eye(4).repeat(1, 2, 1, 1)
    vm[0, 1, 0, 3] = 0.3
    with torch.no_grad():
        views = Views(img, Cameras(K, vm, 64, 64))
        assert torch.equal(m(views).depth, m2(views).depth)
    with pytest.raises(UserError, match="no such predictor"):
        load_predictor(tmp_path / "missing")
    bad = tmp_path / "bad"
    shutil.copytree(copy, bad)
    (bad / "predictor.json").write_text("{not json")
    with pytest.raises(UserError, match="unreadable predictor config"):
        load_predictor(bad)
    doc = json.loads((copy / "predictor.json").read_text())
    doc["config"]["channels"] = 48
    (bad / "predictor.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match="has shape"):
        load_predictor(bad)
    (bad / "predictor.safetensors").unlink()
    (bad / "predictor.json").write_text((copy / "predictor.json").read_text())
    with pytest.raises(UserError, match="missing predictor.safetensors"):
        load_predictor(bad)
    with pytest.raises(UserError, match="features must be one of"):
        GaussianPredictor(PredictorConfig(features="sift"))


# ---- lifter specs -----------------------------------------------------------------------------------


def test_make_lifter_parses_specs_and_rejects_bad_ones(trained, rooms, tmp_path, monkeypatch):
    from splatdistill.distill.config import TrainConfig
    from splatdistill.distill.trainer import make_lifter
    from splatdistill.lifters.ply_lifter import PlyLifter
    from splatdistill.lifters.predictor import PredictorLifter
    from splatdistill.render.ply import save_ply
    from splatdistill.splat import SplatSettings

    out, _ = trained
    s = SplatSettings()
    assert callable(make_lifter(TrainConfig.from_dict(dict(lifter="depth")), s))
    assert isinstance(make_lifter(TrainConfig.from_dict(dict(lifter=f"predictor:{out}")), s), PredictorLifter)
    from splatdistill.geometry.gaussians import Gaussians

    g = Gaussians(torch.rand(10, 3), torch.eye(3).expand(10, 3, 3) * 0.01, torch.full((10,), 0.5), torch.rand(10, 3))
    save_ply(tmp_path / "one.ply", g)
    lif = make_lifter(TrainConfig.from_dict(dict(lifter=f"ply:{tmp_path / 'one.ply'}", data=str(rooms))), s)
    assert isinstance(lif, PlyLifter) and lif.single
    # bring your own: python:MODULE:FACTORY[:ARG]; a DepthPredictor gets wrapped into a lifter
    (tmp_path / "my_lifters.py").write_text(
        textwrap.dedent("""
        import torch
        class Const:
            def __init__(self, d): self.d = d
            def predict(self, views):
                return torch.full(views.images.shape[:1] + views.images.shape[2:], self.d), None, None
        def make(settings, arg="2.0"):
            return Const(float(arg))
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mine = make_lifter(TrainConfig.from_dict(dict(lifter="python:my_lifters:make:3.5")), s)
    cams = Cameras(
        torch.tensor([[20.0, 0, 8], [0, 20, 8], [0, 0, 1]]).expand(2, 3, 3), torch.eye(4).expand(2, 4, 4), 16, 16
    )
    gs = mine(Views(torch.rand(2, 3, 16, 16), cams, features=torch.rand(2, 5, 16, 16)))
    assert len(gs) == 2 * 16 * 16 and torch.allclose(gs.means[:, 2], torch.tensor(3.5))
    for spec, msg in [
        ("nope", "unknown lifter"),
        ("predictor", "needs a path"),
        ("predictor:/no/such", "no such predictor"),
        ("ply:/no/such.ply", "no such PLY"),
        ("python:my_lifters", "python:MODULE:FACTORY"),
        ("python:no_such_module_x:f", "cannot import"),
        ("python:my_lifters:nothing", "not a callable"),
        ("depth:3", "takes no argument"),
        ("", "empty lifter"),
    ]:
        with pytest.raises(UserError, match=msg):
            make_lifter(TrainConfig.from_dict(dict(lifter=spec)), s)


# ---- the learned predictor and the PLY lifter in the SnD target pipeline ----------------------------


def _scene_views(rooms, size=64):
    from splatdistill.data import load_dataset
    from splatdistill.lifters import load_scene_views

    scene = [s for s in load_dataset(rooms) if s.split == "val"][0]
    return scene, load_scene_views(scene, None, size)


def test_predictor_lifter_gives_covering_targets(trained, rooms):
    from splatdistill.lifters import build_lifter
    from splatdistill.splat import SplatSettings, splat_targets

    out, _ = trained
    _, sv = _scene_views(rooms)
    lifter = build_lifter(f"predictor:{out}", SplatSettings())
    ctx, tgt = [0, 2], [1]
    seg = torch.zeros(3, 64, 64, dtype=torch.long)
    tokens = torch.randn(2, 8, 4, 4)
    settings = SplatSettings(blend_alpha=1.0, renderer="torch")
    res = splat_targets(
        dataclasses.replace(sv[ctx], segments=seg[:2], tokens=tokens, depths=None),
        dataclasses.replace(sv[tgt], segments=seg[:1]),
        (4, 4),
        settings,
        lifter,
    )
    assert torch.isfinite(res.tokens).all()
    assert float(res.pixel_alpha.mean()) > 0.6
    # the lifter runs at its own resolution whatever the render size is (here 2x its training size)
    from splatdistill.lifters import load_scene_views

    sv2 = load_scene_views(_scene_views(rooms)[0], [0, 2], 128)
    d, o, sc = lifter.predict(sv2)
    assert d.shape == (2, 128, 128)
    rel = ((d - sv2.depths).abs() / sv2.depths)[sv2.depths > 0].mean()
    assert float(rel) < 0.5


def test_ply_lifter_round_trip_matches_depth_lifter(rooms, tmp_path):
    """Gaussians lifted from depth, written as 3DGS PLY and read back by the PLY lifter (features
    re-attached from the context views) render the same target features as the depth lifter."""
    from splatdistill.lifters import lift_scene
    from splatdistill.lifters.ply_lifter import PlyLifter
    from splatdistill.render import render_features
    from splatdistill.render.ply import save_ply
    from splatdistill.splat.lifter import SplatSettings, depth_lifter

    scene, sv = _scene_views(rooms)
    ctx = [0, 2]
    feats = torch.nn.functional.interpolate(torch.randn(2, 6, 8, 8), size=(64, 64), mode="bilinear")
    ref = depth_lifter(SplatSettings())(dataclasses.replace(sv[ctx], features=feats))
    folder = tmp_path / "plys" / scene.name / "point_cloud" / "iteration_7000"
    save_ply(folder / "point_cloud.ply", ref)  # the 3DGS training layout
    lifter = PlyLifter(tmp_path / "plys", data=str(rooms), renderer="torch")
    got = lifter(dataclasses.replace(sv[ctx], features=feats, depths=None))  # scene found from the camera poses
    assert len(got) > 0.9 * len(ref)
    cam = sv.cameras[1]
    a_ref, al_ref = render_features(
        ref.means, ref.covariances, ref.opacities, ref.features, cam.viewmats, cam.Ks, 64, 64, backend="torch"
    )
    a_got, al_got = render_features(
        got.means, got.covariances, got.opacities, got.features, cam.viewmats, cam.Ks, 64, 64, backend="torch"
    )
    m = (al_ref > 0.9) & (al_got > 0.9)
    assert m.float().mean() > 0.6
    cos = torch.nn.functional.cosine_similarity(a_ref[m], a_got[m], dim=-1)
    assert float(cos.median()) > 0.97
    # a scene-level lifter gets all views in one call from lift_scene
    with lifter.use_scene(scene.name):
        g2 = lift_scene(sv, lifter, carry="rgb")
    assert len(g2) <= len(ref) and g2.features.shape[1] == 3
    # a camera of no dataset view cannot be matched to a scene
    far = Cameras(sv.cameras.Ks[:1], look_at_viewmat(torch.tensor([[50.0, 50.0, 50.0]]), torch.zeros(1, 3)), 64, 64)
    with pytest.raises(UserError, match="no scene"):
        lifter(Views(sv.images[:1], far, features=feats[:1]))


def test_lift_command_writes_viewable_ply(rooms, tmp_path, capsys):
    from splatdistill.cli import main
    from splatdistill.render.ply import load_ply

    out = tmp_path / "scene.ply"
    assert (
        main(
            [
                "lifter",
                "lift",
                "--lifter",
                "depth",
                "--data",
                str(rooms),
                "--scene",
                "room_0001",
                "--views",
                "0,1",
                "--size",
                "32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    g = load_ply(out)
    assert len(g) == 2 * 32 * 32 and g.features.shape == (2048, 3)
    assert float(g.features.std()) > 0.01  # pixel colours, not a constant
    capsys.readouterr()
    assert (
        main(["lifter", "lift", "--lifter", "bogus", "--data", str(rooms), "--scene", "room_0001", "--out", str(out)])
        == 2
    )
    assert "unknown lifter" in capsys.readouterr().err
    assert main(["lifter", "lift", "--data", str(rooms), "--scene", "nowhere", "--out", str(out)]) == 2


# ---- self-supervision from posed images alone ---------------------------------------------------------


def test_predictor_trains_from_posed_images_alone(rooms, tmp_path):
    """supervision=photometric: no depth reaches the model or the pair choice, the photometric loss
    falls, and on the scene it trained on the predicted depth beats the best constant depth (that scene's
    ground-truth median, which the predictor never saw)."""
    from splatdistill.config import build_config
    from splatdistill.data import load_dataset
    from splatdistill.lifters.bank import load_bank, snd_context_pairs
    from splatdistill.lifters.evaluate import evaluate_predictor
    from splatdistill.lifters.predictor import load_predictor
    from splatdistill.lifters.train_predictor import LifterTrainConfig, train_predictor

    cfg = build_config(
        LifterTrainConfig,
        dict(
            data=str(rooms),
            out=str(tmp_path / "photo"),
            steps=80,
            batch_size=2,
            lr=2e-3,
            image_size=32,
            num_depths=16,
            channels=16,
            warmup=5,
            checkpoint_every=100,
            eval_pairs=2,
            progress=False,
            supervision="photometric",
        ),
        validate=False,
    )
    logged = []
    res = train_predictor(cfg, log=logged.append)
    assert "supervision=photometric;" in logged[0] and res["train_median_depth"] is None
    log = [json.loads(line) for line in (tmp_path / "photo" / "log.jsonl").read_text().splitlines()]
    assert "depth" not in log[0] and log[0]["photo_coverage"] > 0.3  # the splat term, every splat_every steps
    assert "photometric" in log[4] and "photometric" not in log[1]
    first = np.mean([r["warp"] for r in log[:10]])
    last = np.mean([r["warp"] for r in log[-10:]])
    assert last < 0.9 * first
    train = load_dataset(rooms, split="train")
    bank = load_bank(train, 32, progress=False)
    median = float(bank.depths[bank.depths > 0].median())
    ev = evaluate_predictor(
        load_predictor(tmp_path / "photo"), bank, train, snd_context_pairs(bank, train, 2), constant_depth=median
    )
    assert ev["predictor"]["abs_rel"] < 0.5 * ev["constant_depth"]["abs_rel"], ev  # measured: 0.057 vs 0.258


def test_inverse_warp_rebuilds_a_view_at_its_true_depth(scenes):
    """At ground-truth depth the warped neighbour matches the photograph far better than at a wrong depth."""
    from splatdistill.data.views import Views
    from splatdistill.lifters.photometric import inverse_warp, photo_error

    scene = scenes[0]
    v = Views.from_view_data([scene.load_view(0), scene.load_view(1)], [0, 1], mask_mode=None, size=48)
    d = v.depths[:1]
    errs = {}
    for name, depth in {"true": d, "scaled": d * 1.5}.items():
        c = v.cameras
        warped, in_view = inverse_warp(depth, c.Ks[:1], c.viewmats[:1], v.images[1:], c.Ks[1:], c.viewmats[1:])
        m = in_view & (d > 0)
        errs[name] = float(photo_error(warped, v.images[:1])[m].mean())
    assert errs["true"] < 0.6 * errs["scaled"], errs


# ---- MVSplat adapter ---------------------------------------------------------------------------------


class _MVSplatStandIn(torch.nn.Module):
    """A module with exactly MVSplat's encoder interface (``forward(context, global_step, deterministic,
    visualization_dump, scene_names)`` -> Gaussians with means/covariances/harmonics/opacities, one per
    pixel, view-major raster order), placing every pixel at z-depth 2 as MVSplat's adapter would:
    normalised pixel centres through the inverse normalised intrinsics, then camera-to-world."""

    class cfg:  # MVSplat's encoder cfg fields the adapter reads
        shim_patch_size = 4
        downscale_factor = 4

    def __init__(self):
        super().__init__()
        self.seen = {}

    def forward(self, context, global_step, deterministic=False, visualization_dump=None, scene_names=None):
        from types import SimpleNamespace

        b, v, _, h, w = context["image"].shape
        assert h % 16 == 0 and w % 16 == 0, (h, w)
        self.seen = {k: t.clone() for k, t in context.items()} | {"global_step": global_step}
        ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        xy1 = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)  # (h*w, 3)
        rays = torch.einsum("bvij,nj->bvni", torch.linalg.inv(context["intrinsics"]), xy1)
        cam = rays / rays[..., 2:] * 2.0
        c2w = context["extrinsics"]
        world = torch.einsum("bvij,bvnj->bvni", c2w[..., :3, :3], cam) + c2w[..., None, :3, 3]
        n = v * h * w
        return SimpleNamespace(
            means=world.reshape(b, n, 3),
            covariances=torch.eye(3).expand(b, n, 3, 3) * 1e-4,
            harmonics=torch.zeros(b, n, 3, 25),
            opacities=(torch.arange(n, dtype=torch.float32) / n).expand(b, n),
        )


def test_mvsplat_adapter_speaks_the_encoder_interface():
    from splatdistill.geometry import lift_depth
    from splatdistill.lifters import build_lifter
    from splatdistill.lifters.mvsplat import MVSplatLifter, parse_mvsplat_spec

    V, C, H, W = 2, 5, 20, 30  # not multiples of 16: the adapter pads to 32 x 32
    torch.manual_seed(0)
    K = torch.tensor([[25.0, 0, 14.0], [0, 24.0, 11.0], [0, 0, 1]]).expand(V, 3, 3)
    vms = torch.stack(
        [look_at_viewmat(torch.tensor(e), torch.tensor([0.0, 0.0, 4.0])) for e in ([0.0, 0.0, 0.0], [0.4, 0.1, 0.0])]
    )
    cams = Cameras(K, vms, W, H)
    feats, images = torch.randn(V, C, H, W), torch.rand(V, 3, H, W)
    encoder = _MVSplatStandIn()
    g = MVSplatLifter(encoder, near=0.5, far=20.0)(Views(images, cams, features=feats))
    seen = encoder.seen
    assert seen["image"].shape == (1, V, 3, 32, 32) and seen["global_step"] >= 10**6
    assert torch.allclose(seen["image"][0, :, :, :H, :W], images) and torch.equal(
        seen["image"][0, :, :, H:, :W], images[:, :, -1:].expand(-1, -1, 12, -1)
    )
    assert torch.allclose(seen["intrinsics"][0, :, 0], K[:, 0] / 32) and torch.allclose(
        seen["intrinsics"][0, :, 1], K[:, 1] / 32
    )
    assert torch.allclose(seen["extrinsics"][0], torch.linalg.inv(vms), atol=1e-6)
    assert seen["near"].shape == (1, V) and float(seen["near"][0, 0]) == 0.5 and float(seen["far"][0, 1]) == 20.0
    # every real pixel keeps its Gaussian, in the order lift_depth uses, with its own feature
    ref = lift_depth(torch.full((V, H, W), 2.0), cams, feats)
    assert len(g) == V * H * W
    assert torch.allclose(g.means, ref.means, atol=1e-4) and torch.equal(g.features, ref.features)
    vv, yy, xx = torch.meshgrid(torch.arange(V), torch.arange(H), torch.arange(W), indexing="ij")
    padded_index = (vv * 32 * 32 + yy * 32 + xx).reshape(-1).float() / (V * 32 * 32)
    assert torch.allclose(g.opacities, padded_index)
    # specs: bounds parsed, a missing MVSplat named in one line
    assert parse_mvsplat_spec("/ckpt/re10k.ckpt:0.5:30") == ("/ckpt/re10k.ckpt", 0.5, 30.0)
    assert parse_mvsplat_spec("re10k.ckpt") == ("re10k.ckpt", 1.0, 100.0)
    with pytest.raises(UserError, match="MVSplat's code is not importable|no such checkpoint"):
        build_lifter("mvsplat:/nonexistent/re10k.ckpt")
    with pytest.raises(UserError, match="0 < near < far"):
        MVSplatLifter(encoder, near=3.0, far=1.0)
