"""A student of another architecture than the teacher (student=SPEC), and the 2D baseline (targets=2d)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from splatdistill.backbones import load_backbone
from splatdistill.backbones.projected import ProjectedBackbone
from splatdistill.distill.config import TrainConfig
from splatdistill.distill.trainer import Trainer
from splatdistill.errors import UserError

TEACHER = "random:vit_tiny_patch16_224"  # patch 16, 192 channels
TINY = [
    f"backbone={TEACHER}",
    "image_size=64",
    "render_size=32",
    "prototypes=64",
    "head_hidden=64",
    "head_bottleneck=32",
    "lr=1e-3",
    "progress=false",
    "val_samples=0",
    "deterministic=true",
    "seed=3",
]


@pytest.mark.parametrize("inner_spec", ["mobilenetv2", "random:vit_small_patch14_dinov2"])
@pytest.mark.parametrize("size", [(224, 224), (70, 98), (64, 80)])
def test_projection_gives_the_teachers_grid_and_channels(inner_spec, size):
    teacher = load_backbone("random:vit_base_patch16_224")  # patch 16, 768 channels
    inner = load_backbone(inner_spec)
    student = ProjectedBackbone(inner, inner_spec, teacher.embed_dim, teacher.patch_size, teacher.resize_mode).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out, t = student.patch_features(x), teacher.patch_features(x)
        base = inner.patch_features(x).double()
    assert out.shape == t.shape  # (2, 768, h, w) on the teacher's token grid
    # by value: the 1x1 projection of the inner features (float64), resampled to the teacher's grid
    w, b = student.proj.weight.double()[:, :, 0, 0], student.proj.bias.double()
    expected = torch.einsum("oc,nchw->nohw", w, base) + b.view(1, -1, 1, 1)
    if expected.shape[-2:] != t.shape[-2:]:
        expected = F.interpolate(expected, size=t.shape[-2:], mode="bilinear", align_corners=False)
    assert torch.allclose(out.double(), expected, atol=1e-4, rtol=1e-4)


def _trainer(rooms, out, *extra) -> Trainer:
    return Trainer(TrainConfig.load(None, [f"data={rooms}", f"out={out}", *TINY, *extra]))


def test_a_mobilenet_student_trains_against_a_fixed_teacher_and_reloads_from_its_file(rooms, tmp_path):
    tr = _trainer(rooms, tmp_path / "run", "student=mobilenetv2", "steps=3", "checkpoint_every=3")
    teacher_before = {k: v.clone() for k, v in tr.teacher.module.state_dict().items()}
    student_before = {k: v.clone() for k, v in tr.student.backbone.state_dict().items()}
    result = tr.fit()
    for k, v in tr.teacher.module.state_dict().items():  # the teacher stayed the original backbone + head
        assert torch.equal(v, teacher_before[k]), k
    moved = [
        k
        for k, v in tr.student.backbone.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, student_before[k])
    ]
    assert any(k.startswith("proj.") for k in moved) and any(k.startswith("inner.features") for k in moved)
    reloaded = load_backbone(result["student"])
    assert isinstance(reloaded, ProjectedBackbone) and reloaded.inner_spec == "mobilenetv2"
    x = torch.rand(2, 3, 64, 64)
    tr.student.eval()
    with torch.no_grad():
        assert torch.equal(reloaded.patch_features(x), tr.student.backbone.patch_features(x))
    # resumable: a run of the other kind on the same folder is refused by name
    with pytest.raises(UserError, match="student="):
        Trainer(TrainConfig.load(None, [f"data={rooms}", f"out={tmp_path / 'run'}", *TINY, "steps=4"]), resume=True)


def test_the_2d_baseline_and_snd_share_everything_but_the_targets(rooms, tmp_path):
    snd = _trainer(rooms, tmp_path / "snd", "student=mobilenetv2", "steps=2")
    two_d = _trainer(rooms, tmp_path / "2d", "student=mobilenetv2", "steps=2", "targets=2d")
    for a, b in ((snd.student, two_d.student), (snd.teacher.module, two_d.teacher.module)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    batch = snd.batch_for_step(0)
    b2 = two_d.batch_for_step(0)
    assert torch.equal(batch.target.images, b2.target.images)  # the same samples
    from splatdistill.distill.parts import StepTimes

    t_snd, m_snd, _ = snd.teacher_targets(batch, StepTimes())
    t_2d, m_2d, _ = two_d.teacher_targets(b2, StepTimes())
    teacher = load_backbone(TEACHER)  # independent: the original backbone on the target views
    with torch.no_grad():
        own = teacher.patch_features(batch.target.images.flatten(0, 1))
    assert torch.allclose(t_2d, own, atol=1e-5) and bool(m_2d.all())
    assert t_snd.shape == t_2d.shape and not torch.allclose(t_snd, t_2d, atol=1e-3)  # splatted from the context
    # the same loss of the same student on the same targets
    with torch.no_grad():
        l1, _, _ = snd.student_loss(snd.student, batch, t_2d, m_2d)
        l2, _, _ = two_d.student_loss(two_d.student, b2, t_2d, m_2d)
    assert float(l1) == float(l2)


def test_splat_plus_2d_keeps_the_splatted_tokens_and_fills_the_rest_with_2d(rooms, tmp_path, monkeypatch):
    import dataclasses

    import splatdistill.distill.targets as targets_module
    from splatdistill.distill.parts import StepTimes

    snd = _trainer(rooms, tmp_path / "snd", "student=mobilenetv2", "steps=2")
    mixed = _trainer(rooms, tmp_path / "mix", "student=mobilenetv2", "steps=2", "targets=splat+2d")
    # The tiny views are covered everywhere; leave every other token unsupervised so both branches are checked.
    real = targets_module.splat_targets

    def half_covered(*args, **kwargs):
        out = real(*args, **kwargs)
        valid = out.valid.clone()
        valid.view(-1)[::2] = False
        return dataclasses.replace(out, valid=valid)

    monkeypatch.setattr(targets_module, "splat_targets", half_covered)
    batch, b2 = snd.batch_for_step(0), mixed.batch_for_step(0)
    t_snd, m_snd, cov = snd.teacher_targets(batch, StepTimes())
    t_mix, m_mix, cov_mix = mixed.teacher_targets(b2, StepTimes())
    with torch.no_grad():
        own = load_backbone(TEACHER).patch_features(batch.target.images.flatten(0, 1))
    assert bool(m_mix.all()) and torch.equal(cov, cov_mix)
    assert 0 < int(m_snd.sum()) < m_snd.numel()
    covered = m_snd.view(m_snd.shape[0], 1, *t_snd.shape[-2:]).expand_as(t_snd)
    assert torch.allclose(t_mix[covered], t_snd[covered], atol=1e-6)
    assert torch.allclose(t_mix[~covered], own[~covered], atol=1e-5)


def test_a_student_spec_that_cannot_be_built_is_named(rooms, tmp_path):
    with pytest.raises(UserError, match="unknown backbone 'nope'"):
        _trainer(rooms, tmp_path / "r", "student=nope", "steps=1")
    with pytest.raises(UserError, match=r"targets must be splat, 2d or splat\+2d"):
        _trainer(rooms, tmp_path / "r", "targets=3d", "steps=1")


def test_bench_features_measures_each_backbone_in_its_own_process(capsys):
    from splatdistill.cli import main

    assert (
        main(
            ["bench", "features", "--backbone", TEACHER, "--backbone", "mobilenetv2", "--size", "64", "--repeats", "2"]
        )
        == 0
    )
    out = capsys.readouterr().out
    lines = [ln.split() for ln in out.splitlines() if ln.strip().startswith(("random:vit_tiny", "mobilenetv2 "))]
    assert len(lines) == 2
    assert lines[0][1:3] == ["4x4", "192"] and lines[1][1:3] == ["4x4", "96"]  # 64 px at stride 16, their widths
    ms, ips = float(lines[0][4]), float(lines[0][5])
    assert abs(ips - 1000 / ms) / ips < 0.02  # images/s is the inverse of the time per image (batch 1)
    assert "x the images/s of" in out
