"""``splatdistill export``: a trained student as a folder timm loads with ``local-dir:``, whose features are
``load_backbone(student.safetensors)``'s, fed with the preprocessing the config records."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from timm.data import resolve_data_config

from splatdistill.backbones import load_backbone
from splatdistill.cli import main

CLIP = "random:vit_base_patch16_clip_quickgelu_224.openai,depth=1"


@pytest.fixture(scope="module")
def clip_run(rooms, tmp_path_factory):
    """A 3-step run with a (one-block, random-weight) OpenAI-CLIP teacher, and an eval table beside it."""
    from _train_worker import TINY_RUN
    from splatdistill.distill.config import TrainConfig
    from splatdistill.distill.trainer import Trainer

    out = tmp_path_factory.mktemp("clip_run")
    run = [a for a in TINY_RUN if not a.startswith("backbone=")]
    cfg = TrainConfig.load(
        None,
        [f"data={rooms}", f"out={out}", "steps=3", "val_samples=0", "checkpoint_every=3", f"backbone={CLIP}", *run],
    )
    cfg.save(out / "config.yaml")
    Trainer(cfg).fit()
    (out / "eval").mkdir()
    (out / "eval" / "report.md").write_text("| backbone | depth AbsRel |\n|---|---|\n| student | 0.123 |\n")
    return out


def _timm_tokens(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's own pipeline: the config's mean/std, forward_features, prefix tokens dropped -> (B, C, h, w)."""
    cfg = resolve_data_config({}, model=model)
    normed = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    p = model.patch_embed.patch_size[0]
    tokens = model.forward_features(normed)[:, model.num_prefix_tokens :]
    return tokens.transpose(1, 2).reshape(x.shape[0], -1, x.shape[-2] // p, x.shape[-1] // p)


def test_export_loads_in_timm_with_the_students_features_and_preprocessing(clip_run, tmp_path, capsys):
    out = tmp_path / "hub"
    assert main(["export", str(clip_run), "--out", str(out)]) == 0
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    student = load_backbone(str(clip_run / "student.safetensors"))
    cfg = resolve_data_config({}, model=model)
    pre = student.preprocessing
    print(
        f"\nexported config: mean={cfg['mean']} std={cfg['std']} {cfg['interpolation']} {cfg['input_size']}"
        f"\nstudent:         mean={pre.mean} std={pre.std} {pre.interpolation} {pre.input_size}"
    )
    assert tuple(cfg["mean"]) == pre.mean == (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's, not ImageNet's
    assert tuple(cfg["std"]) == pre.std and cfg["interpolation"] == pre.interpolation
    assert model.num_classes == 0 and len(model.blocks) == 1
    for size in [(224, 224), (96, 128)]:
        x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.testing.assert_close(_timm_tokens(model, x), student.patch_features(x), atol=1e-5, rtol=1e-5)
    doc = json.loads((out / "config.json").read_text())
    assert doc["architecture"] == "vit_base_patch16_clip_quickgelu_224" and doc["splatdistill"]["teacher"] == CLIP
    card = (out / "README.md").read_text()
    assert "| student | 0.123 |" in card and "license: other" in card and "random-weight teacher" in card
    assert "mean [0.48145466" in card
    # a second export into the same folder must not silently replace it
    assert main(["export", str(clip_run), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_export_of_a_dinov2_style_student_matches_at_its_native_size(tmp_path):
    """The default student resamples positions Hugging Face style and is fed bilinear-resized ImageNet-normalised
    pixels; timm's own model, with the exported config, matches it at the native grid (37 x 37)."""
    from splatdistill.backbones import DINOV2_OFFLINE
    from splatdistill.backbones.vit import ViTBackbone, create_vit
    from splatdistill.distill.student import export_timm_safetensors

    torch.manual_seed(0)
    bb = ViTBackbone(create_vit("vit_small_patch14_dinov2", depth=1), "dinov2-like", "hf", DINOV2_OFFLINE)
    export_timm_safetensors(bb, tmp_path / "student.safetensors", {"steps": 0})
    assert (
        main(
            ["export", str(tmp_path / "student.safetensors"), "--out", str(tmp_path / "hub"), "--license", "apache-2.0"]
        )
        == 0
    )
    model = timm.create_model(f"local-dir:{tmp_path / 'hub'}", pretrained=True).eval()
    student = load_backbone(str(tmp_path / "student.safetensors"))
    assert student.pos_interp == "hf" and student.preprocessing.key() == DINOV2_OFFLINE.key()
    assert resolve_data_config({}, model=model)["interpolation"] == "bilinear"
    x = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(_timm_tokens(model, x), student.patch_features(x), atol=1e-5, rtol=1e-5)
    assert "license: apache-2.0" in (tmp_path / "hub" / "README.md").read_text()
    # at 224 px timm's own resampling of the 37 x 37 table differs; --img-size stores the table resampled the
    # student's way at 224, where timm then matches exactly
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (_timm_tokens(model, x) - student.patch_features(x)).abs().max() > 1e-3
    assert (
        main(["export", str(tmp_path / "student.safetensors"), "--out", str(tmp_path / "hub224"), "--img-size", "224"])
        == 0
    )
    model224 = timm.create_model(f"local-dir:{tmp_path / 'hub224'}", pretrained=True).eval()
    assert resolve_data_config({}, model=model224)["input_size"] == (3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(_timm_tokens(model224, x), student.patch_features(x), atol=1e-5, rtol=1e-5)


def test_export_errors_are_one_line(clip_run, tmp_path, capsys):
    cases = [
        ([str(tmp_path / "nope"), "--out", str(tmp_path / "o1")], "no such run folder"),
        ([str(tmp_path), "--out", str(tmp_path / "o2")], "no student.safetensors"),
        ([str(clip_run), "--out", str(tmp_path / "o3"), "--eval", str(tmp_path / "missing.md")], "no eval report"),
        ([str(clip_run), "--out", str(tmp_path / "o5"), "--img-size", "100"], "not a multiple of the patch size 16"),
        ([str(clip_run), "--out", str(tmp_path / "o6"), "--img-size", "big"], "--img-size takes N or HxW"),
        ([str(clip_run), "--out", str(tmp_path / "o4"), "--push-to-hub", "me/model"], "unreachable"),
    ]
    for args, msg in cases:
        assert main(["export", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
    assert (tmp_path / "o4" / "model.safetensors").is_file()  # the folder is written before the push is refused


def test_a_projected_student_records_its_preprocessing_and_is_not_exported_as_timm(tmp_path, capsys):
    from splatdistill.backbones.preprocess import Preprocessing
    from splatdistill.backbones.projected import ProjectedBackbone, save_projected

    spec = "random:vit_base_patch16_siglip_224,depth=1"
    student = ProjectedBackbone(load_backbone(spec), spec, 384, 14)
    assert student.preprocessing.mean == (0.5, 0.5, 0.5)  # SigLIP's
    student.set_preprocessing(Preprocessing((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "bilinear", source="test"))
    save_projected(student, tmp_path / "student.safetensors")
    back = load_backbone(str(tmp_path / "student.safetensors"))  # the file's record wins over the inner spec's
    assert back.preprocessing.key() == back.inner.preprocessing.key() == student.preprocessing.key()
    assert back.inner.preprocessing.mean == (0.1, 0.2, 0.3)
    assert main(["export", str(tmp_path / "student.safetensors"), "--out", str(tmp_path / "hub")]) == 2
    assert "not a timm model" in capsys.readouterr().err
