"""The views a predictor trains and is evaluated on, held in memory at its resolution, and the view
pairs drawn from them (shared by :mod:`~splatdistill.lifters.train_predictor` and
:mod:`~splatdistill.lifters.evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from splatdistill.data.sampler import SamplerConfig, ViewSampler
from splatdistill.data.scene import Scene
from splatdistill.data.views import Views
from splatdistill.errors import UserError
from splatdistill.geometry.warp import warp_pixels


@dataclass
class ViewBank:
    """Every view of some scenes, resized to the predictor's resolution, held in memory."""

    images: Tensor  # (N, 3, H, W) float
    depths: Tensor  # (N, H, W), 0 = unknown
    normals: Tensor | None  # (N, H, W, 3) camera frame, or None when the data has none
    Ks: Tensor  # (N, 3, 3) at H x W
    viewmats: Tensor  # (N, 4, 4) world-to-camera
    index: list[tuple[int, int]]  # bank row -> (scene number, view number)
    scene_rows: list[list[int]]  # scene number -> bank rows
    scenes: list[Scene]
    tokens: Tensor | None = None  # (N, C, h, w) backbone patch features (float16), if computed

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


def load_bank(scenes: Sequence[Scene], size: int | tuple[int, int], backbone=None, backbone_size: int = 224,
              progress: bool = True, desc: str = "views", need_depth: bool = True) -> ViewBank:
    """Load and resize every view; with ``backbone``, also its patch features (from a ``backbone_size``
    copy of the full-resolution image, as the Splat-and-Distill teacher sees it), computed on the
    backbone's device and kept on the CPU with the rest of the bank (batches go to the device per step)."""
    views, index, rows, tokens = [], [], [], []
    param = next(backbone.parameters(), None) if backbone is not None else None
    device = param.device if param is not None else torch.device("cpu")
    total = sum(len(s) for s in scenes)
    bar = tqdm(total=total, desc=f"loading {desc}", unit="view", disable=not progress, leave=False)
    pending: list[Tensor] = []

    def flush() -> None:
        if pending:
            with torch.no_grad():
                tokens.append(backbone.patch_features(torch.stack(pending).to(device)).half().cpu())
            pending.clear()

    for si, scene in enumerate(scenes):
        rows.append([])
        for vi in range(len(scene)):
            full = scene.load_view(vi)
            if full.depth is None and need_depth:
                raise UserError(f"scene {scene.name} view {vi} has no depth: the predictor is trained and "
                                "evaluated with depth supervision (supervision=photometric trains from posed images "
                                "alone)", scene.root)
            views.append(Views.from_view_data([full], [vi], mask_mode=None, size=size, scene=scene.name,
                                              normals=full.normals is not None))
            rows[-1].append(len(index))
            index.append((si, vi))
            if backbone is not None:
                img = torch.from_numpy(full.image).permute(2, 0, 1)[None].float()
                pending.append(F.interpolate(img, size=(backbone_size, backbone_size), mode="bilinear",
                                             align_corners=False, antialias=True)[0])
                if len(pending) == 8:
                    flush()
            bar.update(1)
    flush()
    bar.close()
    if not index:
        raise UserError("no views to load (empty split?)")
    normals = torch.cat([v.normals for v in views]) if all(v.normals is not None for v in views) else None
    return ViewBank(torch.cat([v.images for v in views]), torch.cat([v.depths for v in views]), normals,
                    torch.cat([v.Ks for v in views]), torch.cat([v.viewmats for v in views]), index, rows,
                    list(scenes), torch.cat(tokens) if tokens else None)


def overlap(bank: ViewBank, a: int, b: int, step: int = 4) -> float:
    """Share of view a's valid pixels (on a coarse grid) that land inside view b in front of it
    (1 when view a has no depth: pairs are then chosen by their frame gap alone)."""
    H, W = bank.depths.shape[-2:]
    d = bank.depths[a, step // 2::step, step // 2::step]
    ys, xs = torch.meshgrid(torch.arange(step // 2, H, step).float() + 0.5,
                            torch.arange(step // 2, W, step).float() + 0.5, indexing="ij")
    ok = d > 0
    if not bool(ok.any()):
        return 1.0
    uv_a = torch.stack([xs, ys], -1)[ok]
    uv, z = warp_pixels(uv_a, d[ok], bank.Ks[a], torch.linalg.inv(bank.viewmats[a]), bank.Ks[b],
                        torch.linalg.inv(bank.viewmats[b]))
    inside = (z > 1e-3) & (uv >= 0).all(1) & (uv[:, 0] < W) & (uv[:, 1] < H)
    return float(inside.float().sum() / max(1, int(ok.numel())))


def training_pairs(bank: ViewBank, max_gap: int, min_overlap: float) -> list[tuple[int, int]]:
    """Bank-row pairs (a, b), a < b, of one scene, at most ``max_gap`` frames apart, mutually overlapping."""
    pairs = []
    for rows in bank.scene_rows:
        for i, a in enumerate(rows):
            for b in rows[i + 1: i + 1 + max_gap]:
                if min(overlap(bank, a, b), overlap(bank, b, a)) >= min_overlap:
                    pairs.append((a, b))
    return pairs


def snd_context_pairs(bank: ViewBank, per_scene: int, seed: int = 0) -> list[tuple[int, int]]:
    """The context pairs the Splat-and-Distill trainer would draw from each scene (sampler defaults)."""

    out = []
    for si, scene in enumerate(bank.scenes):
        try:
            sampler = ViewSampler([scene], SamplerConfig(), seed=seed)
        except UserError:
            continue  # too few views for a context pair with a target between
        seen: set[tuple[int, int]] = set()
        for k in range(per_scene * 4):
            i, j = sampler.sample_at(k).context
            key = (min(i, j), max(i, j))
            if key not in seen:
                seen.add(key)
                out.append((bank.scene_rows[si][i], bank.scene_rows[si][j]))
            if len(seen) >= per_scene:
                break
    return out


def batch_from_pairs(bank: ViewBank, pairs: Sequence[tuple[int, int]], device=None) -> dict[str, Tensor]:
    """The bank rows of ``pairs`` as (B, 2, ...) tensors on ``device`` (None: where the bank is)."""
    idx = torch.tensor([list(p) for p in pairs])  # (B, 2)
    out = {"images": bank.images[idx], "depths": bank.depths[idx], "Ks": bank.Ks[idx], "viewmats": bank.viewmats[idx]}
    if bank.normals is not None:
        out["normals"] = bank.normals[idx]
    if bank.tokens is not None:
        out["guide"] = bank.tokens[idx].float()
    return {k: v.to(device) for k, v in out.items()}
