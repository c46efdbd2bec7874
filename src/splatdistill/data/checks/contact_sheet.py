"""Contact sheets: one PNG to eyeball a dataset (views of several scenes plus one view's ground truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from splatdistill.data import io
from splatdistill.data.formats.native import load_native


def _colorize_ids(ids: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(12345)
    lut = rng.uniform(0.15, 1.0, (max(int(ids.max(initial=0)) + 2, 2), 3)).astype(np.float32)
    out = lut[np.clip(ids, -1, None) + 1]
    out[ids < 0] = 0
    return out


def _colorize_depth(depth: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    valid = depth > 0
    if not valid.any():
        return np.zeros((*depth.shape, 3), np.float32)
    lo, hi = np.percentile(depth[valid], [1, 99])
    d = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    out = colormaps["turbo"](d)[..., :3].astype(np.float32)
    out[~valid] = 0
    return out


def gt_row(view) -> list[np.ndarray]:
    """RGB, depth, normals, instance, semantic panels of one view (missing maps are black)."""
    h, w = view.image.shape[:2]
    blank = np.zeros((h, w, 3), np.float32)
    return [
        view.image,
        _colorize_depth(view.depth) if view.depth is not None else blank,
        (view.normals * 0.5 + 0.5) * np.any(view.normals != 0, -1, keepdims=True)
        if view.normals is not None
        else blank,
        _colorize_ids(view.instance) if view.instance is not None else blank,
        _colorize_ids(view.semantic) if view.semantic is not None else blank,
    ]


def write_contact_sheet(root: Path, out: Path, max_scenes: int = 8, views_per_scene: int = 6, tile: int = 160) -> Path:
    """Grid of ``views_per_scene`` evenly spaced views for up to ``max_scenes`` scenes, then GT panels."""

    scenes = load_native(root)
    rows: list[list[np.ndarray]] = []
    labels: list[str] = []
    for scene in scenes[:max_scenes]:
        idx = np.linspace(0, len(scene) - 1, min(views_per_scene, len(scene))).round().astype(int)
        rows.append([scene.load_view(int(i)).image for i in idx])
        labels.append(f"{scene.name} ({scene.split})")
    for scene in scenes[:2]:
        rows.append(gt_row(scene.load_view(0)))
        labels.append(f"{scene.name} view 0: rgb depth normals instance semantic")
    ncol = max(len(r) for r in rows)
    sheet = np.ones((len(rows) * (tile + 14), ncol * tile, 3), np.float32)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize((tile, tile), Image.BILINEAR)
            y = r * (tile + 14) + 14
            sheet[y : y + tile, c * tile : (c + 1) * tile] = np.asarray(pil, np.float32) / 255
    pil = Image.fromarray((sheet * 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for r, label in enumerate(labels):
        draw.text((4, r * (tile + 14) + 1), label, fill=(0, 0, 0))
    io.write_rgb(out, np.asarray(pil))
    return out
