"""The FiT3D-style baseline: per-scene feature fields and the trainer's method=fit3d branch."""

from __future__ import annotations

import pytest
import torch

from splatdistill.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: no thread contention

TINY_RUN = [
    "backbone=random:vit_tiny_patch16_224",
    "image_size=64",
    "render_size=32",
    "prototypes=64",
    "head_hidden=64",
    "head_bottleneck=32",
    "ema_every=2",
    "lr=1e-3",
    "progress=false",
    "seed=7",
]


@pytest.fixture(scope="module")
def scene_targets(rooms, dinov2):
    from splatdistill.baselines.fit3d import Fit3DConfig, teacher_targets
    from splatdistill.data import load_dataset

    cfg = Fit3DConfig(render_size=40, image_size=112, max_views=5, lift_views=3, iterations=40, views_per_iter=2)
    scene = [s for s in load_dataset(rooms) if s.split == "train"][0]
    return cfg, teacher_targets(scene, dinov2, cfg)[0]


def test_strided_cameras_sample_block_centres():
    from splatdistill.baselines.fit3d import strided_cameras
    from splatdistill.geometry.cameras import Cameras

    K = torch.tensor([[[50.0, 0.0, 31.0], [0.0, 55.0, 33.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    cams = Cameras(K, torch.eye(4, dtype=torch.float64)[None], 64, 64)
    for s in (2, 4):
        small = strided_cameras(cams, s)
        assert (small.width, small.height) == (64 // s, 64 // s)
        rays_small = small.camera_rays()[0]  # (h, w, 3)
        rays_full = cams.camera_rays()[0][s // 2 :: s, s // 2 :: s]
        assert torch.allclose(rays_small, rays_full, atol=1e-12)


def test_fitted_field_reproduces_teacher_features_better_than_at_init(scene_targets):
    from splatdistill.baselines.fit3d import Fit3DConfig, field_error, fit_field

    cfg, targets = scene_targets
    for init, factor in (("random", 0.8), ("pca", 1.0)):
        c = Fit3DConfig(**{**cfg.__dict__, "init": init})
        start, _ = fit_field(targets, Fit3DConfig(**{**c.__dict__, "iterations": 0}))
        fitted, stats = fit_field(targets, c)
        e0, e1 = field_error(start, targets), field_error(fitted, targets)
        assert e1 < factor * e0, (init, e0, e1)
        assert stats["gaussians"] == 3 * 20 * 20 and stats["fit_seconds"] > 0


def test_field_is_exactly_a_set_of_feature_gaussians(scene_targets):
    """The decoder is linear, so decoding a coverage-normalised render equals rendering decoded features."""
    from splatdistill.baselines.fit3d import fit_field
    from splatdistill.render import render_gaussians

    cfg, targets = scene_targets
    field, _ = fit_field(targets, cfg.__class__(**{**cfg.__dict__, "iterations": 3}))
    cam = targets.cameras[1:2]
    with torch.no_grad():
        dec, alpha = field.render(cam, "torch")
        f, a = render_gaussians(field.as_gaussians(), cam, backend="torch")
    m = alpha > 0.5
    assert torch.allclose(a, alpha)
    assert torch.allclose((f / a.clamp_min(1e-6)[..., None])[m], dec[m], atol=1e-3)


def test_trainer_fit3d_branch_trains_and_caches_fields(rooms, tmp_path, monkeypatch):
    from splatdistill.baselines import fit3d
    from splatdistill.distill.config import TrainConfig
    from splatdistill.distill.trainer import Trainer

    args = [
        f"data={rooms}",
        f"out={tmp_path / 'run'}",
        "steps=2",
        "method=fit3d",
        "loss=l1",
        "fit3d.iterations=8",
        "fit3d.views=5",
        "fit3d.lift_views=2",
        *TINY_RUN,
    ]
    trainer = Trainer(TrainConfig.load(None, args))
    result = trainer.fit()
    hist = result["history"]
    assert len(hist) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)
    assert hist[0]["supervised_tokens"] > 0.3 and hist[0]["coverage"] > 0.5
    cached = list((tmp_path / "run" / "fit3d").glob("*.pt"))
    assert len(cached) == len(trainer.dataset.scenes) == 1
    # a new run with the same settings loads the cached field instead of fitting again
    monkeypatch.setattr(fit3d, "fit_scene", lambda *a, **k: pytest.fail("refitted a cached field"))
    again = Trainer(
        TrainConfig.load(None, [*args, f"out={tmp_path / 'run2'}", f"fit3d.cache={tmp_path / 'run' / 'fit3d'}"])
    )
    tgt, mask, cov = again.targets.fields.targets(again.batch_for_step(0), (4, 4), 32)
    assert tgt.shape == (1, 192, 4, 4) and mask.shape == (1, 16) and torch.isfinite(tgt).all()
    for bad, msg in ([["method=fit3d"], "pass loss=l1"], [["method=nerf"], "method must be snd or fit3d"]):
        with pytest.raises(UserError, match=msg):
            TrainConfig.load(None, bad)
