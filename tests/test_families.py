"""Teacher families (CLIP, SigLIP/SigLIP2, MAE, DeiT-3, DINOv2 with registers, DINOv3) with random weights
of the real architecture (one block deep, so the suite stays quick): each is fed with timm's own resolved
preprocessing, yields timm's own patch tokens (prefix tokens dropped), trains and reloads."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.data import resolve_data_config

from splatdistill.backbones import DINOV2_OFFLINE, load_backbone
from splatdistill.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from splatdistill.backbones.checkpoints import read_metadata
from splatdistill.backbones.families import TEACHER_FAMILIES
from splatdistill.backbones.preprocess import Preprocessing, from_metadata

FAMILIES = sorted(TEACHER_FAMILIES)


def _timm_reference(name: str) -> tuple[torch.nn.Module, dict]:
    """timm's own model (same seed, same depth) and its resolved data config: the independent reference."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True, depth=1).eval()
    return model, resolve_data_config({}, model=model)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_preprocessing_and_tokens_are_timms(family):
    name = TEACHER_FAMILIES[family].small
    bb = load_backbone(f"random:{name},depth=1")
    ref, data_cfg = _timm_reference(name)
    pre = bb.preprocessing
    print(
        f"\n{family:12s} {name}\n  ours: mean={pre.mean} std={pre.std} {pre.interpolation} {pre.input_size}"
        f"\n  timm: mean={data_cfg['mean']} std={data_cfg['std']} {data_cfg['interpolation']} "
        f"{data_cfg['input_size'][1:]}  (pretrained_cfg mean={ref.pretrained_cfg['mean']})"
    )
    assert pre.mean == tuple(data_cfg["mean"]) == tuple(ref.pretrained_cfg["mean"])
    assert pre.std == tuple(data_cfg["std"]) == tuple(ref.pretrained_cfg["std"])
    assert pre.interpolation == data_cfg["interpolation"] and pre.input_size == tuple(data_cfg["input_size"][1:])
    p = bb.patch_size
    assert p == ref.patch_embed.patch_size[0] and p in (14, 16)
    x = torch.rand(1, 3, 3 * p, 5 * p, generator=torch.Generator().manual_seed(1))  # not the native grid: resampled
    with torch.no_grad():
        ours, cls = bb.patch_features(x, return_cls=True)
        normed = (x - torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(data_cfg["std"]).view(1, 3, 1, 1)
        tokens = ref.forward_features(normed)
    assert ours.shape == (1, ref.embed_dim, 3, 5)
    assert tokens.shape[1] == ref.num_prefix_tokens + 15
    expect = tokens[:, ref.num_prefix_tokens :].transpose(1, 2).reshape(1, -1, 3, 5)
    torch.testing.assert_close(ours, expect, atol=1e-5, rtol=1e-5)
    assert (cls is None) == (ref.cls_token is None)


@pytest.mark.parametrize("family", ["siglip2", "dinov3"])  # CLIP trains and reloads in test_export.py
def test_family_trains_three_steps_and_reloads(family, rooms, tmp_path):
    from _train_worker import TINY_RUN
    from splatdistill.distill.config import TrainConfig
    from splatdistill.distill.student import merged_copy
    from splatdistill.distill.trainer import Trainer

    name = TEACHER_FAMILIES[family].small
    run = [a for a in TINY_RUN if not a.startswith("backbone=")]
    cfg = TrainConfig.load(
        None,
        [
            f"data={rooms}",
            f"out={tmp_path / 'run'}",
            "steps=3",
            "val_samples=0",
            "checkpoint_every=3",
            f"backbone=random:{name},depth=1",
            *run,
        ],
    )
    trainer = Trainer(cfg)
    result = trainer.fit()
    assert result["steps"] == 3
    student = load_backbone(result["student"])
    want = trainer.student.backbone.preprocessing
    assert student.preprocessing.key() == want.key() and student.preprocessing.input_size == want.input_size
    assert from_metadata(read_metadata(result["student"])).mean == want.mean
    x = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expect = merged_copy(trainer.student.backbone).eval().patch_features(x)
        torch.testing.assert_close(student.patch_features(x), expect, atol=1e-5, rtol=1e-5)


def test_dinov2_offline_default_is_fed_exactly_as_before(dinov2):
    """The default's numbers are the ones every earlier run used: ImageNet statistics and a bilinear antialiased
    resize, written out literally here (bit-identical features, at a size that needs resizing)."""
    assert dinov2.preprocessing == DINOV2_OFFLINE
    x = torch.rand(1, 3, 100, 130, generator=torch.Generator().manual_seed(3))
    resized = F.interpolate(x, size=(98, 126), mode="bilinear", align_corners=False, antialias=True)
    old = (resized - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.equal(dinov2.patch_features(x), dinov2.forward_tokens(old)[0])


def test_preprocessing_override_and_legacy_exports(tmp_path):
    from safetensors.torch import save_file

    from splatdistill.errors import UserError

    bb = load_backbone("random:vit_tiny_patch16_224,depth=1?mean=0.1&std=0.2,0.3,0.4&interpolation=bilinear")
    assert bb.preprocessing.mean == (0.1, 0.1, 0.1) and bb.preprocessing.std == (0.2, 0.3, 0.4)
    x = torch.rand(1, 3, 32, 32)
    ref = load_backbone("random:vit_tiny_patch16_224,depth=1")
    with torch.no_grad():  # the same weights fed other pixels: the override is what reaches the network
        torch.testing.assert_close(
            bb.patch_features(x), ref.forward_tokens((x - 0.1) / torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1))[0]
        )
    # a file written before preprocessing was recorded keeps the numbers it was trained with
    state = {k: v.contiguous() for k, v in ref.model.state_dict().items()}
    save_file(
        state,
        tmp_path / "old.safetensors",
        metadata={"format": "timm", "arch": "vit_tiny_patch16_224", "producer": "splatdistill"},
    )
    old = load_backbone(str(tmp_path / "old.safetensors"))
    assert old.preprocessing.key() == Preprocessing(IMAGENET_MEAN, IMAGENET_STD, "bilinear").key()
    for bad in ("?mean=1,2", "?std=0", "?nope=1", "?interpolation=lanczos4"):
        with pytest.raises(UserError):
            load_backbone("random:vit_tiny_patch16_224,depth=1" + bad)
    with pytest.raises(UserError, match="depth"):
        load_backbone("random:vit_tiny_patch16_224,depth=x")


@pytest.mark.parametrize("family", ["clip_openai", "dinov3"])
def test_family_loads_from_a_local_file_by_name(family, tmp_path):
    """``NAME@FILE``: a timm state dict on disk (no metadata) gets the named model's layout and preprocessing."""
    name = TEACHER_FAMILIES[family].small
    ref = load_backbone(f"random:{name},depth=1")
    torch.save(ref.model.state_dict(), tmp_path / "w.pth")
    bb = load_backbone(f"{name}@{tmp_path / 'w.pth'}")
    assert bb.preprocessing.key() == ref.preprocessing.key() and bb.num_prefix_tokens == ref.num_prefix_tokens
    x = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(bb.patch_features(x), ref.patch_features(x), atol=1e-6, rtol=1e-6)
