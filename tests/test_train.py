"""Training: losses, config, targets, crash-safe resume, DDP, divergence handling."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from splatdistill.distill.config import TrainConfig
from splatdistill.distill.heads import DINOHead, dino_loss, feature_loss
from splatdistill.errors import UserError

WORKER = str(Path(__file__).with_name("_train_worker.py"))


# ---- losses and head ----------------------------------------------------------------------------


def test_dino_loss_matches_float64_reference():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    got = dino_loss(s, t, mask, student_temp=0.5, teacher_temp=2.0)
    sd, td = s.double().numpy(), t.double().numpy()
    p = np.exp(td / 2.0)
    p /= p.sum(-1, keepdims=True)
    logq = sd / 0.5 - np.log(np.exp(sd / 0.5).sum(-1, keepdims=True))
    ce = -(p * logq).sum(-1)
    assert abs(float(got) - ce[mask.numpy()].mean()) < 1e-6


def test_dino_centering_matches_float64_reference_and_its_update():
    from splatdistill.distill.heads import update_center

    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    center = torch.randn(6, generator=g)
    got = dino_loss(s, t, None, student_temp=0.1, teacher_temp=0.04, center=center)
    sd, td, cd = s.double().numpy(), t.double().numpy(), center.double().numpy()
    z = (td - cd) / 0.04
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    y = sd / 0.1
    logq = y - y.max(-1, keepdims=True) - np.log(np.exp(y - y.max(-1, keepdims=True)).sum(-1, keepdims=True))
    assert abs(float(got) - (-(p * logq).sum(-1)).mean()) < 1e-4
    mask = torch.tensor([True, False, True, True])
    expected = 0.9 * cd + 0.1 * td[mask.numpy()].mean(0)
    update_center(center, t, mask, 0.9)
    np.testing.assert_allclose(center.double().numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["cosine", "l1", "mse"])
def test_feature_losses_match_reference(kind):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(3, 4, 6, generator=g), torch.randn(3, 4, 6, generator=g)
    mask = torch.rand(3, 4, generator=g) > 0.3
    sd, td, m = s.double().numpy(), t.double().numpy(), mask.numpy()
    if kind == "cosine":
        per = 1 - (sd * td).sum(-1) / np.linalg.norm(sd, axis=-1) / np.linalg.norm(td, axis=-1)
    elif kind == "l1":
        per = np.abs(sd - td).mean(-1)
    else:
        per = ((sd - td) ** 2).mean(-1)
    assert abs(float(feature_loss(kind, s, t, mask)) - per[m].mean()) < 1e-6
    assert float(feature_loss(kind, t, t, mask)) < 1e-6


def test_dino_head_shapes_and_fixed_prototype_norms():
    head = DINOHead(16, prototypes=32, hidden=24, bottleneck=8)
    x = torch.randn(3, 10, 16)
    logits = head(x)
    assert logits.shape == (3, 10, 32)
    # weight-normalised prototypes with norm 1 and an L2-normalised bottleneck: |logit| <= 1
    assert logits.abs().max() <= 1.0 + 1e-5
    w = head.last.weight
    assert torch.allclose(w.norm(dim=1), torch.ones(32), atol=1e-5)
    trainable = {n for n, p in head.named_parameters() if p.requires_grad}
    assert "last.parametrizations.weight.original0" not in trainable
    # the reference's trainable gain: the prototype norms learn
    ref = DINOHead(16, prototypes=32, hidden=24, bottleneck=8, trainable_gain=True)
    opt = torch.optim.SGD([p for p in ref.parameters() if p.requires_grad], lr=1.0)
    ref(x).max(-1).values.sum().backward()
    opt.step()
    assert (ref.last.weight.norm(dim=1) - 1).abs().max() > 1e-3


# ---- config ---------------------------------------------------------------------------------------


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1.0e-4\nsteps: 50\nloss: cosine\n")
    cfg = TrainConfig.load(path, ["steps=70", "blend_alpha=1", "deterministic=true"])
    assert (cfg.optim.lr, cfg.optim.steps, cfg.method.loss, cfg.method.splat.blend_alpha, cfg.run.deterministic) == (
        1e-4,
        70,
        "cosine",
        1.0,
        True,
    )
    cfg.save(tmp_path / "saved.yaml")
    assert TrainConfig.load(tmp_path / "saved.yaml") == cfg
    for bad, msg in [
        (["nope=1"], "unknown option"),
        (["steps=x"], "expects int"),
        (["loss=foo"], "loss must be"),
        (["blend_alpha=2"], "blend_alpha"),
        (["steps"], "not key=value"),
    ]:
        with pytest.raises(UserError, match=msg):
            TrainConfig.load(None, bad)
    (tmp_path / "bad.yaml").write_text("lr: [1, 2\n")
    with pytest.raises(UserError, match="bad.yaml: invalid YAML"):
        TrainConfig.load(tmp_path / "bad.yaml")


# ---- teacher targets ------------------------------------------------------------------------------


def test_targets_rendered_into_a_context_camera_reproduce_its_tokens(rooms):
    """Splatting context features into the context's own camera gives back its tokens."""
    from splatdistill.data import load_dataset
    from splatdistill.data.views import Views
    from splatdistill.geometry.cameras import Cameras
    from splatdistill.splat import SplatSettings, depth_lifter, splat_targets

    view = load_dataset(rooms)[0].load_view(0)
    R = view.width
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(1, 16, 5, 5, generator=g)
    segments = torch.from_numpy(view.instance.astype(np.int64))[None]
    cams = Cameras.from_cam_to_world(
        torch.from_numpy(view.K).float()[None], torch.from_numpy(view.cam_to_world).float()[None], R, R
    )
    views = Views(
        torch.from_numpy(view.image).permute(2, 0, 1)[None],
        cams,
        depths=torch.from_numpy(view.depth)[None],
        segments=segments,
        tokens=tokens,
    )
    settings = SplatSettings(blend_alpha=1.0, renderer="torch")
    out = splat_targets(views, views, (5, 5), settings, depth_lifter(settings))
    assert out.coverage.mean() > 0.95
    from splatdistill.splat.upsample import mask_aware_upsample

    expected = torch.nn.functional.interpolate(
        mask_aware_upsample(tokens, segments, (R, R)), size=(5, 5), mode="bilinear"
    )
    cos = torch.nn.functional.cosine_similarity(out.tokens, expected, dim=1)
    assert cos[out.valid].median() > 0.999 and cos[out.valid].min() > 0.85  # depth edges move a few samples
    # the default (reference) downsample samples at the token centres: the tokens themselves come back
    # wherever the upsample reproduces them; the antialiased one low-passes them
    aa = splat_targets(
        views,
        views,
        (5, 5),
        SplatSettings(blend_alpha=1.0, renderer="torch", downsample="antialias"),
        depth_lifter(settings),
    )
    own = torch.nn.functional.cosine_similarity(out.tokens, tokens, dim=1)[out.valid]
    own_aa = torch.nn.functional.cosine_similarity(aa.tokens, tokens, dim=1)[aa.valid]
    assert own.mean() > own_aa.mean() + 0.01
    # with blending, tokens move towards their segment means (and stay finite)
    blended = splat_targets(
        views, views, (5, 5), SplatSettings(blend_alpha=0.5, renderer="torch"), depth_lifter(settings)
    )
    assert torch.isfinite(blended.tokens).all()
    assert (blended.tokens - out.tokens).abs().max() > 1e-3


