"""LoRA student, EMA teacher and timm export."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

from splatdistill.backbones.vit import ViTBackbone, create_vit
from splatdistill.distill.student import (
    EMATeacher,
    LoraSettings,
    add_lora,
    export_timm_safetensors,
    lora_module_names,
    trainable_parameter_count,
)


@pytest.fixture()
def student():
    torch.manual_seed(0)
    bb = ViTBackbone(create_vit("vit_small_patch14_dinov2"), "s", pos_interp="hf")
    for name, p in bb.named_parameters():
        if name.endswith(("ls1.gamma", "ls2.gamma")):
            p.data.fill_(1.0)  # timm's 1e-5 init would hide every block (and any adapter) from the output
    return add_lora(bb)


def test_lora_targets_only_attention_qkv_and_proj(student):
    names = lora_module_names(student)
    expected = {f"model.blocks.{i}.attn.{m}" for i in range(12) for m in ("qkv", "proj")}
    assert set(names) == expected
    assert not any("patch_embed" in n or "mlp" in n for n in names)
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    # r * (in + out) per adapted linear: qkv 384 -> 1152, proj 384 -> 384
    assert trainable_parameter_count(student) == 12 * (8 * (384 + 1152) + 8 * (384 + 384)) == 221_184
    s = student.lora_settings
    assert (s.r, s.alpha, s.dropout) == (8, 8.0, 0.1)


def test_fresh_lora_is_identity(student):
    base = ViTBackbone(create_vit("vit_small_patch14_dinov2"), "b", pos_interp="hf")
    base.model.load_state_dict(
        {k.replace(".base_layer", ""): v for k, v in student.model.state_dict().items() if "lora_" not in k}
    )
    x = torch.rand(1, 3, 42, 56)
    student.eval()
    with torch.no_grad():
        assert torch.equal(student.patch_features(x), base.eval().patch_features(x))


def test_export_loads_strict_in_timm_and_reproduces_features(student, tmp_path):
    torch.manual_seed(3)
    for name, p in student.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.02)  # a trained-looking adapter so the merge matters
    student.eval()
    x = torch.rand(2, 3, 56, 84)
    path = export_timm_safetensors(student, tmp_path / "student.safetensors")
    from safetensors.torch import load_file

    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, dynamic_img_size=True)
    model.load_state_dict(load_file(str(path)), strict=True)  # raises on any missing/unexpected key
    exported = ViTBackbone(model, "e", pos_interp="hf").eval()
    with torch.no_grad():
        ref32, got32 = student.patch_features(x), exported.patch_features(x)
        # float64: the merge itself is exact to 1e-5 (only the float32 weight rounding remains)
        ref64 = copy.deepcopy(student).double().patch_features(x.double())
        got64 = copy.deepcopy(exported).double().patch_features(x.double())
    assert (ref64 - got64).abs().max() <= 1e-5
    # float32: same up to float32 rounding of two different summation orders
    assert (ref32 - got32).abs().max() <= 1e-5 * ref32.abs().max()
    # and the adapter really changed the features (the test would catch an export of the base model)
    base = ViTBackbone(create_vit("vit_small_patch14_dinov2"), "b", pos_interp="hf")
    base.model.load_state_dict(
        {k.replace(".base_layer", ""): v for k, v in student.model.state_dict().items() if "lora_" not in k}
    )
    with torch.no_grad():
        assert (base.eval().patch_features(x) - ref32).abs().max() > 1e-2
    # loads back through our own loader with the right interpolation convention
    from splatdistill.backbones import load_backbone

    again = load_backbone(str(path))
    assert again.pos_interp == "hf"
    with torch.no_grad():
        assert torch.equal(again.patch_features(x), got32)


def test_ema_teacher_follows_the_closed_form():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = EMATeacher(student, momentum=0.9, every=3)
    t0 = copy.deepcopy(teacher.module.state_dict())
    updates = 0
    for step in range(1, 8):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(0.1 * step)
            student[1].running_mean.add_(1.0)
        updated = teacher.step(student)
        assert updated == (step % 3 == 0)
        if updated:
            updates += 1
            expected = {k: 0.9 * t0[k] + 0.1 * v for k, v in student.state_dict().items() if v.is_floating_point()}
            for k, v in expected.items():
                assert torch.allclose(teacher.module.state_dict()[k], v, atol=1e-6), k
            t0 = copy.deepcopy(teacher.module.state_dict())
    assert updates == 2
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.module.training


def test_ema_averages_trained_weights_and_keeps_frozen_ones(student):
    teacher = EMATeacher(student, momentum=0.5, every=1)
    with torch.no_grad():
        for n, p in student.named_parameters():
            if "lora_B" in n:
                p.fill_(1.0)
    before = teacher.module.model.blocks[0].attn.qkv.base_layer.weight.clone()
    teacher.step(student)
    tb = dict(teacher.module.named_parameters())
    assert torch.all(tb["model.blocks.0.attn.qkv.lora_B.default.weight"] == 0.5)
    assert torch.equal(tb["model.blocks.0.attn.qkv.base_layer.weight"], before)


def test_lora_settings_are_configurable():
    bb = ViTBackbone(create_vit("vit_small_patch14_dinov2"), "s")
    add_lora(bb, LoraSettings(r=4, alpha=16, dropout=0.0, target_modules=r".*blocks\.\d+\.attn\.qkv"))
    assert len(lora_module_names(bb)) == 12
    assert trainable_parameter_count(bb) == 12 * 4 * (384 + 1152)
