"""Frozen-feature extraction with an on-disk cache shared by every probe and matcher.

A backbone is run once per evaluation over every image the tasks need; the patch grids (and CLS
tokens) are stored in one safetensors file whose name is a hash of the backbone (spec, class, a hash
of its weights) and of the exact input pixels (so a changed dataset, split selection or resolution
misses the cache instead of silently reusing stale features). Features are stored as float16 and the
in-memory copy is always the float16 round trip, so a cache hit and a fresh extraction give identical
numbers downstream.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from splatdistill.atomic import atomic_write
from splatdistill.backbones import load_backbone
from splatdistill.errors import UserError

CACHE_FORMAT_VERSION = 1


@runtime_checkable
class BackboneLike(Protocol):
    """What the evaluation needs from a backbone (see :mod:`splatdistill.backbones`)."""

    patch_size: int
    embed_dim: int
    name: str
    def patch_features(self, images: torch.Tensor, return_cls: bool = False): ...


@dataclass
class BackboneEntry:
    """A backbone to evaluate: the label shown in the report, the spec it came from, the module."""

    label: str
    spec: str
    model: BackboneLike


def load_backbone_spec(spec: str, device: str = "cpu") -> BackboneLike:
    """Load a backbone through :func:`splatdistill.backbones.load_backbone`, as a :class:`UserError` on failure."""
    try:
        model = load_backbone(spec, device=device)
    except UserError as exc:
        raise UserError(f"backbone '{spec}' failed to load: {exc}") from exc
    except Exception as exc:  # any loader failure is the user's spec or file
        raise UserError(f"backbone '{spec}' failed to load: {type(exc).__name__}: {exc}") from exc
    return model


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of a module's class, patch size and every tensor in its state dict (weights and buffers)."""
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}|{getattr(model, 'patch_size', '')}".encode())
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of (N, 3, H, W) float images (no-op when the size matches)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _call_backbone(model: BackboneLike, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    try:
        out = model.patch_features(x, return_cls=True)
    except TypeError:
        out = model.patch_features(x)
    if isinstance(out, (tuple, list)):
        patch, cls = out[0], out[1]
    else:
        patch, cls = out, None
    if patch.ndim != 4 or patch.shape[0] != x.shape[0]:
        raise RuntimeError(f"backbone returned patch features of shape {tuple(patch.shape)}, expected (B, C, h, w)")
    if cls is not None and (cls.ndim != 2 or cls.shape[0] != x.shape[0]):
        cls = None
    return patch, cls


@torch.inference_mode()
def extract_features(
    model: BackboneLike,
    images: torch.Tensor,
    batch_size: int = 16,
    device: str = "cpu",
    desc: str = "features",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Patch features (N, C, h, w) and CLS tokens (N, C) or None for (N, 3, H, W) images in [0, 1].

    Images are resized to a multiple of the backbone's patch size first (a no-op for the sizes the
    runner prepares), so the patch grid covers the whole image.
    """

    p = int(getattr(model, "patch_size", 1) or 1)
    H, W = images.shape[-2:]
    size = (max(p, int(round(H / p)) * p), max(p, int(round(W / p)) * p))
    if hasattr(model, "eval"):
        model.eval()
    patches, classes = [], []
    starts = range(0, images.shape[0], batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        x = resize_images(images[start : start + batch_size].to(device=device, dtype=torch.float32), size)
        patch, cls = _call_backbone(model, x)
        patches.append(patch.float().cpu())
        classes.append(None if cls is None else cls.float().cpu())
    patch = torch.cat(patches) if patches else torch.zeros(0)
    cls = None if any(c is None for c in classes) or not classes else torch.cat(classes)
    return patch, cls


def images_digest(images: dict[str, torch.Tensor]) -> str:
    """Hash of named image batches (their exact bytes and shapes): the data part of a cache key."""
    h = hashlib.sha256()
    for name in sorted(images):
        t = images[name].contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _fits_half(t: torch.Tensor) -> bool:
    return not t.numel() or float(t.abs().max()) < 60000


def _storage(t: torch.Tensor) -> torch.Tensor:
    """The tensor as stored: float16, or float32 when float16 would overflow."""
    return t.half() if _fits_half(t) else t.float()


@dataclass
class FeatureSet:
    """Features of named image groups: ``patch[g]`` is (N, C, h, w), ``cls[g]`` (N, C) or None."""

    patch: dict[str, torch.Tensor]
    cls: dict[str, torch.Tensor | None]
    cache_path: Path | None = None
    cache_hit: bool = False
    seconds: float = 0.0


def safe_label(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:48] or "backbone"


def get_features(
    entry: BackboneEntry,
    images: dict[str, torch.Tensor],
    cache_dir: Path | None,
    batch_size: int = 16,
    device: str = "cpu",
    progress: bool = True,
) -> FeatureSet:
    """Features for every group of ``images``, from the cache when the key matches, else extracted and stored."""

    t0 = time.perf_counter()
    key_src = {
        "version": CACHE_FORMAT_VERSION,
        "spec": entry.spec,
        "model": model_fingerprint(entry.model),  # type: ignore[arg-type]
        "images": images_digest(images),
    }
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:20]
    # Named by spec, not label: two rows with the same weights share one file.
    path = None if cache_dir is None else Path(cache_dir) / f"{safe_label(entry.spec)}-{key}.safetensors"
    if path is not None and path.is_file():
        try:
            stored = load_file(str(path))
            patch = {g: stored[f"{g}.patch"].float() for g in images}
            cls = {g: (stored[f"{g}.cls"].float() if f"{g}.cls" in stored else None) for g in images}
            return FeatureSet(patch, cls, path, True, time.perf_counter() - t0)
        except Exception:  # a truncated or foreign file: re-extract and overwrite it
            pass
    patch, cls = {}, {}
    for g, imgs in images.items():
        p, c = extract_features(entry.model, imgs, batch_size, device, f"{entry.label}: {g}", progress)
        patch[g] = _storage(p).float()  # the stored precision, so cache hits give identical numbers
        cls[g] = None if c is None else _storage(c).float()
    if path is not None:
        tensors = {f"{g}.patch": _storage(patch[g]) for g in images}
        tensors.update({f"{g}.cls": _storage(c) for g, c in cls.items() if c is not None})
        atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp,
                                                 metadata={"key": json.dumps(key_src)}))
    return FeatureSet(patch, cls, path, False, time.perf_counter() - t0)


def sample_features(feat: torch.Tensor, xy: np.ndarray | torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinearly sample a (C, h, w) grid covering a ``width x height`` image at pixel positions ``xy``.

    ``xy`` is (N, 2) in continuous pixel coordinates (pixel centres at integer + 0.5). Returns (N, C).
    Grid cell centres sit at the centres of the image regions the patches cover (``align_corners=False``).
    """
    xy = torch.as_tensor(np.asarray(xy), dtype=torch.float32)
    gx = xy[:, 0] / width * 2 - 1
    gy = xy[:, 1] / height * 2 - 1
    grid = torch.stack([gx, gy], -1).view(1, 1, -1, 2)
    out = F.grid_sample(feat[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0, :].T.contiguous()
