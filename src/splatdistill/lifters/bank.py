"""The views a predictor trains and is evaluated on, held in memory at its resolution as one
:class:`~splatdistill.data.views.Views` (the "bank"), and the view pairs drawn from them (shared by
:mod:`~splatdistill.lifters.train_predictor` and :mod:`~splatdistill.lifters.evaluate`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from splatdistill.data.sampler import SamplerConfig, ViewSampler
from splatdistill.data.scene import Scene
from splatdistill.data.views import Views
from splatdistill.errors import UserError
from splatdistill.geometry.warp import warp_pixels
from splatdistill.splat.targets import teacher_tokens


def load_bank(
    scenes: Sequence[Scene],
    size: int | tuple[int, int],
    backbone=None,
    backbone_size: int = 224,
    progress: bool = True,
    desc: str = "views",
    need_depth: bool = True,
) -> Views:
    """Every view of ``scenes`` resized to ``size``, held in memory as one :class:`Views` of N rows (``ids``:
    view numbers, ``scene_index``: positions in ``scenes``); with ``backbone``, also its patch features as
    ``tokens`` (float16, from a ``backbone_size`` copy of the full-resolution image, as the Splat-and-Distill
    teacher sees it), computed on the backbone's device and kept on the CPU with the rest (batches go to the
    device per step)."""
    views, scene_index, tokens = [], [], []
    total = sum(len(s) for s in scenes)
    bar = tqdm(total=total, desc=f"loading {desc}", unit="view", disable=not progress, leave=False)
    pending: list[Tensor] = []  # full-resolution images waiting for the backbone

    def flush() -> None:
        if pending:
            tokens.append(teacher_tokens(backbone, pending, backbone_size).half())
            pending.clear()

    for si, scene in enumerate(scenes):
        for vi in range(len(scene)):
            full = scene.load_view(vi)
            if full.depth is None and need_depth:
                raise UserError(
                    f"scene {scene.name} view {vi} has no depth: the predictor is trained and "
                    "evaluated with depth supervision (supervision=photometric trains from posed images "
                    "alone)",
                    scene.root,
                )
            views.append(
                Views.from_view_data(
                    [full],
                    [vi],
                    mask_mode=None,
                    size=size,
                    scene=scene.name,
                    normals=full.normals is not None,
                    semantic=False,
                )
            )
            scene_index.append(si)
            if backbone is not None:
                pending.append(torch.from_numpy(full.image).permute(2, 0, 1))
                if len(pending) == 8:
                    flush()
            bar.update(1)
    flush()
    bar.close()
    if not views:
        raise UserError("no views to load (empty split?)")
    if not all(v.normals is not None for v in views):
        views = [replace(v, normals=None) for v in views]
    return replace(
        Views.cat(views), scene_index=torch.tensor(scene_index), tokens=torch.cat(tokens) if tokens else None
    )


def scene_rows(bank: Views, count: int | None = None) -> list[list[int]]:
    """Bank rows of each scene (scene number -> rows, in view order), for ``count`` scenes (default: up to
    the last scene with views)."""
    n = int(bank.scene_index.max()) + 1 if count is None else count
    rows: list[list[int]] = [[] for _ in range(n)]
    for r, si in enumerate(bank.scene_index.tolist()):
        rows[si].append(r)
    return rows


def overlap(bank: Views, a: int, b: int, step: int = 4) -> float:
    """Share of view a's valid pixels (on a coarse grid) that land inside view b in front of it
    (1 when view a has no depth: pairs are then chosen by their frame gap alone)."""
    H, W = bank.depths.shape[-2:]
    d = bank.depths[a, step // 2 :: step, step // 2 :: step]
    ys, xs = torch.meshgrid(
        torch.arange(step // 2, H, step).float() + 0.5, torch.arange(step // 2, W, step).float() + 0.5, indexing="ij"
    )
    ok = d > 0
    if not bool(ok.any()):
        return 1.0
    uv_a = torch.stack([xs, ys], -1)[ok]
    cams = bank.cameras
    uv, z = warp_pixels(
        uv_a, d[ok], cams.Ks[a], torch.linalg.inv(cams.viewmats[a]), cams.Ks[b], torch.linalg.inv(cams.viewmats[b])
    )
    inside = (z > 1e-3) & (uv >= 0).all(1) & (uv[:, 0] < W) & (uv[:, 1] < H)
    return float(inside.float().sum() / max(1, int(ok.numel())))


def training_pairs(bank: Views, max_gap: int, min_overlap: float) -> list[tuple[int, int]]:
    """Bank-row pairs (a, b), a < b, of one scene, at most ``max_gap`` frames apart, mutually overlapping."""
    pairs = []
    for rows in scene_rows(bank):
        for i, a in enumerate(rows):
            for b in rows[i + 1 : i + 1 + max_gap]:
                if min(overlap(bank, a, b), overlap(bank, b, a)) >= min_overlap:
                    pairs.append((a, b))
    return pairs


def snd_context_pairs(bank: Views, scenes: Sequence[Scene], per_scene: int, seed: int = 0) -> list[tuple[int, int]]:
    """The context pairs the Splat-and-Distill trainer would draw from each of ``scenes`` (the bank's scenes,
    sampler defaults)."""
    rows = scene_rows(bank, len(scenes))
    out = []
    for si, scene in enumerate(scenes):
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
                out.append((rows[si][i], rows[si][j]))
            if len(seen) >= per_scene:
                break
    return out


def pair_views(bank: Views, pairs: Sequence[tuple[int, int]], device=None) -> Views:
    """The bank rows of ``pairs`` as (B, 2) views on ``device`` (None: where the bank is), tokens in float32."""
    idx = torch.tensor([list(p) for p in pairs])  # (B, 2)
    out = Views(
        bank.images[idx],
        bank.cameras[idx],
        depths=bank.depths[idx],
        normals=None if bank.normals is None else bank.normals[idx],
        tokens=None if bank.tokens is None else bank.tokens[idx].float(),
    )
    return out if device is None else out.to(device)
