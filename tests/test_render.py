"""The torch feature renderer against an independent float64 brute force, gsplat's projection
math, and closed-form cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from splat_oracle import brute_force, project64, random_scene
from splatdistill.errors import UserError
from splatdistill.geometry import Cameras, Gaussians, intrinsics, lift_depth, look_at_viewmat
from splatdistill.render import project_gaussians, render_features, render_gaussians

W, H = 32, 24
CHANNELS = (1, 3, 384, 385)


def _t(x, dtype=torch.float32):
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _render(scene, C=None, **kw):
    m, c, o, f, vm, K = scene
    f = f if C is None else f[:, :C]
    img, alpha = render_features(_t(m), _t(c), _t(o), _t(f), _t(vm), _t(K), W, H, backend="torch", **kw)
    return img.double().numpy(), alpha.double().numpy()


# --- against the brute force -------------------------------------------------------------------


@pytest.mark.parametrize("seed,n", [(0, 2000), (1, 2000), (2, 1200), (3, 2000), (4, 300), (5, 2000), (6, 50)])
def test_matches_brute_force(seed, n):
    """abs error <= 1e-4 at >= 99.9% of pixels, for features of 1, 3, 384 and 385 channels."""
    scene = random_scene(seed, n, max(CHANNELS))
    m, c, o, f, vm, K = scene
    ref_img, ref_alpha, stopped = brute_force(m, c, o, f, vm, K, W, H)
    # the scenes exercise what they should: partial coverage, saturation, early termination
    if n >= 1000:
        assert stopped.any() and (ref_alpha < 0.9).any() and (ref_alpha > 0.999).any()
    for C in CHANNELS:
        img, alpha = _render(scene, C)
        assert img.shape == (H, W, C) and alpha.shape == (H, W)
        err_f = np.abs(img - ref_img[..., :C]).max(-1)
        err_a = np.abs(alpha - ref_alpha)
        good = (err_f <= 1e-4) & (err_a <= 1e-4)
        assert good.mean() >= 0.999, (C, err_f.max(), err_a.max(), np.argwhere(~good)[:5])
        # typical float32 error is ~1e-6: a systematic mistake would not hide under the tolerance
        assert np.median(err_f) < 1e-5 and np.median(err_a) < 1e-5


def test_batched_cameras_match_single_renders():
    scene = random_scene(11, 800, 5)
    m, c, o, f, vm, K = scene
    rng = np.random.default_rng(0)
    vms, Ks = [vm], [K]
    for _ in range(2):
        d = np.eye(4)
        d[:3, 3] = rng.normal(scale=0.2, size=3)
        vms.append(d @ vm)
        Ks.append(K * np.array([[rng.uniform(0.9, 1.1)], [1], [1]]))
    img, alpha = render_features(_t(m), _t(c), _t(o), _t(f), _t(np.stack(vms)), _t(np.stack(Ks)), W, H, backend="torch")
    assert img.shape == (3, H, W, 5) and alpha.shape == (3, H, W)
    for v in range(3):
        ref, ref_a, _ = brute_force(m, c, o, f, vms[v], Ks[v], W, H)
        assert (np.abs(img[v].double().numpy() - ref).max(-1) <= 1e-4).mean() >= 0.999
        assert (np.abs(alpha[v].double().numpy() - ref_a) <= 1e-4).mean() >= 0.999
    # leading batch dims: two different Gaussian sets, two cameras each
    s2 = random_scene(12, 800, 5)
    means = _t(np.stack([m, s2[0]]))
    covs = _t(np.stack([c, s2[1]]))
    opac = _t(np.stack([o, s2[2]]))
    feats = _t(np.stack([f, s2[3]]))
    vmb = _t(np.stack([np.stack(vms[:2]), np.stack([s2[4], s2[4]])]))
    Kb = _t(np.stack([np.stack(Ks[:2]), np.stack([s2[5], s2[5]])]))
    imgb, alphab = render_features(means, covs, opac, feats, vmb, Kb, W, H, backend="torch")
    assert imgb.shape == (2, 2, H, W, 5)
    torch.testing.assert_close(imgb[0], img[:2], atol=1e-6, rtol=0)
    ref, ref_a, _ = brute_force(*s2[:4], s2[4], s2[5], W, H)
    assert (np.abs(imgb[1, 1].double().numpy() - ref).max(-1) <= 1e-4).mean() >= 0.999


def test_projection_matches_gsplat_torch_impl():
    """2D means, conics, depths (and 3.33-sigma radii) equal gsplat's pure-PyTorch projection."""
    from gsplat.cuda._torch_impl import _fully_fused_projection

    for seed in range(3):
        m, c, o, f, vm, K = random_scene(seed, 1500, 1)
        shift = np.eye(4)
        shift[:3, 3] = [0.1, -0.05, 0.3]
        for dtype in (torch.float64, torch.float32):
            vms = _t(np.stack([vm, shift @ vm]), dtype)
            Ks = _t(np.stack([K, K * [[1.1], [0.9], [1]]]), dtype)
            radii, m2, depths, conics, _ = _fully_fused_projection(_t(m, dtype), _t(c, dtype), vms, Ks, W, H)
            p = project_gaussians(_t(m, dtype), _t(c, dtype), vms, Ks, W, H)
            ok = depths > 0.01
            assert ok.sum() > 1000
            if dtype == torch.float64:
                for ours, ref in ((p.means2d, m2), (p.depths, depths), (p.conics, conics)):
                    rel = (ours - ref).abs() / ref.abs().clamp(min=1e-12)
                    assert rel[ok].max() < 1e-5
                assert torch.equal(p.radii[ok], radii[ok])
            else:
                # float32: same rounding class; compare where the values are well conditioned
                good = ok & (depths > 0.5)
                for ours, ref in ((p.means2d, m2), (p.depths, depths), (p.conics, conics)):
                    rel = (ours - ref).abs() / ref.abs().amax(-1, keepdim=True).clamp(min=1e-12)
                    assert rel[good].max() < 1e-5
    # the compiled CPU projection (what the renderer uses on CPU) is the same computation
    from gsplat.cuda._torch_impl import _fully_fused_projection as ffp

    import splatdistill.render.torch_backend as tb

    for seed in range(3):
        m, c, o, f, vm, K = random_scene(seed, 1500, 1)
        shift = np.eye(4)
        shift[:3, 3] = [0.1, -0.05, 0.3]
        vms, Ks = np.stack([vm, shift @ vm]), np.stack([K, K * [[1.1], [0.9], [1]]])
        for dtype in (torch.float64, torch.float32):  # float32 inputs are promoted exactly
            args = [_t(x, dtype) for x in (m, c, o, vms, Ks)]
            p = tb.project_compiled(
                None, args[0][None], args[1][None], args[2][None], args[3][None], args[4][None], W, H, 0.01, 1e10, 0.3
            )
            a64 = [a.double() for a in args]  # the same (rounded) inputs, in float64
            radii, m2, depths, conics, _ = ffp(a64[0], a64[1], a64[3], a64[4], W, H)
            ok = depths > 0.01
            assert ok.sum() > 1000
            for ours, ref in (
                (np.stack([p["mx"][0], p["my"][0]], -1), m2),
                (p["z"][0], depths),
                (np.stack([p["ca"][0], p["cb"][0], p["cc"][0]], -1), conics),
            ):
                ref = ref.numpy()
                rel = np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-12)
                assert rel[ok.numpy()].max() < 1e-5
            # its opacity-aware radii and culling are the torch path's, value for value
            q = project_gaussians(a64[0], a64[1], a64[3], a64[4], W, H, opacities=a64[2])
            assert np.array_equal(np.stack([p["rx"][0], p["ry"][0]], -1) * p["visible"][0, ..., None], q.radii.numpy())
    # and the float64 brute force's own projection agrees too (it is what the oracle uses)
    m, c, o, f, vm, K = random_scene(0, 500, 1)
    m2, conics, z, _ = project64(m, c, vm, K, W, H)
    p = project_gaussians(
        _t(m, torch.float64), _t(c, torch.float64), _t(vm, torch.float64)[None], _t(K, torch.float64)[None], W, H
    )
    ok = z > 0.01
    np.testing.assert_allclose(p.means2d[0].numpy()[ok], m2[ok], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(p.conics[0].numpy()[ok], conics[ok], rtol=1e-9, atol=1e-12)


def test_radii_are_gsplat_opacity_aware_boxes():
    m, c, o, f, vm, K = random_scene(3, 1000, 1)
    p = project_gaussians(_t(m), _t(c), _t(vm)[None], _t(K)[None], W, H, opacities=_t(o))
    m2, conics, z, _ = project64(m, c, vm, K, W, H)
    cov2 = np.linalg.inv(np.stack([[conics[:, 0], conics[:, 1]], [conics[:, 1], conics[:, 2]]]).transpose(2, 0, 1))
    extend = np.minimum(3.33, np.sqrt(2 * np.log(np.maximum(o, 1 / 255) * 255)))
    rx = np.ceil(extend * np.sqrt(cov2[:, 0, 0]))
    inside = (m2[:, 0] + rx > 0) & (m2[:, 0] - rx < W)
    ry = np.ceil(extend * np.sqrt(cov2[:, 1, 1]))
    inside &= (m2[:, 1] + ry > 0) & (m2[:, 1] - ry < H)
    expect_visible = (z >= 0.01) & (o >= 1 / 255) & inside
    visible = p.visible[0].numpy()
    assert (visible == expect_visible).mean() > 0.995  # float32 ceil boundaries aside
    both = visible & expect_visible
    assert (np.abs(p.radii[0, :, 0].numpy()[both] - rx[both]) <= 1).all()


# --- closed-form cases ---------------------------------------------------------------------------


def test_single_isotropic_gaussian_has_closed_form_profile():
    f, z, s, o = 40.0, 2.0, 0.05, 0.8
    K = intrinsics(f, f, 16.5, 12.5)  # the mean projects onto the centre of pixel (16, 12)
    means = torch.tensor([[0.0, 0.0, z]])
    covs = torch.eye(3)[None] * s * s
    feat = torch.tensor([[2.0, -1.0]])
    img, alpha = render_features(means, covs, torch.tensor([o]), feat, torch.eye(4), K, W, H, backend="torch")
    var = (f * s / z) ** 2 + 0.3  # EWA + low-pass; the Jacobian is exact on the optical axis
    u = torch.arange(W) + 0.5
    v = torch.arange(H) + 0.5
    r2 = (u[None, :] - 16.5) ** 2 + (v[:, None] - 12.5) ** 2
    expect = o * torch.exp(-0.5 * r2 / var)
    expect = torch.where(expect >= 1 / 255, expect.clamp(max=0.999), torch.zeros(()))
    torch.testing.assert_close(alpha, expect, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(img, expect[..., None] * feat[0], atol=1e-6, rtol=1e-5)
    assert (alpha == 0).sum() > 0 and alpha.max() == pytest.approx(o, abs=1e-6)


def test_opacity_clamp_and_thresholds():
    """alpha clamps at 0.999; contributions under 1/255 are skipped, not attenuated."""
    K = intrinsics(40.0, 40.0, 16.5, 12.5)
    covs = torch.eye(3)[None] * 0.05**2
    _, alpha = render_features(
        torch.tensor([[0.0, 0.0, 2.0]]),
        covs,
        torch.tensor([1.0]),
        torch.ones(1, 1),
        torch.eye(4),
        K,
        W,
        H,
        backend="torch",
    )
    assert alpha.max().item() == pytest.approx(0.999, abs=1e-7)
    # an opacity of exactly 1/255 renders its centre pixel only where exp(-sigma) rounds to 1
    _, alpha = render_features(
        torch.tensor([[0.0, 0.0, 2.0]]),
        covs,
        torch.tensor([0.9 / 255]),
        torch.ones(1, 1),
        torch.eye(4),
        K,
        W,
        H,
        backend="torch",
    )
    assert alpha.abs().max() == 0


def _plane(z, half, step, opacity, feat, device="cpu"):
    xs = torch.arange(-half, half + 1e-9, step)
    g = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    means = torch.cat([g, torch.full((len(g), 1), z)], 1)
    covs = torch.diag(torch.tensor([step, step, step * 0.1]) ** 2).expand(len(g), 3, 3)
    return Gaussians(means, covs.clone(), torch.full((len(g),), opacity), torch.tensor(feat).expand(len(g), -1).clone())


def test_opaque_front_plane_hides_back_plane():
    K = intrinsics(30.0, 30.0, 16.0, 12.0)
    front = _plane(2.0, 0.5, 0.02, 1.0, [1.0, 0.0])  # covers the centre (+-7.5 px)
    back = _plane(4.0, 3.0, 0.05, 1.0, [0.0, 1.0])  # covers the whole view
    both = Gaussians.cat([back, front])  # input order must not matter: depth does
    img, alpha = render_gaussians(both, Cameras(K, torch.eye(4), W, H), backend="torch")
    centre = img[8:16, 12:20]
    # the front plane saturates transmittance, the exclusive stop leaves the back plane out
    assert (centre[..., 1] == 0).all()
    torch.testing.assert_close(centre[..., 0], alpha[8:16, 12:20])
    assert (alpha[8:16, 12:20] > 0.999).all()
    # around it (past the front plane's 3.3-sigma blur) the back plane shows
    assert (img[0:2, :, 1] > 0.99).all() and (img[0:2, :, 0] == 0).all()


def test_input_order_does_not_matter():
    """Depth decides the compositing order, not the order of the input arrays."""
    m, c, o, f, vm, K = random_scene(8, 1500, 4)
    perm = np.random.default_rng(1).permutation(len(m))
    a = render_features(_t(m), _t(c), _t(o), _t(f), _t(vm), _t(K), W, H, backend="torch")
    b = render_features(_t(m[perm]), _t(c[perm]), _t(o[perm]), _t(f[perm]), _t(vm), _t(K), W, H, backend="torch")
    torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(a[1], b[1], atol=1e-7, rtol=0)


def test_equal_depths_composite_in_input_order():
    """Ties in depth are broken by index, like gsplat's stable radix sort."""
    K = intrinsics(30.0, 30.0, 16.5, 12.5)
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 2.0]])
    covs = torch.eye(3).expand(2, 3, 3) * 0.1**2
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    img, _ = render_features(
        means, covs.clone(), torch.tensor([0.5, 0.5]), feats, torch.eye(4), K, W, H, backend="torch"
    )
    assert img[12, 16, 0] == pytest.approx(0.5, abs=1e-6)
    assert img[12, 16, 1] == pytest.approx(0.25, abs=1e-6)


