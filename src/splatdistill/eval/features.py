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
from typing import Literal, Protocol, runtime_checkable

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
    """Hash of a module's class, patch size, preprocessing and every tensor in its state dict (weights and buffers)."""
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}|{getattr(model, 'patch_size', '')}".encode())
    pre = getattr(model, "preprocessing", None)  # not in the state dict, but it changes every feature
    if pre is not None:
        h.update(f"|pre={pre.key()}".encode())
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


def _checked(out, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(out, (tuple, list)):
        patch, cls = out[0], out[1]
    else:
        patch, cls = out, None
    if patch.ndim != 4 or patch.shape[0] != n:
        raise RuntimeError(f"backbone returned patch features of shape {tuple(patch.shape)}, expected (B, C, h, w)")
    if cls is not None and (cls.ndim != 2 or cls.shape[0] != n):
        cls = None
    return patch, cls


def _call_backbone(model: BackboneLike, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    try:
        out = model.patch_features(x, return_cls=True)
    except TypeError:
        out = model.patch_features(x)
    return _checked(out, x.shape[0])


def _call_backbone_raw(model: BackboneLike, x: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor | None], ...]:
    """(final tokens, raw tokens) of one forward pass: the last block's output and its final normalisation
    (:meth:`splatdistill.backbones.base.Backbone.forward_block_tokens`). A backbone without that interface,
    or without a final normalisation, gives the same tokens twice."""
    norm = getattr(model, "apply_final_norm", None)
    try:
        raw = _checked(model.patch_features(x, return_cls=True, final_norm=False), x.shape[0])  # type: ignore[call-arg]
    except TypeError:
        final = _call_backbone(model, x)
        return final, final
    return (_checked(norm(*raw), x.shape[0]) if norm is not None else raw), raw


@torch.inference_mode()
def extract_features(
    model: BackboneLike,
    images: torch.Tensor | Mirrored,
    batch_size: int = 16,
    device: str = "cpu",
    desc: str = "features",
    progress: bool = True,
    raw: bool = False,
) -> tuple[torch.Tensor | None, ...]:
    """Patch features (N, C, h, w) and CLS tokens (N, C) or None for (N, 3, H, W) images in [0, 1]; with
    ``raw``, also the tokens before the final normalisation: ``(patch, cls, raw_patch, raw_cls)``. They
    come in their storage precision (:func:`_storage`: float16 unless that would overflow).

    Images are resized to a multiple of the backbone's patch size first (a no-op for the sizes the
    runner prepares), so the patch grid covers the whole image.
    """

    p = int(getattr(model, "patch_size", 1) or 1)
    H, W = images.shape[-2:]
    size = (max(p, int(round(H / p)) * p), max(p, int(round(W / p)) * p))
    if hasattr(model, "eval"):
        model.eval()
    kinds = 2 if raw else 1
    n = images.shape[0]
    # Filled batch by batch in the precision they are stored in (float16 unless a value would overflow it):
    # a dataset's features never exist as a float32 copy or as a list of batches beside the result.
    out: list[list[torch.Tensor | None]] = [[None, None] for _ in range(kinds)]
    has_cls = [True] * kinds
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        if isinstance(images, Mirrored):
            batch = images.images[start : start + batch_size].flip(-1)
        else:
            batch = images[start : start + batch_size]
        x = resize_images(batch.to(device=device, dtype=torch.float32), size)
        outs = _call_backbone_raw(model, x) if raw else (_call_backbone(model, x),)
        for k, (patch, cls) in enumerate(outs):
            has_cls[k] &= cls is not None
            for slot, t in enumerate((patch, cls if has_cls[k] else None)):
                if t is None:
                    continue
                t = _storage(t.detach().float().cpu())
                dest = out[k][slot]
                if dest is None:
                    dest = out[k][slot] = torch.empty((n, *t.shape[1:]), dtype=t.dtype)
                elif dest.dtype != t.dtype:  # a batch that float16 cannot hold: keep the group in float32
                    dest = out[k][slot] = dest.float()
                dest[start : start + t.shape[0]] = t
    result: list[torch.Tensor | None] = []
    for k in range(kinds):
        result.append(out[k][0] if out[k][0] is not None else torch.zeros(0))
        result.append(out[k][1] if has_cls[k] else None)
    return tuple(result)


@dataclass(frozen=True)
class Mirrored:
    """A group of images read mirrored left-right, batch by batch: the mirrored copy of a whole held-out
    set (the depth probe's test-time flip) is never held in memory."""

    images: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.images.shape


def images_digest(images: dict[str, torch.Tensor | Mirrored]) -> str:
    """Hash of named image batches (their exact bytes and shapes): the data part of a cache key."""
    h = hashlib.sha256()
    for name in sorted(images):
        group = images[name]
        mirrored = isinstance(group, Mirrored)
        t = (group.images if mirrored else group).contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}{'|mirrored' if mirrored else ''}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _fits_half(t: torch.Tensor) -> bool:
    return not t.numel() or float(t.abs().max()) < 60000