def test_a_batch_of_views_gives_the_targets_of_each_sample(rooms):
    """splat_targets on (B, V) views equals B calls on each sample's (V) views, exactly; views carrying pixel
    features refuse a resize, and cameras built from poses give those poses back unchanged."""
    import dataclasses

    from splatdistill.data import load_dataset
    from splatdistill.data.sampler import MultiViewDataset, SamplerConfig, collate_views
    from splatdistill.splat import SplatSettings, depth_lifter, splat_targets

    scenes = load_dataset(rooms, split="train")
    ds = MultiViewDataset(scenes, SamplerConfig(num_targets=2), seed=0, size=32)
    batch = collate_views([ds[0], ds[1]])
    g = torch.Generator().manual_seed(0)
    context = dataclasses.replace(batch.context, tokens=torch.randn(2, 2, 8, 4, 4, generator=g))
    settings = SplatSettings(blend_alpha=0.5, renderer="torch")
    both = splat_targets(context, batch.target, (4, 4), settings, depth_lifter(settings))
    assert both.tokens.shape == (2, 2, 8, 4, 4) and both.valid.any()
    for i in range(2):
        one = splat_targets(context[i], batch.target[i], (4, 4), settings, depth_lifter(settings))
        for f in dataclasses.fields(one):
            assert torch.equal(getattr(both, f.name)[i], getattr(one, f.name)), f.name
    with pytest.raises(ValueError, match="cannot be resized"):
        dataclasses.replace(batch.context, features=torch.zeros(2, 2, 8, 32, 32)).at(16)
    poses = np.stack([scenes[int(batch.scene_index[0])].views[int(i)].cam_to_world for i in batch.context.ids[0]])
    assert torch.equal(batch.context[0].at(16).cameras.cam_to_world, torch.from_numpy(poses).float())


