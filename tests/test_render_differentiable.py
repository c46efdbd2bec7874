"""The geometry-differentiable render: same values as the feature renderer and the float64 brute force,
gradients that match finite differences, and a photometric fit that moves Gaussians where they belong."""

from __future__ import annotations

import numpy as np
import torch

from splat_oracle import brute_force, random_scene
from splatdistill.geometry import intrinsics, quat_scale_to_covariance
from splatdistill.render import render_features
from splatdistill.render.differentiable import render_differentiable

W, H = 32, 24


def _t(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def test_values_match_the_feature_renderer_and_the_brute_force():
    for seed in range(3):
        m, c, o, f, vm, K = random_scene(seed, 800, 3)
        args = [_t(x) for x in (m, c, o, f, vm, K)]
        img, alpha = render_differentiable(*args, W, H)
        ref_img, ref_alpha = render_features(*args, W, H, backend="torch")
        torch.testing.assert_close(img, ref_img, atol=1e-9, rtol=0)
        torch.testing.assert_close(alpha, ref_alpha, atol=1e-9, rtol=0)
        bf_img, bf_alpha, _ = brute_force(m, c, o, f, vm, K, W, H)
        assert (np.abs(img.numpy() - bf_img).max(-1) <= 1e-6).mean() >= 0.999
        assert np.abs(alpha.numpy() - bf_alpha).max() <= 1e-6


def _small_scene(seed: int = 0, n: int = 12):
    """A few well-separated, fairly opaque Gaussians in front of a camera: no pair sits on a threshold."""
    g = torch.Generator().manual_seed(seed)
    K = intrinsics(14.0, 14.0, 8.0, 6.0, dtype=torch.float64)
    means = torch.stack(
        [
            torch.rand(n, generator=g) * 1.2 - 0.6,
            torch.rand(n, generator=g) * 0.9 - 0.45,
            2.0 + torch.rand(n, generator=g) * 2.0,
        ],
        -1,
    ).double()
    quats = torch.randn(n, 4, generator=g).double()
    scales = (0.05 + 0.1 * torch.rand(n, 3, generator=g)).double()
    opac = (0.3 + 0.6 * torch.rand(n, generator=g)).double()
    colors = torch.rand(n, 3, generator=g).double()
    return means, quats, scales, opac, colors, torch.eye(4, dtype=torch.float64), K


def test_gradients_match_finite_differences():
    means, quats, scales, opac, colors, vm, K = _small_scene()
    weights = torch.rand(12, 16, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss(means, scales, opac, colors):
        cov = quat_scale_to_covariance(quats, scales)
        img, alpha = render_differentiable(means, cov, opac, colors, vm, K, 16, 12)
        return (img * weights).sum() + alpha.sum()

    inputs = [
        means.clone().requires_grad_(True),
        scales.clone().requires_grad_(True),
        opac.clone().requires_grad_(True),
        colors.clone().requires_grad_(True),
    ]
    value = loss(*inputs)
    grads = torch.autograd.grad(value, inputs)
    eps = 1e-6
    for k, (x, gx) in enumerate(zip(inputs, grads)):
        flat = x.detach().reshape(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 12)):  # a spread of coordinates of each input
            plus, minus = [t.detach().clone() for t in inputs], [t.detach().clone() for t in inputs]
            plus[k].reshape(-1)[i] += eps
            minus[k].reshape(-1)[i] -= eps
            fd = (loss(*plus) - loss(*minus)) / (2 * eps)
            assert abs(float(fd) - float(gx.reshape(-1)[i])) <= 1e-5 * max(1.0, abs(float(fd))), (k, i)
    assert all(float(g.abs().sum()) > 0 for g in grads)


def test_a_photometric_fit_recovers_a_displaced_gaussian():
    """Render a target, displace one Gaussian, and let Adam on the image L1 bring it back."""
    means, quats, scales, opac, colors, vm, K = _small_scene(seed=2, n=5)
    cov = quat_scale_to_covariance(quats, scales)
    with torch.no_grad():
        target, _ = render_differentiable(means, cov, opac, colors, vm, K, 16, 12)
    start = means.clone()
    start[0, :2] += torch.tensor([0.08, -0.06], dtype=torch.float64)
    moved = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([moved], lr=0.005)
    losses = []
    for _ in range(150):
        img, _ = render_differentiable(moved, cov, opac, colors, vm, K, 16, 12)
        loss = (img - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.2 * losses[0]
    err_before = float((start[0] - means[0]).norm())
    err_after = float((moved.detach()[0] - means[0]).norm())
    assert err_after < 0.3 * err_before
