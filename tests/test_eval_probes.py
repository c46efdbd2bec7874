"""The probes learn what the features linearly encode, fail on noise, and are deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from splatdistill.eval import metrics
from splatdistill.eval.probes import (
    ProbeConfig,
    Standardiser,
    bin_centres,
    normal_loss,
    silog_loss,
    train_depth_probe,
    train_normal_probe,
    train_seg_probe,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: no thread contention

GRID = 8  # token grid


LOSS = 32  # loss grid
CH = 24


def _planes(n: int, size: int, seed: int) -> np.ndarray:
    """Depth maps of random tilted planes in [1, 6] m, sampled at the centres of a size x size grid."""
    rng = np.random.default_rng(seed)
    t = (np.arange(size) + 0.5) / size
    x, y = np.meshgrid(t, t)
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(1.5, 4.5), rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5)
        out.append(np.clip(a + b * (x - 0.5) + c * (y - 0.5), 1.0, 6.0))
    return np.stack(out).astype(np.float32)


def _encode(values: np.ndarray, seed: int, noise: float = 0.01) -> torch.Tensor:
    """Features that are a fixed random linear map of per-token values (N, k, h, w) plus a little noise."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(CH, values.shape[1]))
    f = np.einsum("ck,nkhw->nchw", A, values) + rng.normal(scale=noise, size=(values.shape[0], CH) + values.shape[2:])
    return torch.from_numpy(f.astype(np.float32))


def _noise(n: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, CH, GRID, GRID)).astype(np.float32))


# Fewer bins than the protocol's 256 keep the test fast; the code path is the same.
CFG = ProbeConfig(steps=150, batch_size=8, depth_lr=1e-2, depth_bins=64, progress=False)


def _depth_abs_rel(train_feats, eval_feats, gt_train, gt_eval, cfg=CFG) -> float:
    std = Standardiser(train_feats)
    probe = train_depth_probe(std(train_feats), torch.from_numpy(gt_train), cfg)
    pred = probe.predict(std(eval_feats), (LOSS, LOSS)).numpy()
    return metrics.depth_metrics(pred, gt_eval)["abs_rel"]


def test_depth_probe_learns_linear_depth_and_fails_on_noise():
    tok_tr, tok_ev = _planes(48, GRID, 0), _planes(16, GRID, 1)
    gt_tr, gt_ev = _planes(48, LOSS, 0), _planes(16, LOSS, 1)  # the same planes on the loss grid
    good = _depth_abs_rel(_encode(tok_tr[:, None], 5), _encode(tok_ev[:, None], 5), gt_tr, gt_ev)
    bad = _depth_abs_rel(_noise(48, 2), _noise(16, 3), gt_tr, gt_ev)
    assert good < 0.05, good
    assert bad > 0.15, bad
    assert bad > 4 * good


def test_silog_loss_is_zero_for_perfect_and_scale_tolerant():
    gt = torch.rand(2, 5, 5) + 1
    valid = torch.ones_like(gt, dtype=torch.bool)
    assert silog_loss(gt, gt, valid, 0.85).item() == pytest.approx(0, abs=1e-3)
    # lam = 1 makes a global scale error free; lam = 0.85 keeps a small penalty for it
    assert silog_loss(2 * gt, gt, valid, 1.0).item() == pytest.approx(0, abs=1e-3)
    assert silog_loss(2 * gt, gt, valid, 0.85).item() == pytest.approx(np.sqrt(0.15) * np.log(2), rel=1e-3)


def test_bin_centres_are_uniform():
    c = bin_centres(ProbeConfig(depth_bins=4, min_depth=0.0, max_depth=8.0))
    assert c.tolist() == [1.0, 3.0, 5.0, 7.0]