# ---- runs: resume, DDP, divergence ----------------------------------------------------------------


def _run(*args: str, env_extra: dict | None = None, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    env.update(env_extra or {})
    cmd = (launcher or [sys.executable]) + [WORKER, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "rank0.pt")["weights"]


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(rooms, tmp_path):
    # two data-loader workers build the batches ahead (the DDP test below runs with none, kill-fuzz with one)
    n, workers = 6, "num_workers=2"
    full = _run(str(rooms), str(tmp_path / "full"), f"steps={n}", "checkpoint_every=2", "--dump", workers)
    assert full.returncode == 0, full.stderr
    crash = _run(str(rooms), str(tmp_path / "crash"), f"steps={n}", "checkpoint_every=2", "--kill-at", "3", workers)
    assert crash.returncode == -9  # really killed, mid-run (step 3 done, last checkpoint at step 2)
    state = torch.load(tmp_path / "crash" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2
    resumed = _run(
        str(rooms), str(tmp_path / "crash"), f"steps={n}", "checkpoint_every=2", "--resume", "--dump", workers
    )
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "crash")
    assert a.keys() == b.keys() and len(a) > 10
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff <= 1e-6
    # the run did train: LoRA B matrices moved away from their zero init
    assert max(float(v.abs().max()) for k, v in a.items() if "lora_B" in k and not k.startswith("teacher.")) > 1e-4
    for name in ("student.safetensors", "teacher.safetensors", "config.yaml"):
        assert (tmp_path / "crash" / name).is_file()
    assert any((tmp_path / "crash" / "tb").iterdir())


@pytest.mark.slow
def test_ddp_two_cpu_ranks_agree_and_shard_the_data(rooms, tmp_path):
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    res = _run(str(rooms), str(out), "steps=3", "batch_size=1", "--dump", launcher=launcher)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert r0["weights"].keys() == r1["weights"].keys()
    for k in r0["weights"]:
        assert torch.equal(r0["weights"][k], r1["weights"][k]), k
    d0, d1 = set(map(tuple, r0["drawn"])), set(map(tuple, r1["drawn"]))
    assert len(d0) == len(d1) == 3 and not (d0 & d1)


def test_nan_loss_stops_with_message_and_keeps_checkpoint(rooms, tmp_path):
    from _train_worker import TINY_RUN
    from splatdistill.distill.trainer import Trainer, TrainingDiverged

    cfg = TrainConfig.load(
        None, [f"data={rooms}", f"out={tmp_path / 'nan'}", "steps=5", "checkpoint_every=1", *TINY_RUN]
    )
    trainer = Trainer(cfg)
    real = trainer.batches

    def poisoned(first, last):
        for step, batch in enumerate(real(first, last), start=first):
            if step == 2:
                batch.target.images = torch.full_like(batch.target.images, float("nan"))
            yield batch

    trainer.batches = poisoned
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 3.*checkpoint"):
        trainer.fit()
    state = torch.load(trainer.checkpoint_path, weights_only=False)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["student"].values())


