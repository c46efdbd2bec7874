"""Teacher families by name: which timm model (and pretrained tag) each is, as data.

Every entry loads as ``timm:NAME`` (pretrained, for users with hub access or a local hub cache),
``random:NAME`` (random weights of the real architecture, offline) or from a local file with
``NAME@PATH``. The tag picks timm's ``pretrained_cfg``, hence the preprocessing (CLIP's mean/std differ
from ImageNet's; SigLIP's are 0.5). Token layouts differ too: CLIP and DeiT-3 prepend a CLS token, SigLIP
none, DINOv2-reg and DINOv3 a CLS and 4 registers; the backbones drop ``num_prefix_tokens`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TeacherFamily:
    family: str
    timm_name: str  # architecture.tag
    small: str  # the quickest architecture of the family for random-weight runs (same layout and preprocessing)
    note: str


TEACHER_FAMILIES: dict[str, TeacherFamily] = {f.family: f for f in (
    TeacherFamily("dinov2", "vit_small_patch14_dinov2.lvd142m", "vit_small_patch14_dinov2.lvd142m",
                  "patch 14, CLS; the offline default dinov2_vits14 is this model"),
    TeacherFamily("dinov2_reg", "vit_small_patch14_reg4_dinov2.lvd142m", "vit_small_patch14_reg4_dinov2.lvd142m",
                  "patch 14, CLS + 4 registers"),
    TeacherFamily("dinov3", "vit_small_patch16_dinov3.lvd1689m", "vit_small_patch16_dinov3.lvd1689m",
                  "patch 16, CLS + 4 registers, RoPE (timm Eva); DINOv3 licence"),
    TeacherFamily("clip_openai", "vit_base_patch16_clip_224.openai", "vit_base_patch16_clip_224.openai",
                  "patch 16, CLS, pre-norm; OpenAI CLIP mean/std"),
    TeacherFamily("clip_laion", "vit_base_patch16_clip_224.laion2b", "vit_base_patch16_clip_224.laion2b",
                  "patch 16, CLS, pre-norm; OpenAI CLIP mean/std"),
    TeacherFamily("siglip", "vit_base_patch16_siglip_224.webli", "vit_base_patch16_siglip_224.webli",
                  "patch 16, no CLS (attention pooling head dropped); mean/std 0.5"),
    TeacherFamily("siglip2", "vit_base_patch16_siglip_224.v2_webli", "vit_base_patch16_siglip_224.v2_webli",
                  "patch 16, no CLS; mean/std 0.5"),
    TeacherFamily("mae", "vit_base_patch16_224.mae", "vit_base_patch16_224.mae", "patch 16, CLS; ImageNet mean/std"),
    TeacherFamily("deit3", "deit3_base_patch16_224.fb_in1k", "deit3_small_patch16_224.fb_in1k",
                  "patch 16, CLS, layer scale; ImageNet mean/std"),
)}  # fmt: skip