def test_near_plane_culls_like_gsplat():
    K = intrinsics(30.0, 30.0, 16.5, 12.5)
    covs = torch.eye(3).expand(2, 3, 3) * 1e-4**2
    means = torch.tensor([[0.0, 0.0, 0.0099], [0.0, 0.0, 0.5]])
    img, alpha = render_features(
        means, covs.clone(), torch.ones(2), torch.eye(2), torch.eye(4), K, W, H, backend="torch"
    )
    assert img[12, 16, 0] == 0 and img[12, 16, 1] > 0.9
    # behind the camera: nothing at all
    img, alpha = render_features(
        -means, covs.clone(), torch.ones(2), torch.eye(2), torch.eye(4), K, W, H, backend="torch"
    )
    assert alpha.abs().max() == 0 and img.abs().max() == 0


def _room_depth(cams: Cameras) -> torch.Tensor:
    """Exact z-depth of a slanted floor/wall and a sphere, by ray casting."""
    rays = cams.ray_directions()
    o = cams.centers[..., None, None, :]
    t = torch.full(rays.shape[:-1], math.inf)
    for n, d in (((0.0, 0.3, -1.0), -4.0), ((0.0, -1.0, 0.0), -1.0)):
        n = torch.tensor(n)
        denom = (rays * n).sum(-1)
        tt = (d - (o * n).sum(-1)) / denom
        t = torch.minimum(t, torch.where(tt > 0, tt, torch.full_like(tt, math.inf)))
    c, r = torch.tensor([0.3, 0.1, 2.5]), 0.6
    oc = o - c
    a = (rays * rays).sum(-1)
    b = 2 * (rays * oc).sum(-1)
    cc = (oc * oc).sum(-1) - r * r
    disc = b * b - 4 * a * cc
    tt = (-b - disc.clamp(min=0).sqrt()) / (2 * a)
    t = torch.minimum(t, torch.where((disc > 0) & (tt > 0), tt, torch.full_like(tt, math.inf)))
    return t  # rays have unit camera-z, so the ray parameter is the z-depth