# ---- several targets and the cross-view consistency term ------------------------------------------


def _two_target_batch(rooms, size: int | tuple[int, int] = 112):
    from splatdistill.data import load_dataset
    from splatdistill.data.sampler import MultiViewDataset, SamplerConfig, collate_views

    scenes = load_dataset(rooms, split="train")
    ds = MultiViewDataset(scenes, SamplerConfig(num_targets=2, target="overlap"), seed=0, size=size)
    return collate_views([ds[0], ds[1]])


def _world_tokens(batch, h: int, w: int) -> torch.Tensor:
    """Tokens that are a function of the world point seen at each token centre: (x, y, z, 3)."""
    depth, K, c2w = batch.target.depths, batch.target.cameras.Ks, batch.target.cameras.cam_to_world
    B, T, H, W = depth.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    u, v = (xs + 0.5) * W / w, (ys + 0.5) * H / h
    d = depth[:, :, v.long(), u.long()]  # (B, T, h, w)
    pix = torch.stack([u, v, torch.ones_like(u)], -1).double()
    cam = torch.einsum("btij,hwj->bthwi", torch.linalg.inv(K.double()), pix) * d[..., None].double()
    world = torch.einsum("btij,bthwj->bthwi", c2w[..., :3, :3].double(), cam) + c2w[:, :, None, None, :3, 3].double()
    return torch.cat([world, torch.full_like(world[..., :1], 3.0)], -1).permute(0, 1, 4, 2, 3).float()


def test_cross_view_consistency_is_zero_for_identical_views_and_low_for_a_3d_consistent_field(rooms):
    from splatdistill.distill.trainer import cross_view_consistency

    batch = _two_target_batch(rooms)
    g = torch.Generator().manual_seed(0)
    # target 1 := target 0 (same camera, same depth): the warp is the identity at token centres
    same = batch.target.map(lambda v: torch.cat([v[:, :1], v[:, :1]], 1))
    tokens = torch.randn(2, 1, 16, 8, 8, generator=g).expand(2, 2, 16, 8, 8).contiguous()
    assert float(cross_view_consistency(tokens, same)) < 1e-5
    assert float(cross_view_consistency(torch.randn(2, 2, 16, 8, 8, generator=g), same)) > 0.5
    # two different views of the rooms: features that are a function of the 3D point agree
    consistent = _world_tokens(batch, 8, 8)
    low = float(cross_view_consistency(consistent, batch.target))
    shuffled = consistent[:, :, :, torch.randperm(8, generator=g)][..., torch.randperm(8, generator=g)]
    high = float(cross_view_consistency(torch.stack([consistent[:, 0], shuffled[:, 1]], 1), batch.target))
    assert low < 0.02 and high > 3 * low
    # rectangular views (the grid's u and v scale differently): still consistent
    wide = _two_target_batch(rooms, size=(56, 84))
    assert wide.target.depths.shape[-2:] == (56, 84)
    assert float(cross_view_consistency(_world_tokens(wide, 4, 6), wide.target)) < 0.02