def _normal_maps(n: int, size: int, seed: int) -> np.ndarray:
    """One random camera-facing unit normal per image, constant over it: (n, 3, size, size)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3))
    v[:, 2] = -np.abs(v[:, 2]) - 0.5
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.broadcast_to(v[:, :, None, None], (n, 3, size, size)).astype(np.float32).copy()


def test_normal_probe_learns_and_fails_on_noise():
    cfg = ProbeConfig(steps=300, batch_size=8, normals_lr=1e-2, progress=False)
    n_tr, n_ev = _normal_maps(48, GRID, 0), _normal_maps(16, GRID, 1)
    g_tr, g_ev = _normal_maps(48, LOSS, 0), _normal_maps(16, LOSS, 1)

    def mean_err(ftr, fev):
        std = Standardiser(ftr)
        probe = train_normal_probe(std(ftr), torch.from_numpy(g_tr), cfg)
        pred, kappa = probe.predict(std(fev), (LOSS, LOSS))
        assert (kappa > 0).all()
        return metrics.normal_metrics(pred.permute(0, 2, 3, 1).numpy(), g_ev.transpose(0, 2, 3, 1))["mean_deg"]

    good = mean_err(_encode(n_tr, 7), _encode(n_ev, 7))
    bad = mean_err(_noise(48, 4), _noise(16, 5))
    assert good < 3.0, good
    assert bad > 25.0, bad


def test_normal_loss_prefers_the_right_normal():
    gt = F.normalize(torch.tensor([0.2, -0.3, -1.0]), dim=0).view(1, 3, 1, 1)
    valid = torch.ones(1, 1, 1, dtype=torch.bool)
    right = torch.cat([gt * 2, torch.full((1, 1, 1, 1), 3.0)], 1)
    wrong = torch.cat([-gt, torch.full((1, 1, 1, 1), 3.0)], 1)
    assert normal_loss(right, gt, valid) < normal_loss(wrong, gt, valid)
    # kappa is pushed up where the normal is right and down where it is wrong
    for pred, sign in ((gt, -1), (-gt, 1)):
        k = torch.zeros(1, 1, 1, 1, requires_grad=True)
        normal_loss(torch.cat([pred, k], 1), gt, valid).backward()
        assert torch.sign(k.grad).item() == sign


def _label_maps(n: int, seed: int, classes: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=(n, GRID, GRID))


def test_seg_probe_learns_and_fails_on_noise():
    cfg = ProbeConfig(steps=150, batch_size=8, seg_lr=1e-2, progress=False)
    l_tr, l_ev = _label_maps(48, 0), _label_maps(16, 1)
    # Ground truth on the loss grid: each token's label fills its 4x4 block; some pixels are ignored.
    up = lambda lab: lab.repeat(LOSS // GRID, axis=1).repeat(LOSS // GRID, axis=2)  # noqa: E731
    g_tr, g_ev = up(l_tr), up(l_ev)
    g_tr[:, :2] = -1
    onehot = lambda lab: np.eye(4)[lab].transpose(0, 3, 1, 2)  # noqa: E731

    def miou(ftr, fev):
        probe = train_seg_probe(Standardiser(ftr)(ftr), torch.from_numpy(g_tr).long(), 4, cfg)
        pred = probe.predict(Standardiser(ftr)(fev), (LOSS, LOSS)).numpy()
        return metrics.segmentation_metrics(metrics.confusion_matrix(pred, g_ev, 4))["miou"]

    good = miou(_encode(onehot(l_tr), 9), _encode(onehot(l_ev), 9))
    bad = miou(_noise(48, 6), _noise(16, 7))
    assert good > 0.7, good
    assert bad < 0.3, bad


def test_probes_are_deterministic():
    feats = _encode(_planes(24, GRID, 0)[:, None], 5)
    gt = torch.from_numpy(_planes(24, LOSS, 0))
    cfg = ProbeConfig(steps=30, batch_size=8, depth_bins=64, progress=False)
    x = Standardiser(feats)(feats)
    a = train_depth_probe(x, gt, cfg)
    b = train_depth_probe(x, gt, cfg)
    assert a.losses == b.losses
    assert torch.equal(a.predict(x, (LOSS, LOSS)), b.predict(x, (LOSS, LOSS)))
    c = train_depth_probe(x, gt, ProbeConfig(steps=30, batch_size=8, depth_bins=64, progress=False, seed=1))
    assert c.losses != a.losses
    # The probes do not disturb the caller's global random state.
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_depth_probe(x, gt, cfg)
    assert torch.equal(torch.rand(3), expected)


def test_depth_probe_uses_cls_token():
    # Depth is a per-image constant carried only by the CLS token; patch tokens are noise.
    rng = np.random.default_rng(0)
    d_tr, d_ev = rng.uniform(1, 6, 48), rng.uniform(1, 6, 16)
    cls_tr = torch.from_numpy((d_tr[:, None] * np.ones((1, 4))).astype(np.float32))
    cls_ev = torch.from_numpy((d_ev[:, None] * np.ones((1, 4))).astype(np.float32))
    gt_tr = torch.from_numpy(np.broadcast_to(d_tr[:, None, None], (48, LOSS, LOSS)).astype(np.float32).copy())
    std = Standardiser(_noise(48, 0), cls_tr)
    with_cls = ProbeConfig(**{**vars(CFG), "depth_use_cls": True})
    probe = train_depth_probe(std(_noise(48, 0), cls_tr), gt_tr, with_cls)
    pred = probe.predict(std(_noise(16, 1), cls_ev), (LOSS, LOSS)).numpy()
    gt_ev = np.broadcast_to(d_ev[:, None, None], pred.shape)
    assert metrics.depth_metrics(pred, gt_ev)["abs_rel"] < 0.05
    # by default the CLS token is not used, and then the per-image depth cannot be recovered
    probe = train_depth_probe(std(_noise(48, 0), cls_tr), gt_tr, CFG)
    pred = probe.predict(std(_noise(16, 1), cls_ev), (LOSS, LOSS)).numpy()
    assert metrics.depth_metrics(pred, gt_ev)["abs_rel"] > 0.2
