"""Small visualisation helpers shared by the CLI, the evaluation report and the demo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from splatdistill.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


def read_image(path: str | Path) -> np.ndarray:
    """RGB float32 (H, W, 3) in [0, 1]; a one-line UserError for missing or non-image files."""
    path = Path(path)
    if not path.exists():
        raise UserError("image not found", path)
    if path.is_dir():
        raise UserError("expected an image file, got a directory", path)
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        kind = "not an image" if isinstance(exc, UnidentifiedImageError) else f"unreadable image ({exc})"
        raise UserError(kind, path) from None
    return np.asarray(rgb, dtype=np.float32) / 255.0


def pca_rgb(features: list[torch.Tensor] | torch.Tensor, n: int = 3) -> list[np.ndarray]:
    """Project feature maps (C, h, w) onto their joint top-3 principal components as RGB in [0, 1].

    One PCA is fitted over all maps together, so colours are comparable across images/backbones.
    Each component is stretched between its 1st and 99th percentile.
    """
    maps = [features] if isinstance(features, torch.Tensor) and features.ndim == 3 else list(features)
    flat = torch.cat([f.detach().float().flatten(1).T for f in maps], dim=0)  # (N, C)
    mean = flat.mean(0, keepdim=True)
    centred = flat - mean
    # torch.pca_lowrank is randomised; a full SVD of the (C x C) covariance is exact and cheap for C <= 2k
    cov = centred.T @ centred / max(1, centred.shape[0] - 1)
    _, vecs = torch.linalg.eigh(cov.double())
    basis = vecs[:, -n:].flip(1).float()
    proj = centred @ basis
    lo = torch.quantile(proj, 0.01, dim=0)
    hi = torch.quantile(proj, 0.99, dim=0)
    proj = ((proj - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    out, start = [], 0
    for f in maps:
        h, w = f.shape[-2:]
        out.append(proj[start : start + h * w].reshape(h, w, n).numpy())
        start += h * w
    return out


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def resize_nearest(img: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(to_uint8(img)).resize((width, height), Image.NEAREST), dtype=np.float32) / 255


def side_by_side(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    h = max(i.shape[0] for i in images)
    parts = []
    for k, img in enumerate(images):
        pad = np.ones((h, img.shape[1], 3), np.float32)
        pad[: img.shape[0]] = img
        parts.append(pad)
        if k < len(images) - 1:
            parts.append(np.ones((h, gap, 3), np.float32))
    return np.concatenate(parts, axis=1)


def save_png(img: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(img)).save(path)
    return path