def test_training_with_two_targets_and_the_consistency_term(rooms, tmp_path):
    from _train_worker import TINY_RUN
    from splatdistill.distill.trainer import Trainer

    cfg = TrainConfig.load(
        None,
        [
            f"data={rooms}",
            f"out={tmp_path / 'two'}",
            "steps=2",
            "num_targets=2",
            "consistency_weight=0.5",
            "val_samples=0",
            *TINY_RUN,
        ],
    )
    trainer = Trainer(cfg)
    batch = trainer.batch_for_step(0)
    assert batch.target.images.shape[1] == 2
    metrics = trainer.train_step(batch)
    assert np.isfinite(metrics["loss"]) and 0.0 < metrics["consistency"] < 2.0
    # the term is in the loss: the same step without it gives a smaller loss
    cfg0 = TrainConfig.load(
        None, [f"data={rooms}", f"out={tmp_path / 'one'}", "steps=2", "num_targets=2", "val_samples=0", *TINY_RUN]
    )
    plain = Trainer(cfg0).train_step(batch)
    assert metrics["loss"] == pytest.approx(plain["loss"] + 0.5 * metrics["consistency"], rel=1e-4)


# ---- no silent no-ops ----------------------------------------------------------------------------


def test_depth_lifter_on_data_without_depth_stops_before_training(rooms, tmp_path, capsys):
    from _train_worker import TINY_RUN
    from splatdistill.cli import main
    from splatdistill.data import load_dataset
    from splatdistill.data.formats.nerfstudio import write_nerfstudio
    from splatdistill.distill.trainer import Trainer

    scene = load_dataset(rooms, split="train")[0]
    write_nerfstudio(scene, tmp_path / "ns", write_depth=False)
    cfg = TrainConfig.load(
        None,
        [
            f"data={tmp_path / 'ns'}",
            f"out={tmp_path / 'run'}",
            "steps=8",
            "split=train",
            "val_samples=0",
            "lifter=depth",
            *TINY_RUN,
        ],
    )
    with pytest.raises(UserError, match="lifter=depth lifts with depth maps, and scene .* has none"):
        Trainer(cfg)
    # the command line: one line naming the dataset and the fix, exit 2, nothing trained
    status = main(
        [
            "train",
            "--data",
            str(tmp_path / "ns"),
            "--out",
            str(tmp_path / "cli"),
            "steps=8",
            "split=train",
            "val_samples=0",
            "lifter=depth",
            *TINY_RUN,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and str(tmp_path / "ns") in err[0] and "lifter=auto" in err[0]
    assert not (tmp_path / "cli" / "checkpoint.pt").exists()


def test_default_lifter_trains_on_data_without_depth(rooms, tmp_path):
    """The default (feed-forward, shipped) lifter needs no depth: every step supervises target tokens."""
    from _train_worker import TINY_RUN
    from splatdistill.data import load_dataset
    from splatdistill.data.formats.nerfstudio import write_nerfstudio
    from splatdistill.distill.trainer import Trainer

    scene = load_dataset(rooms, split="train")[0]
    write_nerfstudio(scene, tmp_path / "ns", write_depth=False)
    cfg = TrainConfig.load(
        None,
        [
            f"data={tmp_path / 'ns'}",
            f"out={tmp_path / 'run'}",
            "steps=4",
            "split=train",
            "val_samples=0",
            "checkpoint_every=4",
            *TINY_RUN,
        ],
    )
    assert cfg.method.lifter == "auto"
    shares = []
    Trainer(cfg).fit(on_step=lambda tr, metrics: shares.append(metrics["supervised_tokens"]))
    assert len(shares) == 4 and min(shares) > 0.3, shares


def test_a_run_whose_targets_cover_nothing_stops_with_its_checkpoint(rooms, tmp_path):
    from _train_worker import TINY_RUN
    from splatdistill.distill.trainer import Trainer, TrainingStalled
    from splatdistill.geometry.lifting import lift_depth

    cfg = TrainConfig.load(
        None,
        [
            f"data={rooms}",
            f"out={tmp_path / 'stall'}",
            "steps=40",
            "checkpoint_every=2",
            "stall_steps=5",
            "val_samples=0",
            *TINY_RUN,
        ],
    )
    trainer = Trainer(cfg)
    # a lifter whose Gaussians are all invalid: no target token is ever supervised
    trainer.targets.lifter = lambda views: lift_depth(torch.zeros_like(views.depths), views.cameras, views.features)
    with pytest.raises(
        TrainingStalled,
        match=r"under 5% of the target tokens were supervised for 5 steps.*"
        r"no depth for the lifter, wrong poses.*checkpoint.pt\) is kept",
    ):
        trainer.fit()
    assert trainer.step == 5 and TrainingStalled.exit_code == 3
    assert torch.load(trainer.checkpoint_path, weights_only=False)["step"] == 4


def test_lifter_refinement_changes_the_lifter_and_survives_resume(rooms, tmp_path):
    """lifter_refine_every: the learned lifter takes photometric steps on the batches' context views;
    its state is in the checkpoint and the refined lifter is exported as a predictor folder."""
    from _train_worker import TINY_RUN
    from splatdistill.distill.trainer import Trainer
    from splatdistill.lifters.predictor import load_predictor
    from splatdistill.lifters.pretrained import DEFAULT_PREDICTOR, pretrained_folder

    cfg = TrainConfig.load(
        None,
        [
            f"data={rooms}",
            f"out={tmp_path / 'run'}",
            "steps=4",
            "split=train",
            "val_samples=0",
            "checkpoint_every=2",
            "lifter=auto",
            "lifter_refine_every=2",
            "lifter_refine_lr=1e-3",
            *TINY_RUN,
        ],
    )
    metrics = []
    trainer = Trainer(cfg)
    trainer.fit(on_step=lambda tr, m: metrics.append(m))
    assert [("lifter_photometric" in m) for m in metrics] == [True, False, True, False]
    assert trainer.refiner.steps == 2
    shipped = load_predictor(pretrained_folder(DEFAULT_PREDICTOR)).state_dict()
    refined = load_predictor(tmp_path / "run" / "lifter").state_dict()
    assert any(not torch.equal(shipped[k], refined[k]) for k in shipped)
    for k, v in trainer.refiner.model.state_dict().items():
        assert torch.equal(refined[k], v.cpu())
    resumed = Trainer(cfg, resume=True)
    assert resumed.refiner.steps == 2
    for k, v in resumed.refiner.model.state_dict().items():
        assert torch.equal(refined[k], v.cpu())
    with pytest.raises(UserError, match="refines a learned predictor"):
        Trainer(
            TrainConfig.load(
                None,
                [
                    f"data={rooms}",
                    f"out={tmp_path / 'x'}",
                    "split=train",
                    "val_samples=0",
                    "lifter=depth",
                    "lifter_refine_every=2",
                    *TINY_RUN,
                ],
            )
        )


# ---- rectangular images ---------------------------------------------------------------------------


def _three_by_two(rooms, out: Path) -> Path:
    """The first training room cropped to 3:2 (W:H), written as a nerfstudio folder with depth."""
    from splatdistill.data import load_dataset
    from splatdistill.data.formats.nerfstudio import write_nerfstudio
    from splatdistill.data.scene import Scene, ViewRecord
    from splatdistill.data.views import crop_to_aspect

    scene = load_dataset(rooms, split="train")[0]
    recs = []
    for rec in scene.views:
        v = crop_to_aspect(rec.load(), 1.5)
        recs.append(ViewRecord(rec.name, v.K, rec.cam_to_world, v.width, v.height, loader=lambda v=v: v))
    write_nerfstudio(Scene(scene.name, recs, "train"), out)
    return out


def test_rectangular_views_train_at_hxw_without_squashing(rooms, tmp_path):
    from _train_worker import TINY_RUN
    from splatdistill.data import load_dataset
    from splatdistill.distill.trainer import StepTimes, Trainer

    data = _three_by_two(rooms, tmp_path / "wide")
    W0 = load_dataset(rooms, split="train")[0].views[0].width
    H0 = round(W0 / 1.5)
    view = load_dataset(data)[0].load_view(0)
    assert (view.height, view.width) == (H0, W0)
    base = [f"data={data}", "split=train", "val_samples=0", "steps=2", "checkpoint_every=2", *TINY_RUN]
    cfg = TrainConfig.load(None, [*base, f"out={tmp_path / 'run'}", "image_size=64x96", "render_size=32x48"])
    trainer = Trainer(cfg)
    batch = trainer.batch_for_step(0)
    assert batch.context.images.shape[-2:] == (64, 96) and batch.target.images.shape[-2:] == (64, 96)
    K = batch.context.cameras.Ks[0, 0].double()
    rec = load_dataset(data)[0].views[int(batch.context.ids[0, 0])]
    np.testing.assert_allclose(K[0].numpy(), rec.K[0] * 96 / W0, rtol=1e-5)  # scaled, not cropped: 3:2 already
    np.testing.assert_allclose(K[1].numpy(), rec.K[1] * 64 / H0, rtol=1e-5)
    tokens, mask, coverage = trainer.teacher_targets(batch.to(trainer.device), StepTimes())
    assert tokens.shape[-2:] == (4, 6) and mask.shape == (1, 24) and coverage.shape == (1, 1, 4, 6)  # 16 px patches
    assert mask.float().mean() > 0.3
    s_tokens, _ = trainer.student(batch.target.images.flatten(0, 1))
    assert s_tokens.shape[-2:] == (4, 6)
    result = trainer.fit()
    assert result["steps"] == 2 and all(np.isfinite(h["loss"]) for h in result["history"])
    # an int is the short side: the views keep 3:2; a square HxW crops (K's principal point moves), never squashes
    short = Trainer(TrainConfig.load(None, [*base, f"out={tmp_path / 'r2'}", "image_size=64"])).batch_for_step(0)
    assert short.context.images.shape[-2:] == (64, round(64 * W0 / H0))
    square = Trainer(TrainConfig.load(None, [*base, f"out={tmp_path / 'r3'}", "image_size=64x64"])).batch_for_step(0)
    Ks = square.context.cameras.Ks[0, 0].double().numpy()
    assert square.context.images.shape[-2:] == (64, 64)
    assert abs(Ks[0, 0] / Ks[1, 1] - rec.K[0, 0] / rec.K[1, 1]) < 0.01
    np.testing.assert_allclose(Ks[0, 2], (rec.K[0, 2] - (W0 - H0) // 2) * 64 / H0, rtol=1e-5)


def test_ema_horizon_moves_the_teacher_and_momentum_one_freezes_it(rooms, tmp_path):
    """4 steps with an update every 2: the default horizon (1/30 of the run) is shorter than one update, so
    the teacher is the student after the last update; ema_momentum=1 keeps the original backbone."""
    from _train_worker import TINY_RUN
    from splatdistill.distill.trainer import Trainer

    base = [f"data={rooms}", "steps=4", "val_samples=0", "checkpoint_every=4", *TINY_RUN]
    moving = Trainer(TrainConfig.load(None, [*base, f"out={tmp_path / 'a'}"]))
    assert moving.teacher.momentum == 0.0
    moving.fit()
    frozen = Trainer(TrainConfig.load(None, [*base, f"out={tmp_path / 'b'}", "ema_momentum=1"]))
    start = {n: p.detach().clone() for n, p in frozen.teacher.module.named_parameters()}
    frozen.fit()
    trained = [n for n, p in moving.student.named_parameters() if p.requires_grad]
    s_params, t_params = dict(moving.student.named_parameters()), dict(moving.teacher.module.named_parameters())
    assert all(torch.equal(s_params[n], t_params[n]) for n in trained)
    f_student = dict(frozen.student.named_parameters())
    assert any(not torch.equal(f_student[n], start[n]) for n in trained)  # the student learned
    assert all(torch.equal(p, start[n]) for n, p in frozen.teacher.module.named_parameters())
