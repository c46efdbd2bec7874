"""A student of another architecture than its teacher: its own backbone, a learned 1x1 projection to the
teacher's feature size, and its feature grid resampled to the teacher's token grid.

Splat-and-Distill supervises the student token by token with the splatted teacher features, so a student
with another stride (16 for MobileNetV2 against 14 for DINOv2) or width (96 against 384) must produce
the teacher's grid and channels. The projection is part of the student: it is saved in the same
safetensors file (metadata ``format=splatdistill-projected``) and rebuilt by ``load_backbone``, so the
student evaluates and exports like any backbone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from splatdistill.atomic import atomic_write
from splatdistill.backbones.base import Backbone, ResizeMode
from splatdistill.backbones.checkpoints import read_metadata, require_finite
from splatdistill.backbones.preprocess import METADATA_KEY, Preprocessing, from_metadata
from splatdistill.errors import UserError

PROJECTED_FORMAT = "splatdistill-projected"


class ProjectedBackbone(Backbone):
    """``inner`` backbone -> 1x1 conv to ``out_dim`` channels -> bilinear resampling to the grid that a
    backbone with patch ``out_patch`` (and ``out_resize`` mode) would give the same image."""

    def __init__(
        self, inner: Backbone, inner_spec: str, out_dim: int, out_patch: int, out_resize: ResizeMode = "resize"
    ):
        super().__init__(inner.preprocessing)  # the inner backbone prepares the pixels: report its numbers
        self.inner = inner
        self.inner_spec = inner_spec
        self.proj = nn.Conv2d(inner.embed_dim, out_dim, kernel_size=1)
        self.embed_dim = out_dim
        self.patch_size = out_patch
        self.resize_mode = out_resize
        self.name = f"{inner.name}->{out_dim}x/{out_patch}"

    def set_preprocessing(self, pre: Preprocessing) -> None:
        super().set_preprocessing(pre)
        if "inner" in self._modules:
            self.inner.set_preprocessing(pre)

    def patch_features(self, images: torch.Tensor, return_cls: bool = False, final_norm: bool = True):
        """The projected features; there is no final normalisation after the projection, so ``final_norm``
        changes nothing."""
        grid = self.grid_size(*images.shape[-2:])  # the teacher's token grid for this image
        fmap = self.proj(self.inner.patch_features(images))
        if tuple(fmap.shape[-2:]) != grid:
            fmap = F.interpolate(fmap, size=grid, mode="bilinear", align_corners=False)
        if return_cls:
            return fmap, fmap.mean(dim=(2, 3))
        return fmap

    def metadata(self) -> dict[str, str]:
        return {
            "format": PROJECTED_FORMAT,
            "inner": self.inner_spec,
            "out_dim": str(self.embed_dim),
            "out_patch": str(self.patch_size),
            "out_resize": self.resize_mode,
            "inner_dim": str(self.inner.embed_dim),
            METADATA_KEY: self.preprocessing.to_json(),
        }


def save_projected(model: ProjectedBackbone, path: str | Path, extra_metadata: dict | None = None) -> Path:
    """The whole student (its backbone and the projection) as one safetensors file."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        **model.metadata(),
        "producer": "splatdistill",
        **{k: json.dumps(v) if not isinstance(v, str) else v for k, v in (extra_metadata or {}).items()},
    }
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def projected_metadata(path: Path) -> dict[str, str] | None:
    """The metadata of a projected student file, or None when ``path`` is something else."""
    meta = read_metadata(path) if path.is_file() else {}
    return meta if meta.get("format") == PROJECTED_FORMAT else None


def load_projected(path: Path, meta: dict[str, str], build: Callable[[str], Backbone]) -> ProjectedBackbone:
    """Rebuild the student from its file: the inner backbone from its spec (``build``, i.e. ``load_backbone``),
    then every weight from the file."""
    try:
        inner = build(meta["inner"])
    except UserError as exc:
        raise UserError(f"the student's own architecture {meta['inner']!r} could not be built: {exc}", path) from None
    recorded = from_metadata(meta)
    if recorded is not None:  # the pixels the student was trained on, whatever the inner spec now resolves to
        inner.set_preprocessing(recorded)
    model = ProjectedBackbone(
        inner, meta["inner"], int(meta["out_dim"]), int(meta["out_patch"]), meta.get("out_resize", "resize")
    )  # type: ignore[arg-type]
    state = load_file(str(path))
    require_finite(state, path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(
            f"the file does not match the student {meta['inner']!r}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}",
            path,
        )
    return model