def _storage(t: torch.Tensor) -> torch.Tensor:
    """The tensor as stored: float16, or float32 when float16 would overflow."""
    return t.half() if _fits_half(t) else t.float()


#: Which tokens a task reads: "final" (after the backbone's final normalisation, what the trainer uses)
#: or "raw" (the last block's output before it, what the paper's depth/normal probes and matcher read).
TokenKind = Literal["final", "raw"]


@dataclass
class FeatureSet:
    """Features of named image groups: ``patch[g]`` is (N, C, h, w), ``cls[g]`` (N, C) or None; ``raw_patch``
    and ``raw_cls`` the same before the final normalisation (None unless asked for). Held in their stored
    precision (float16, or float32 where float16 would overflow)."""

    patch: dict[str, torch.Tensor]
    cls: dict[str, torch.Tensor | None]
    cache_path: Path | None = None
    cache_hit: bool = False
    seconds: float = 0.0
    raw_patch: dict[str, torch.Tensor] | None = None
    raw_cls: dict[str, torch.Tensor | None] | None = None

    def tokens(self, kind: TokenKind) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
        """(patch, cls) dictionaries of one kind of tokens."""
        if kind == "final":
            return self.patch, self.cls
        if self.raw_patch is None or self.raw_cls is None:
            raise ValueError("raw tokens were not extracted (get_features(..., raw=True))")
        return self.raw_patch, self.raw_cls


def safe_label(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:48] or "backbone"


def get_features(
    entry: BackboneEntry,
    images: dict[str, torch.Tensor],
    cache_dir: Path | None,
    batch_size: int = 16,
    device: str = "cpu",
    progress: bool = True,
    raw: bool = False,
) -> FeatureSet:
    """Features for every group of ``images``, from the cache when the key matches, else extracted and stored.
    ``raw`` also extracts the tokens before the final normalisation (same forward pass, own cache file)."""

    t0 = time.perf_counter()
    key_src = {
        "version": CACHE_FORMAT_VERSION,
        "spec": entry.spec,
        "model": model_fingerprint(entry.model),  # type: ignore[arg-type]
        "images": images_digest(images),
    }
    if raw:  # only then, so the caches of runs without raw tokens keep their keys
        key_src["raw"] = True
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:20]
    # Named by spec, not label: two rows with the same weights share one file.
    path = None if cache_dir is None else Path(cache_dir) / f"{safe_label(entry.spec)}-{key}.safetensors"
    if path is not None and path.is_file():
        try:
            stored = load_file(str(path))
            kinds = {
                prefix: (
                    {g: stored[f"{g}.{prefix}patch"] for g in images},
                    {g: stored.get(f"{g}.{prefix}cls") for g in images},
                )
                for prefix in (("", "raw_") if raw else ("",))
            }
            return FeatureSet(*kinds[""], path, True, time.perf_counter() - t0, *kinds.get("raw_", (None, None)))
        except Exception:  # a truncated or foreign file: re-extract and overwrite it
            pass
    got: dict[str, tuple[dict, dict]] = {"": ({}, {}), "raw_": ({}, {})}
    for g, imgs in images.items():
        out = extract_features(entry.model, imgs, batch_size, device, f"{entry.label}: {g}", progress, raw)
        # extract_features returns the stored precision (float16 unless that overflows): cache hits give
        # identical numbers, and a dataset's features take half the memory; consumers compute in float32+
        for k, prefix in enumerate(("", "raw_") if raw else ("",)):
            got[prefix][0][g], got[prefix][1][g] = out[2 * k], out[2 * k + 1]
    if path is not None:
        tensors = {}
        for prefix, (patches, classes) in got.items():
            tensors.update({f"{g}.{prefix}patch": t for g, t in patches.items()})
            tensors.update({f"{g}.{prefix}cls": c for g, c in classes.items() if c is not None})
        atomic_write(
            path,
            lambda tmp: save_file(
                {k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={"key": json.dumps(key_src)}
            ),
        )
    raw_set = got["raw_"] if raw else (None, None)
    return FeatureSet(*got[""], path, False, time.perf_counter() - t0, *raw_set)


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
