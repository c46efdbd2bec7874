"""Small visualisation helpers shared by the CLI, the evaluation report and the demo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from splatdistill.atomic import atomic_write
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


def pca_rgb(feats: list[torch.Tensor] | torch.Tensor, n_fit: int = 20000, seed: int = 0) -> list[np.ndarray]:
    """Project (C, h, w) feature grids (a list, or one grid) onto 3 principal components fitted jointly.

    Joint fitting makes the colours comparable between the views; each component is mapped to [0, 1]
    with the 1st/99th percentiles over all views. Returns (h, w, 3) float arrays.
    """
    feats = [f.detach().float() for f in ([feats] if isinstance(feats, torch.Tensor) and feats.ndim == 3 else feats)]
    flat = torch.cat([f.flatten(1).T for f in feats]).double()
    g = torch.Generator().manual_seed(seed)
    fit = flat[torch.randperm(flat.shape[0], generator=g)[:n_fit]] if flat.shape[0] > n_fit else flat
    mean = fit.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(fit - mean, full_matrices=False)
    comps = v[:3].T  # (C, 3)
    # Deterministic sign: the largest-magnitude loading of each component is positive.
    signs = torch.sign(comps.gather(0, comps.abs().argmax(0, keepdim=True)))
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    proj = [((f.flatten(1).T.double() - mean) @ comps) for f in feats]
    allp = torch.cat(proj)
    if allp.shape[1] < 3:
        allp = F.pad(allp, (0, 3 - allp.shape[1]))
        proj = [F.pad(p, (0, 3 - p.shape[1])) for p in proj]
    lo = torch.quantile(allp, 0.01, dim=0)
    hi = torch.quantile(allp, 0.99, dim=0)
    out = []
    for f, p in zip(feats, proj):
        rgb = ((p - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
        out.append(rgb.T.reshape(3, f.shape[1], f.shape[2]).permute(1, 2, 0).numpy())
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
    """Write ``img`` as a PNG (atomically, a failed write is exit 4: :mod:`splatdistill.atomic`)."""
    image = Image.fromarray(to_uint8(img))
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
