"""The backbone interface every teacher/student satisfies.

A backbone maps RGB images in [0, 1] to a dense grid of features. Everything downstream (upsampling,
lifting, splatting, probes) only sees ``patch_features``, so any model with a stride-``patch_size``
feature map can be a Splat-and-Distill teacher. Each backbone carries its own :class:`Preprocessing`
(mean, std, resize kernel; :mod:`.preprocess`), so the trainer, ``eval`` and ``features`` feed every
model the pixels it was trained on.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from splatdistill.backbones.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

__all__ = ["Backbone", "snap_size", "IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing", "ResizeMode"]

ResizeMode = Literal["resize", "crop"]


def snap_size(height: int, width: int, patch: int, mode: ResizeMode = "resize") -> tuple[int, int]:
    """The input size the network sees: a multiple of ``patch`` (nearest for resize, floor for crop)."""
    if mode == "crop":
        h, w = (height // patch) * patch, (width // patch) * patch
    else:
        h, w = max(1, round(height / patch)) * patch, max(1, round(width / patch)) * patch
    return max(h, patch), max(w, patch)


def resize(images: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """Antialiased resize with the model's kernel (nearest has no antialiasing)."""
    if interpolation == "nearest":
        return F.interpolate(images, size=size, mode="nearest")
    return F.interpolate(images, size=size, mode=interpolation, align_corners=False, antialias=True)


class Backbone(nn.Module):
    """Base class: resizing to the patch grid and normalising by :attr:`preprocessing`, then ``forward_tokens``.

    Subclasses set ``patch_size``, ``embed_dim``, ``name`` and implement ``forward_tokens`` on a
    normalised, patch-aligned batch, returning ``(patch (B, C, h, w), cls (B, C) or None)``.
    """

    patch_size: int = 14
    embed_dim: int = 384
    name: str = "backbone"
    resize_mode: ResizeMode = "resize"

    def __init__(self, preprocessing: Preprocessing | None = None) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.ones(1, 3, 1, 1), persistent=False)
        self.set_preprocessing(preprocessing or Preprocessing(source="ImageNet default"))

    def set_preprocessing(self, pre: Preprocessing) -> None:
        """Use ``pre`` from now on (the buffers keep their device)."""
        self.preprocessing = pre
        self.pixel_mean.copy_(torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.pixel_std.copy_(torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1))

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        return snap_size(height, width, self.patch_size, self.resize_mode)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        h, w = self.input_size(height, width)
        return h // self.patch_size, w // self.patch_size

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise and resize (or centre-crop) RGB in [0, 1] to a multiple of the patch size."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        H, W = images.shape[-2:]
        h, w = self.input_size(H, W)
        if (h, w) != (H, W):
            if self.resize_mode == "crop":
                top, left = (H - h) // 2, (W - w) // 2
                images = images[..., top : top + h, left : left + w]
            else:
                images = resize(images, (h, w), self.preprocessing.interpolation)
        return (images - self.pixel_mean.to(images)) / self.pixel_std.to(images)

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def forward_block_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The last block's tokens *before* the final normalisation. The paper's depth probe and Probe3D's
        normal probe and matcher read these raw tokens of a ViT, not the normalised ones the trainer uses.
        A backbone without a final normalisation returns its tokens."""
        return self.forward_tokens(x)

    def apply_final_norm(
        self, patch: torch.Tensor, cls: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The final normalisation, applied to :meth:`forward_block_tokens`' output (identity here), so one
        forward pass gives both kinds of tokens."""
        return patch, cls

    def patch_features(
        self, images: torch.Tensor, return_cls: bool = False, final_norm: bool = True
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Dense features (B, C, H/p, W/p) of RGB images in [0, 1]; with ``return_cls``, also (B, C).
        ``final_norm=False`` gives the tokens before the final normalisation (:meth:`forward_block_tokens`)."""
        x = self.prepare(images)
        patch, cls = self.forward_tokens(x) if final_norm else self.forward_block_tokens(x)
        return (patch, cls) if return_cls else patch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.patch_features(images)  # type: ignore[return-value]
