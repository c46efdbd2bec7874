"""The gsplat (CUDA) backend against the torch backend and the float64 brute force.

Skipped without CUDA: gsplat's rasteriser has no CPU path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splat_oracle import brute_force, random_scene
from splatdistill.render import render_features
from splatdistill.render.gsplat_backend import gsplat_available

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(not gsplat_available(), reason="needs gsplat"),
]

W, H = 32, 24


def _cuda(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float32, device="cuda")


@pytest.mark.parametrize("seed,n,C", [(0, 2000, 3), (1, 2000, 384), (2, 1200, 385), (3, 300, 1), (4, 2000, 64)])
def test_gsplat_matches_torch_backend_and_brute_force(seed, n, C):
    m, c, o, f, vm, K = random_scene(seed, n, C)
    args = [_cuda(x) for x in (m, c, o, f, vm, K)]
    img_g, alpha_g = render_features(*args, W, H, backend="gsplat")
    img_t, alpha_t = render_features(*args, W, H, backend="torch")  # torch backend on the GPU
    assert img_g.shape == img_t.shape == (H, W, C)
    ref, ref_a, _ = brute_force(m, c, o, f, vm, K, W, H)
    for img, alpha in ((img_g, alpha_g), (img_t, alpha_t)):
        err = np.abs(img.double().cpu().numpy() - ref).max(-1)
        err_a = np.abs(alpha.double().cpu().numpy() - ref_a)
        assert ((err <= 1e-4) & (err_a <= 1e-4)).mean() >= 0.999
    close = ((img_g - img_t).abs().amax(-1) <= 1e-4) & ((alpha_g - alpha_t).abs() <= 1e-4)
    assert close.float().mean() >= 0.999


def test_auto_picks_gsplat_on_cuda_and_batches():
    m, c, o, f, vm, K = random_scene(5, 500, 8)
    vms = np.stack([vm, vm])
    vms[1, :3, 3] += 0.1
    args = [_cuda(x) for x in (m, c, o, f)] + [_cuda(vms), _cuda(np.stack([K, K]))]
    a = render_features(*args, W, H)  # auto
    b = render_features(*args, W, H, backend="gsplat")
    torch.testing.assert_close(a[0], b[0])
    t = render_features(*args, W, H, backend="torch")
    assert a[0].shape == (2, H, W, 8)
    assert ((a[0] - t[0]).abs().amax(-1) <= 1e-4).float().mean() >= 0.999
    # the CPU torch backend agrees with the CUDA one
    cpu = render_features(*(x.cpu() for x in args), W, H, backend="torch")
    torch.testing.assert_close(cpu[0], t[0].cpu(), atol=1e-5, rtol=0)
