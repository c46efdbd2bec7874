"""Cameras, Gaussians (quaternion/scale <-> covariance) and pixel-aligned lifting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splatdistill.data.scene import ViewData
from splatdistill.geometry import (
    BOX_STD,
    Cameras,
    Gaussians,
    covariance_to_quat_scale,
    intrinsics,
    lift_depth,
    look_at_viewmat,
    quat_scale_to_covariance,
    quat_to_rotmat,
    rigid_inverse,
    rotmat_to_quat,
)


def _random_pose(gen: torch.Generator, n: int = 1) -> torch.Tensor:
    q = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    T[:, :3, :3] = quat_to_rotmat(q)
    T[:, :3, 3] = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return T


# --- rotations and covariances -----------------------------------------------------------------


def test_quaternion_rotation_round_trip_and_gsplat_convention():
    from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci, _quat_to_rotmat

    g = torch.Generator().manual_seed(0)
    q = torch.randn(2000, 4, generator=g, dtype=torch.float64)
    q[:10] = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)  # identity
    q[10:20] = torch.tensor([0.0, 1, 0, 0], dtype=torch.float64)  # 180 degrees: w = 0
    q[20:30, 0] = 1e-9  # nearly w = 0
    R = quat_to_rotmat(q)
    torch.testing.assert_close(R, _quat_to_rotmat(q))
    eye = torch.eye(3, dtype=torch.float64).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye)
    assert torch.allclose(torch.linalg.det(R), torch.ones(2000, dtype=torch.float64))
    q2 = rotmat_to_quat(R)
    torch.testing.assert_close(quat_to_rotmat(q2), R)
    qn = torch.nn.functional.normalize(q, dim=-1)
    assert torch.allclose((q2 * qn).sum(-1).abs(), torch.ones(2000, dtype=torch.float64))
    assert (q2[:, 0] >= 0).all()
    s = torch.rand(2000, 3, generator=g, dtype=torch.float64) + 0.01
    cov = quat_scale_to_covariance(q, s)
    ref, _ = _quat_scale_to_covar_preci(q, s, compute_preci=False)
    torch.testing.assert_close(cov, ref)


def test_covariance_to_quat_scale_round_trip():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(500, 4, generator=g, dtype=torch.float64)
    s = torch.exp(torch.randn(500, 3, generator=g, dtype=torch.float64) * 2)
    s[:50, 2] = s[:50, 1]  # repeated eigenvalues: the frame is not unique, the covariance is
    cov = quat_scale_to_covariance(q, s)
    q2, s2 = covariance_to_quat_scale(cov)
    torch.testing.assert_close(quat_scale_to_covariance(q2, s2), cov, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(s2.sort(-1).values, s.sort(-1).values, rtol=1e-6, atol=1e-8)
    # float32 input stays float32 and keeps thin axes (eigh runs in float64)
    thin = quat_scale_to_covariance(q[:5], torch.tensor([[1.0, 1.0, 1e-2]]).double().expand(5, 3))
    q3, s3 = covariance_to_quat_scale(thin.float())
    assert q3.dtype == torch.float32
    assert s3.min(-1).values.double().sub(1e-2).abs().max() < 1e-5
    # rank-deficient: clamped to min_scale, so log-scales stay finite
    flat = torch.diag(torch.tensor([1.0, 1.0, 0.0])).double()[None]
    _, s4 = covariance_to_quat_scale(flat, min_scale=1e-6)
    assert s4.min() == pytest.approx(1e-6)


def test_gaussians_container():
    g = Gaussians(
        torch.zeros(4, 3), torch.eye(3).expand(4, 3, 3).clone(), torch.ones(4), torch.arange(8.0).reshape(4, 2)
    )
    assert len(g) == 4 and g.num_channels == 2 and g.batch_shape == ()
    h = Gaussians.cat([g, g.select(torch.tensor([True, False, True, False]))])
    assert len(h) == 6 and torch.equal(h.features[4:], g.features[[0, 2]])
    with pytest.raises(ValueError, match="opacities"):
        Gaussians(torch.zeros(4, 3), torch.zeros(4, 3, 3), torch.ones(3), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="covariances"):
        Gaussians(torch.zeros(4, 3), torch.zeros(4, 3), torch.ones(4), torch.zeros(4, 1))
    quats, scales = g.quats_scales()
    assert torch.allclose(scales, torch.ones(4, 3))


# --- cameras -----------------------------------------------------------------------------------


def test_camera_unproject_project_round_trip():
    gen = torch.Generator().manual_seed(2)
    c2w = _random_pose(gen, 3)
    K = torch.tensor([[50.0, 0.3, 20.0], [0.0, 45.0, 14.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    cams = Cameras.from_cam_to_world(K.expand(3, 3, 3), c2w, 40, 30)
    torch.testing.assert_close(cams.cam_to_world, c2w)
    torch.testing.assert_close(cams.centers, c2w[:, :3, 3])
    uv = cams.pixel_centers()
    assert uv[0, 0].tolist() == [0.5, 0.5] and uv[29, 39].tolist() == [39.5, 29.5]
    depth = torch.rand(3, 30, 40, generator=gen, dtype=torch.float64) * 5 + 0.1
    pts = cams.unproject(depth)  # (3, 30, 40, 3)
    uv2, z = cams.project(pts.reshape(3, -1, 3))
    torch.testing.assert_close(uv2, uv.reshape(1, -1, 2).expand(3, -1, -1))
    torch.testing.assert_close(z, depth.reshape(3, -1))
    # world rays: centre + depth * ray = the unprojected point; unit camera-z component
    rays = cams.ray_directions()
    torch.testing.assert_close(cams.centers[:, None, None] + depth[..., None] * rays, pts)
    cam_rays = cams.camera_rays()
    assert torch.all(cam_rays[..., 2] == 1)
    unit = cams.ray_directions(normalize=True)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(3, 30, 40, dtype=torch.float64))


def test_look_at_and_from_views():
    eye = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    target = torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64)
    vm = look_at_viewmat(eye, target)
    K = intrinsics(100.0, 100.0, 32.0, 24.0, dtype=torch.float64)
    cam = Cameras(K, vm, 64, 48)
    uv, z = cam.project(target[None])
    torch.testing.assert_close(uv[0], torch.tensor([32.0, 24.0], dtype=torch.float64))
    assert z.item() == pytest.approx(float((target - eye).norm()))
    # default up is world -y: a point below the target (larger y) appears lower in the image
    uv_low, _ = cam.project(torch.tensor([[0.0, 0.5, 3.0]], dtype=torch.float64))
    assert uv_low[0, 1] > 24.0
    torch.testing.assert_close(rigid_inverse(rigid_inverse(vm)), vm)
    views = [ViewData(np.zeros((48, 64, 3), np.float32), K.numpy(), rigid_inverse(vm).numpy()) for _ in range(2)]
    cams = Cameras.from_views(views, dtype=torch.float64)
    assert cams.batch_shape == (2,) and (cams.width, cams.height) == (64, 48)
    torch.testing.assert_close(cams.viewmats[1], vm)
    with pytest.raises(ValueError, match="sizes"):
        Cameras.from_views([views[0], ViewData(np.zeros((10, 10, 3), np.float32), K.numpy(), np.eye(4))])


# --- lifting -----------------------------------------------------------------------------------


def _cams(n=2, W=24, H=16, dtype=torch.float64):
    gen = torch.Generator().manual_seed(3)
    K = torch.tensor([[30.0, 0.0, 12.0], [0.0, 28.0, 8.0], [0.0, 0.0, 1.0]], dtype=dtype)
    return Cameras.from_cam_to_world(K.expand(n, 3, 3), _random_pose(gen, n).to(dtype), W, H)


def test_lift_depth_places_one_gaussian_per_valid_pixel():
    cams = _cams()
    gen = torch.Generator().manual_seed(4)
    depth = torch.rand(2, 16, 24, generator=gen, dtype=torch.float64) * 3 + 0.5
    depth[0, 0, 0] = 0.0
    depth[0, 1, 2] = -1.0
    depth[1, 5, 5] = math.inf
    depth[1, 6, 6] = math.nan
    feats = torch.randn(2, 7, 16, 24, generator=gen, dtype=torch.float64)
    g = lift_depth(depth, cams, feats, opacity=0.7)
    valid = torch.isfinite(depth) & (depth > 0)
    assert len(g) == int(valid.sum()) == 2 * 16 * 24 - 4
    assert g.num_channels == 7 and g.batch_shape == ()
    torch.testing.assert_close(g.features, feats.movedim(1, -1)[valid])
    assert torch.all(g.opacities == 0.7)
    # each mean sits on its pixel's ray at its depth
    v, u = torch.nonzero(valid[1], as_tuple=True)
    sel = slice(int(valid[0].sum()), None)
    uv, z = cams[1].project(g.means[sel])
    torch.testing.assert_close(uv, torch.stack([u + 0.5, v + 0.5], -1).double())
    torch.testing.assert_close(z, depth[1][valid[1]])
    # every pixel valid (no gather), float32 features, and concatenation keep the values exactly
    full = lift_depth(depth.nan_to_num(1.0, 1.0).abs() + 0.1, cams, feats.float())
    assert torch.equal(full.features, feats.float().movedim(1, -1).reshape(-1, 7))
    both = Gaussians.cat([g, full.to(dtype=torch.float64)])
    assert torch.equal(both.features, torch.cat([g.features, full.features.double()]))
    assert torch.equal(both.means, torch.cat([g.means, full.means.double()]))


def test_lift_depth_footprint_covariance():
    """Projected into its own camera, a lifted Gaussian's 2D std is scale * BOX_STD pixels."""
    cams = _cams(1)
    depth = torch.full((1, 16, 24), 2.0, dtype=torch.float64)
    depth[0, :, 12:] = 5.0
    for scale in (1.0, 2.5):
        g = lift_depth(depth, cams, scale_factor=scale)
        R = cams.viewmats[0, :3, :3]
        pc = g.means @ R.T + cams.viewmats[0, :3, 3]
        cc = R @ g.covariances @ R.T
        fx, fy = cams.Ks[0, 0, 0], cams.Ks[0, 1, 1]
        x, y, z = pc.unbind(-1)
        J = torch.zeros(len(z), 2, 3, dtype=torch.float64)
        J[:, 0, 0], J[:, 0, 2] = fx / z, -fx * x / z**2
        J[:, 1, 1], J[:, 1, 2] = fy / z, -fy * y / z**2
        cov2 = J @ cc @ J.transpose(1, 2)
        # exact on the optical axis; off-axis the depth extent adds a little (perspective)
        centre = (g.means - cams.centers[0]).norm(dim=-1).argmin()
        expect = (scale * BOX_STD) ** 2
        torch.testing.assert_close(
            cov2[centre], torch.eye(2, dtype=torch.float64) * expect, rtol=1e-2, atol=1e-3 * expect
        )
        assert ((cov2[:, 0, 0] / expect) - 1).abs().max() < 0.2
        # the footprint grows linearly with depth: camera-x std = scale * BOX_STD * z / fx
        z_all = (g.means - cams.centers[0]) @ R[2]
        std_x = ((g.covariances @ R[0]) * R[0]).sum(-1).sqrt()
        torch.testing.assert_close(std_x, scale * BOX_STD * z_all / fx)
        assert z_all.max() / z_all.min() > 2


def test_lift_depth_options_and_errors():
    cams = _cams()
    depth = torch.ones(2, 16, 24, dtype=torch.float64)
    depth[0, 3, 3] = 0
    opac = torch.rand(2, 16, 24, dtype=torch.float64)
    g = lift_depth(depth, cams, opacity=opac, keep_invalid=True)
    assert g.means.shape == (2, 16 * 24, 3) and g.features.shape == (2, 16 * 24, 0)
    assert g.opacities[0, 3 * 24 + 3] == 0
    torch.testing.assert_close(g.opacities[1], opac[1].reshape(-1))
    assert torch.isfinite(g.means).all() and torch.isfinite(g.covariances).all()
    with pytest.raises(ValueError, match="depth"):
        lift_depth(depth[:1], cams)
    with pytest.raises(ValueError, match="features"):
        lift_depth(depth, cams, torch.zeros(2, 16, 24, 5))
    with pytest.raises(ValueError, match="opacity"):
        lift_depth(depth, cams, opacity=1.5)