def test_lift_and_render_back_reproduces_features():
    Wr, Hr = 96, 72
    K = intrinsics(80.0, 80.0, Wr / 2, Hr / 2)
    cams = Cameras(K[None], look_at_viewmat(torch.tensor([[0.2, -0.3, -0.5]]), torch.tensor([[0.0, 0.2, 3.0]])), Wr, Hr)
    depth = _room_depth(cams)
    depth[:, :3, :5] = 0.0  # invalid pixels produce no Gaussian (and leave a hole)
    depth[:, 40, 10] = math.nan
    # teacher-like features: LayerNorm-ed tokens on a 14-px grid, bilinearly upsampled
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(1, 64, Hr // 14 + 1, Wr // 14 + 1, generator=g)
    tokens = F.layer_norm(tokens.movedim(1, -1), (64,)).movedim(-1, 1)
    feats = F.interpolate(tokens, size=(Hr, Wr), mode="bilinear", align_corners=False)
    gauss = lift_depth(depth, cams, feats)
    assert len(gauss) == Hr * Wr - 16
    img, alpha = render_gaussians(gauss, cams[0], backend="torch")
    ref = feats[0].permute(1, 2, 0)
    cos = F.cosine_similarity(img, ref, dim=-1)
    valid = torch.isfinite(depth[0]) & (depth[0] > 0)
    interior = torch.zeros_like(valid)
    interior[1:-1, 1:-1] = True  # image-border pixels miss half their neighbours' coverage
    sel = valid & interior
    sel[:5, :7] = False
    assert cos[sel].min() >= 0.99, cos[sel].min()
    assert alpha[sel].min() >= 0.98, alpha[sel].min()
    assert alpha[0, 0] < 0.5  # the hole stays open
    assert cos[valid].quantile(0.01) >= 0.99 and alpha[valid].quantile(0.01) >= 0.98


# --- autograd, API -------------------------------------------------------------------------------


def test_gradient_wrt_features():
    m, c, o, f, vm, K = random_scene(5, 40, 2)
    feats = _t(f, torch.float64).requires_grad_(True)
    args = [_t(x, torch.float64) for x in (m, c, o)]

    def fn(x):
        return render_features(
            args[0], args[1], args[2], x, _t(vm, torch.float64), _t(K, torch.float64), 8, 6, backend="torch"
        )[0]

    assert torch.autograd.gradcheck(fn, (feats,), eps=1e-6, atol=1e-6, fast_mode=True)
    # and the gradient is what linearity says: d<img, R>/df = W^T R, checked on one Gaussian
    img = fn(feats)
    R = torch.randn_like(img)
    (img * R).sum().backward()
    e = torch.zeros_like(feats)
    e[7, 0] = 1.0
    with torch.no_grad():
        assert (fn(e) * R).sum().item() == pytest.approx(feats.grad[7, 0].item(), abs=1e-9)


def test_float64_and_no_visible_gaussians():
    m, c, o, f, vm, K = random_scene(1, 200, 3)
    img, alpha = render_features(*(_t(x, torch.float64) for x in (m, c, o, f, vm, K)), W, H, backend="torch")
    ref, ref_a, _ = brute_force(m, c, o, f, vm, K, W, H)
    assert img.dtype == torch.float64
    assert np.abs(img.numpy() - ref).max() < 1e-4
    pc = m @ vm[:3, :3].T + vm[:3, 3]
    front = pc[:, 2] > 0
    img, alpha = render_features(
        _t(m[front]),
        _t(c[front]),
        _t(o[front]),
        _t(f[front]),
        _t(np.diag([-1.0, 1.0, -1.0, 1.0]) @ vm),
        _t(K),
        W,
        H,
        backend="torch",
    )  # turned around: everything is behind
    assert img.abs().max() == 0 and alpha.abs().max() == 0
    img, alpha = render_features(
        torch.zeros(0, 3),
        torch.zeros(0, 3, 3),
        torch.zeros(0),
        torch.zeros(0, 4),
        torch.eye(4),
        _t(K),
        W,
        H,
        backend="torch",
    )
    assert img.shape == (H, W, 4) and img.abs().max() == 0


def test_half_precision_features():
    m, c, o, f, vm, K = random_scene(4, 300, 6)
    ref, ref_a = render_features(*(_t(x) for x in (m, c, o, f, vm, K)), W, H, backend="torch")
    for dtype in (torch.float16, torch.bfloat16):
        feats = _t(f).to(dtype)
        img, alpha = render_features(_t(m), _t(c), _t(o), feats, _t(vm), _t(K), W, H, backend="torch")
        assert img.dtype == dtype and alpha.dtype == torch.float32
        torch.testing.assert_close(alpha, ref_a)
        exact, _ = render_features(_t(m), _t(c), _t(o), feats.float(), _t(vm), _t(K), W, H, backend="torch")
        torch.testing.assert_close(img.float(), exact, atol=0.02, rtol=0.01)


def test_argument_errors():
    m, c, o, f, vm, K = (_t(x) for x in random_scene(0, 10, 2))
    with pytest.raises(UserError, match="unknown render backend"):
        render_features(m, c, o, f, vm, K, W, H, backend="cuda")
    with pytest.raises(UserError, match="CUDA"):
        render_features(m, c, o, f, vm, K, W, H, backend="gsplat")
    with pytest.raises(ValueError, match="covariances"):
        render_features(m, c[:5], o, f, vm, K, W, H)
    with pytest.raises(ValueError, match="features"):
        render_features(m, c, o, f[:, None], vm, K, W, H)
    with pytest.raises(ValueError, match="Ks"):
        render_features(m, c, o, f, vm[None], K, W, H)
    # auto on CPU is the torch backend
    a = render_features(m, c, o, f, vm, K, W, H)[0]
    b = render_features(m, c, o, f, vm, K, W, H, backend="torch")[0]
    assert torch.equal(a, b)


def test_torch_index_path_matches_compiled_path(monkeypatch):
    """The torch-op code path (what runs on GPU) gives the same render as the compiled CPU path."""
    import splatdistill.render.torch_backend as tb

    m, c, o, f, vm, K = random_scene(9, 1500, 6)
    args = [_t(x) for x in (m, c, o, f, vm, K)]
    a = render_features(*args, W, H, backend="torch")
    b = [x[0] for x in tb.render_torch(*args[:4], args[4][None], args[5][None], W, H, compiled=False)]
    torch.testing.assert_close(b[0], a[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(b[1], a[1], atol=1e-7, rtol=0)
    # and with more pixels than a 16-bit pixel key holds (torch.sort on long keys), same pairs
    big_K = _t(K) * torch.tensor([[10.0], [10.0], [1.0]])
    stats_torch: dict = {}
    c1 = tb.render_torch(*args[:4], args[4][None], big_K[None], 320, 240, stats=stats_torch, compiled=False)
    stats_compiled: dict = {}
    c2 = tb.render_torch(*args[:4], args[4][None], big_K[None], 320, 240, stats=stats_compiled, compiled=True)
    assert c2[1].max() > 0.5
    torch.testing.assert_close(c1[0], c2[0], atol=1e-6, rtol=0)
    assert stats_torch == stats_compiled and stats_compiled["composited"] > 10_000


def test_chunked_block_evaluation_is_identical(monkeypatch):
    """Large Gaussians are evaluated in bounded chunks; chunking must not change the result."""
    import splatdistill.render.composite as composite
    import splatdistill.render.torch_backend as tb

    m, c, o, f, vm, K = random_scene(10, 1000, 4)
    args = [_t(x) for x in (m, c, o, f, vm, K)]
    cams = (args[4][None], args[5][None])
    a = tb.render_torch(*args[:4], *cams, W, H, compiled=False)  # the chunking is the torch-op path's
    monkeypatch.setattr(composite, "_SLOT_BUDGET", 64)
    b = tb.render_torch(*args[:4], *cams, W, H, compiled=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("threads,band_pixels", [(1, 100), (2, 200), (3, 1)])
def test_row_bands_match_single_band(monkeypatch, threads, band_pixels):
    """Large images are composited in row bands (on worker threads): same result as one band."""
    import splatdistill.render.torch_backend as tb

    m, c, o, f, vm, K = random_scene(13, 2000, 5)
    args = [_t(x) for x in (m, c, o, f, vm, K)]
    import splatdistill.render.workers as workers

    monkeypatch.setattr(workers, "BAND_PIXELS", 1 << 30)
    monkeypatch.setattr(workers, "PROJECT_SLICE", 1 << 30)
    one = render_features(*args, W, H, backend="torch")
    monkeypatch.setattr(workers, "BAND_PIXELS", band_pixels)
    monkeypatch.setattr(workers, "PROJECT_SLICE", 300)  # projection in slices too
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert workers.num_bands(True, W, H) == min(H, -(-W * H // band_pixels))
    stats: dict = {}
    img, alpha = tb.render_torch(*args[:4], args[4][None], args[5][None], W, H, stats=stats)
    torch.testing.assert_close(img[0], one[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(alpha[0], one[1], atol=1e-7, rtol=0)
    ref, ref_a, _ = brute_force(m, c, o, f, vm, K, W, H)
    assert (np.abs(img[0].double().numpy() - ref).max(-1) <= 1e-4).mean() >= 0.999
    assert stats["composited"] > 0 and stats["pairs"] >= stats["composited"]
    # with autograd the bands are joined into one differentiable product
    R = torch.randn(H, W, 5, generator=torch.Generator().manual_seed(0))
    grads = []
    for bands in (True, False):
        monkeypatch.setattr(workers, "BAND_PIXELS", band_pixels if bands else 1 << 30)
        feats = args[3].clone().requires_grad_(True)
        img_g, _ = render_features(*args[:3], feats, args[4], args[5], W, H, backend="torch")
        torch.testing.assert_close(img_g.detach(), one[0], atol=1e-6, rtol=0)
        (img_g * R).sum().backward()
        grads.append(feats.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=0)


def test_output_buffers_are_reused_only_when_released():
    import splatdistill.memory as tb  # the buffers the torch backend renders into

    tb.release_buffers()
    a = tb.empty_fast((1024, 1024, 2), torch.float32, "cpu")  # 8 MB: cached
    a.fill_(1.0)
    a_ptr = a.data_ptr()
    view = a[3:].reshape(-1)
    b = tb.empty_fast((1024, 1024, 2), torch.float32, "cpu")
    assert b.data_ptr() != a_ptr  # a is alive: not handed out again
    del a
    c = tb.empty_fast((1024, 1024, 2), torch.float32, "cpu")
    assert c.data_ptr() not in (a_ptr, b.data_ptr())  # a's view still lives
    del view, b
    d = tb.empty_fast((1024, 1024, 2), torch.float32, "cpu")
    assert d.data_ptr() == a_ptr  # released: recycled
    # renders stay correct when their output memory is recycled
    m, cov, o, f, vm, K = random_scene(2, 500, 3)
    args = [_t(x) for x in (m, cov, o, f, vm, K)]
    first = render_features(*args, 96, 64, backend="torch")[0].clone()
    for _ in range(3):
        torch.testing.assert_close(render_features(*args, 96, 64, backend="torch")[0], first)
    tb.release_buffers()


def test_stable_depth_argsort_matches_numpy():
    """The radix argsort that orders Gaussians by depth on CPU is NumPy's stable argsort."""
    from splatdistill.render.cpu_kernels import stable_argsort_f64

    rng = np.random.default_rng(0)
    cases = [
        rng.uniform(0.01, 50.0, 100_000),
        rng.normal(size=3000),
        np.round(rng.normal(size=5000), 1),  # many ties, and -0.0 next to 0.0
        np.array([]),
        np.array([2.0]),
        np.array([-0.0, 0.0, 1.0, -1.0, np.inf, -np.inf, 1e-300, -1e-300, 0.0, -0.0, 5e-324]),
    ]
    for x in cases:
        assert np.array_equal(stable_argsort_f64(x), np.argsort(x, kind="stable")), x[:5]


def test_deep_stacks_of_faint_gaussians_match_brute_force():
    """Hundreds of faint Gaussians over every pixel (far more composited pairs per pixel than the
    CPU kernel's first pair buffer holds, so it grows mid-pass) composite like the brute force."""
    rng = np.random.default_rng(3)
    n = 300
    K = np.array([[30.0, 0, W / 2], [0, 30.0, H / 2], [0, 0, 1]])
    z = rng.uniform(1.0, 3.0, n)
    means = np.stack([rng.uniform(-0.3, 0.3, n) * z, rng.uniform(-0.2, 0.2, n) * z, z], 1)
    covs = np.eye(3) * (rng.uniform(0.6, 1.2, n) ** 2)[:, None, None]
    opac = rng.uniform(0.01, 0.03, n)
    feats = rng.normal(size=(n, 7))
    scene = tuple(a.astype(np.float32).astype(np.float64) for a in (means, covs, opac, feats, np.eye(4), K))
    ref, ref_a, _ = brute_force(*scene, W, H)
    stats: dict = {}
    import splatdistill.render.torch_backend as tb

    img, alpha = tb.render_torch(*[_t(x) for x in scene[:4]], _t(scene[4])[None], _t(scene[5])[None], W, H, stats=stats)
    assert stats["composited"] > 100 * W * H  # the buffer starts at 64 pairs per pixel
    assert np.abs(img[0].double().numpy() - ref).max() <= 1e-4
    assert np.abs(alpha[0].double().numpy() - ref_a).max() <= 1e-4
    assert ref_a.min() > 0.8  # every pixel deep in faint layers
