"""Released fine-tuned weights by name (a registry of configs, as timm's pretrained configs are data).

``snd_vits14`` / ``snd_vitb14`` are the Splat-and-Distill release (with blending), ``*_noblend`` its
without-blending variants, ``fit3d_*`` FiT3D's (DINOv2 S/B, DINOv2-reg4 S, CLIP B, MAE B, DeiT-3 B). A spec is
``NAME:PATH`` (the file the user downloaded from the authors' model page), or ``NAME`` alone when the
file sits, under its release file name, in ``$SPLATDISTILL_WEIGHTS`` or ``~/.cache/splatdistill/weights``;
for a release with a ``hub_repo`` a user whose machine reaches the hub gets it fetched there (never offline).

The files are recognised by their key layout: the reference saves ``state_dict()`` of the official
DINOv2 hub model after merging LoRA, i.e. timm-compatible ViT keys plus ``mask_token`` (1, C), with
``blocks.N.ls1.gamma`` layer scales and a 37x37 + 1 position table. :func:`describe_layout` names what a
file holds, and a file of another model (another size, not a ViT, a run's export) is refused with a
message saying what it is and what to use instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from splatdistill.backbones.checkpoints import infer_vit_arch, read_metadata, read_state_dict, to_timm_vit_state_dict
from splatdistill.errors import UserError
from splatdistill.registry import Registry

#: a ViT's size name by (embed dim, patch size), as :func:`describe_layout` reports it
SIZE_NAMES = {(384, 14): "ViT-S/14", (768, 14): "ViT-B/14", (384, 16): "ViT-S/16", (768, 16): "ViT-B/16"}
#: FiT3D's model page (a Hugging Face repo) holding its released files
FIT3D_REPO = "yuanwenyue/FiT3D"


@dataclass(frozen=True)
class ReleasedWeights:
    name: str
    arch: str  # timm architecture (with the pretrained tag whose preprocessing the weights were trained with)
    file_name: str  # the release's file name ("" when the release gives none we know of: pass NAME:PATH)
    description: str
    size: str  # "ViT-S/14" etc.: what the file must hold
    pos_interp: str = "dinov2"  # how the training code resampled the position table
    hub_repo: str = ""  # where users with hub access can fetch ``file_name`` (never fetched offline or in tests)

    @property
    def family(self) -> str:
        return self.name.split("_")[0]


RELEASED: Registry[ReleasedWeights] = Registry("released weights")
for _r in (
    ReleasedWeights(
        "snd_vits14",
        "vit_small_patch14_dinov2.lvd142m",
        "dinov2_small_snd.pth",
        "Splat-and-Distill DINOv2 ViT-S/14 (with blending)",
        "ViT-S/14",
    ),
    ReleasedWeights(
        "snd_vitb14",
        "vit_base_patch14_dinov2.lvd142m",
        "dinov2_base_snd.pth",
        "Splat-and-Distill DINOv2 ViT-B/14 (with blending)",
        "ViT-B/14",
    ),
    ReleasedWeights(
        "snd_vits14_noblend",
        "vit_small_patch14_dinov2.lvd142m",
        "dinov2_small_snd_no_blending.pth",
        "Splat-and-Distill DINOv2 ViT-S/14 (without blending)",
        "ViT-S/14",
    ),
    ReleasedWeights(
        "snd_vitb14_noblend",
        "vit_base_patch14_dinov2.lvd142m",
        "dinov2_base_snd_no_blending.pth",
        "Splat-and-Distill DINOv2 ViT-B/14 (without blending)",
        "ViT-B/14",
    ),
    # FiT3D (Yue et al., ECCV 2024): timm models built as in its hubconf.py, timm's position resampling
    ReleasedWeights(
        "fit3d_vits14",
        "vit_small_patch14_dinov2.lvd142m",
        "dinov2_small_finetuned.pth",
        "FiT3D DINOv2 ViT-S/14",
        "ViT-S/14",
        hub_repo=FIT3D_REPO,
    ),
    ReleasedWeights(
        "fit3d_vitb14",
        "vit_base_patch14_dinov2.lvd142m",
        "dinov2_base_finetuned.pth",
        "FiT3D DINOv2 ViT-B/14",
        "ViT-B/14",
        hub_repo=FIT3D_REPO,
    ),
    ReleasedWeights(
        "fit3d_vits14_reg4",
        "vit_small_patch14_reg4_dinov2.lvd142m",
        "dinov2_reg_small_finetuned.pth",
        "FiT3D DINOv2 ViT-S/14 with 4 registers",
        "ViT-S/14",
        "timm",
        FIT3D_REPO,
    ),
    ReleasedWeights(
        "fit3d_clip_vitb16",
        "vit_base_patch16_clip_384.laion2b_ft_in12k_in1k",
        "clip_base_finetuned.pth",
        "FiT3D CLIP ViT-B/16 (LAION-2B, 384 px)",
        "ViT-B/16",
        "timm",
        FIT3D_REPO,
    ),
    ReleasedWeights(
        "fit3d_mae_vitb16",
        "vit_base_patch16_224.mae",
        "mae_base_finetuned.pth",
        "FiT3D MAE ViT-B/16",
        "ViT-B/16",
        "timm",
        FIT3D_REPO,
    ),
    ReleasedWeights(
        "fit3d_deit3_vitb16",
        "deit3_base_patch16_224.fb_in1k",
        "deit3_base_finetuned.pth",
        "FiT3D DeiT-3 ViT-B/16",
        "ViT-B/16",
        "timm",
        FIT3D_REPO,
    ),
):
    RELEASED.register(_r.name, _r)


def is_released_spec(spec: str) -> bool:
    return spec.split(":", 1)[0] in RELEASED


def weight_dirs() -> list[Path]:
    dirs = [Path(os.environ["SPLATDISTILL_WEIGHTS"]).expanduser()] if os.environ.get("SPLATDISTILL_WEIGHTS") else []
    return dirs + [Path.home() / ".cache" / "splatdistill" / "weights"]


def resolve_file(spec: str) -> tuple[ReleasedWeights, Path]:
    name, _, path = spec.partition(":")
    rel = RELEASED[name]
    if path:
        p = Path(path).expanduser()
        if not p.exists():
            raise UserError(f"{name}: weights file not found", p)
        return rel, p
    if rel.file_name:
        for d in weight_dirs():
            if (d / rel.file_name).is_file():
                return rel, d / rel.file_name
    where = " or ".join(str(d) for d in weight_dirs())
    got = f"put {rel.file_name} in {where}, or " if rel.file_name else ""
    raise UserError(
        f"{name} ({rel.description}) is not on this machine: download it from the authors' model page, "
        f"then {got}pass {name}:PATH"
    )


def describe_layout(raw: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> str:
    """What a state dict holds, from its keys: the format and, for a ViT, its size."""
    meta = metadata or {}
    if meta.get("format") == "splatdistill-projected":
        return f"a splatdistill student of another architecture ({meta.get('inner', '?')} + projection)"
    keys = list(raw)
    if any(".lora_A." in k for k in keys):
        fmt = "un-merged peft LoRA ViT"
    elif any(k.startswith(("embeddings.", "encoder.layer.")) for k in keys):
        fmt = "Hugging Face Dinov2Model"
    elif any(k.endswith("mask_token") for k in keys) and any(re.search(r"blocks\.\d+\.ls1\.gamma", k) for k in keys):
        fmt = "official DINOv2 hub layout (the Splat-and-Distill release's)"
    elif any(k.endswith("patch_embed.proj.weight") for k in keys):
        fmt = "timm ViT"
    else:
        return f"not a ViT state dict (first keys: {', '.join(keys[:3])})"
    try:
        arch, kwargs = infer_vit_arch(to_timm_vit_state_dict(dict(raw)))
    except (ValueError, KeyError):
        return f"{fmt}, incomplete (no patch embedding / position table)"
    state = to_timm_vit_state_dict(dict(raw))
    dim, patch = int(state["patch_embed.proj.weight"].shape[0]), int(state["patch_embed.proj.weight"].shape[-1])
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    size = SIZE_NAMES.get((dim, patch), f"ViT (dim {dim}, patch {patch})")
    return f"{fmt}, {size}: dim {dim}, {depth} blocks, patch {patch}"


def check_released(rel: ReleasedWeights, path: Path) -> str:
    """The file's layout description; a UserError when it is not the model ``rel`` names."""
    raw = read_state_dict(path)
    layout = describe_layout(raw, read_metadata(path))
    if layout.startswith("not a ViT") or "another architecture" in layout or "incomplete" in layout:
        raise UserError(f"{rel.name} names the {rel.description}, but this file is {layout}", path)
    want = rel.size
    if want not in layout:
        other = [r.name for r in RELEASED.values() if r.size in layout and r.family == rel.family]
        hint = f"; use {other[0]}:{path}" if other else ""
        raise UserError(
            f"{rel.name} names the {rel.description}, but this file holds {layout.split(', ', 1)[-1]}{hint}", path
        )
    return layout
