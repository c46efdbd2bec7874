"""Depth errors of a learned predictor on any posed dataset with depth (``splatdistill lifter eval``).

Why a module of its own: the trainer measures on the held-out rooms, but a lifter has to hold on the
user's captures, which come in every size: a two-view stereo pair, an RGB-D sequence, a few photos
registered by structure from motion. So the evaluation

- takes the scenes of the requested splits, or every scene when the dataset has none of them (a
  capture of one's own is a single scene in split ``train``);
- evaluates on the context pairs the Splat-and-Distill trainer draws where its sampler accepts the
  scene, and on every overlapping view pair of a scene too small for it (a stereo pair included);
- measures against dense depth (sensors, stereo ground truth) or sparse depth: the points of a COLMAP
  model that each view observes, projected at the evaluation resolution (structure from motion);
- reports AbsRel / RMSE / delta1 and a scale-invariant AbsRel (each view's prediction scaled by
  median(gt) / median(pred) first), since an SfM model has no metric scale, beside a constant depth
  (the evaluated views' median ground truth: the best single guess one could make) and the
  predictor's coarse cost-volume estimate;
- splits the pairs by their parallax (focal x baseline / median depth, in pixels), because two views
  without parallax carry no depth: a capture whose camera mostly turns in place cannot beat a
  constant there, and the breakdown says so instead of hiding it in the mean.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from splatdistill.backbones import load_backbone
from splatdistill.data import load_dataset, load_splits
from splatdistill.data.formats import colmap
from splatdistill.data.sampler import SamplerConfig, ViewSampler
from splatdistill.data.scene import Scene
from splatdistill.data.views import Views
from splatdistill.devices import resolve_device
from splatdistill.errors import UserError
from splatdistill.geometry.cameras import Cameras
from splatdistill.geometry.warp import warp_pixels
from splatdistill.lifters.bank import load_bank, pair_views, scene_rows, snd_context_pairs
from splatdistill.lifters.predictor import (
    PLANE_MODES,
    GaussianPredictor,
    load_predictor,
    predictor_input_size,
    read_predictor_meta,
)
from splatdistill.lifters.pretrained import resolve_predictor
from splatdistill.threads import torch_threads


def depth_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """AbsRel, RMSE and delta < 1.25 over pixels with gt > 0 (pooled), and for (N, H, W) maps also the
    scale-invariant AbsRel: each view's prediction multiplied by median(gt) / median(pred) first."""
    m = gt > 0
    p, g = np.maximum(pred[m].astype(np.float64), 1e-6), gt[m].astype(np.float64)
    ratio = np.maximum(p / g, g / p)
    out = {
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "pixels": int(m.sum()),
    }
    if pred.ndim == 3:
        num, den = 0.0, 0
        for pv, gv in zip(pred, gt):
            mv = gv > 0
            if mv.any():
                pp, gg = np.maximum(pv[mv].astype(np.float64), 1e-6), gv[mv].astype(np.float64)
                num += float(np.sum(np.abs(pp * (np.median(gg) / np.median(pp)) - gg) / gg))
                den += int(mv.sum())
        out["abs_rel_si"] = num / max(den, 1)
    return out


#: parallax bins (pixels at the evaluation resolution) of :func:`parallax_bins`
PARALLAX_EDGES = (0.0, 2.0, 5.0, 10.0, float("inf"))


def pair_parallax(cameras: Cameras, depths: torch.Tensor) -> float:
    """Median disparity (pixels) a pair of views can show: mean focal x camera baseline / median depth,
    for two ``cameras`` at the depths' resolution and their depths (2, H, W) (0 = none); nan when
    neither view has depth. A pure rotation gives 0 whatever it sees."""
    valid = depths[depths > 0]
    if valid.numel() == 0:
        return float("nan")
    centres = cameras.centers.double()
    baseline = float((centres[0] - centres[1]).norm())
    focal = float(cameras.Ks[:, [0, 1], [0, 1]].double().mean())
    return focal * baseline / float(valid.double().median())


def parallax_bins(parallax: Sequence[float], pred: np.ndarray, gt: np.ndarray, constant: float) -> list[dict[str, Any]]:
    """Errors of the predictor and of the constant per :data:`PARALLAX_EDGES` bin; ``parallax`` has one
    value per pair and ``pred`` / ``gt`` (2 x pairs, H, W) both views of each pair in order."""
    per_view = np.repeat(np.asarray(parallax, dtype=np.float64), 2)
    rows = []
    for lo, hi in zip(PARALLAX_EDGES[:-1], PARALLAX_EDGES[1:]):
        m = (per_view >= lo) & (per_view < hi) & np.array([(g > 0).any() for g in gt])
        if m.any():
            rows.append(
                {
                    "parallax_px": [lo, hi if np.isfinite(hi) else None],  # None: no upper end (valid JSON)
                    "pairs": int(m.sum()) // 2,
                    "predictor": depth_errors(pred[m], gt[m]),
                    "constant": depth_errors(np.full_like(gt[m], constant), gt[m]),
                }
            )
    return rows


def sparse_depth(points: np.ndarray, K: np.ndarray, viewmat: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) depth of world ``points`` (N, 3) seen by a camera (K at H x W, world-to-camera ``viewmat``):
    the nearest point per pixel, 0 where none lands."""
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    uv = cam[:, :2] / np.maximum(z, 1e-9)[:, None] @ K[:2, :2].T + K[:2, 2]
    x, y = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    ok = (z > 1e-6) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
    depth = np.full((height, width), np.inf)
    np.minimum.at(depth, (y[ok], x[ok]), z[ok])
    return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)


def add_sparse_depth(bank: Views, scenes: Sequence[Scene]) -> int:
    """Fill the depth of views of the ``bank`` (:func:`~splatdistill.lifters.bank.load_bank` of ``scenes``)
    without any from the COLMAP points they observe (scenes loaded from a COLMAP model); returns how many
    views got sparse depth."""
    filled = 0
    for scene, rows in zip(scenes, scene_rows(bank, len(scenes))):
        rows = [r for r in rows if not bool((bank.depths[r] > 0).any())]
        if not rows or scene.root is None or colmap.find_model_dir(Path(scene.root)) is None:
            continue
        points = colmap.observed_points(Path(scene.root))
        h, w = bank.depths.shape[-2:]
        for r in rows:
            name = scene.views[int(bank.ids[r])].name
            if name in points and len(points[name]):
                bank.depths[r] = torch.from_numpy(
                    sparse_depth(
                        points[name],
                        bank.cameras.Ks[r].double().numpy(),
                        bank.cameras.viewmats[r].double().numpy(),
                        h,
                        w,
                    )
                )
                filled += 1
    return filled


def seen_share(bank: Views, a: int, b: int) -> float:
    """Share of view a's pixels with depth (dense or sparse) that land inside view b in front of it
    (1 when view a has no depth)."""
    H, W = bank.depths.shape[-2:]
    ys, xs = torch.nonzero(bank.depths[a] > 0, as_tuple=True)
    if len(ys) == 0:
        return 1.0
    uv_a = torch.stack([xs.float() + 0.5, ys.float() + 0.5], -1)
    cams = bank.cameras
    uv, z = warp_pixels(
        uv_a,
        bank.depths[a][ys, xs],
        cams.Ks[a],
        torch.linalg.inv(cams.viewmats[a]),
        cams.Ks[b],
        torch.linalg.inv(cams.viewmats[b]),
    )
    inside = (z > 1e-3) & (uv >= 0).all(1) & (uv[:, 0] < W) & (uv[:, 1] < H)
    return float(inside.float().mean())


def eval_pairs(
    bank: Views, scenes: Sequence[Scene], per_scene: int, seed: int = 0, min_overlap: float = 0.3
) -> list[tuple[int, int]]:
    """The context pairs the Splat-and-Distill trainer draws from each scene (sampler defaults), or,
    for a scene too small for its sampler, every view pair that sees ``min_overlap`` of each other
    (a two-view capture: its one pair)."""
    out = snd_context_pairs(bank, scenes, per_scene, seed=seed)  # leaves out the scenes its sampler refuses
    for scene, rows in zip(scenes, scene_rows(bank, len(scenes))):
        try:
            ViewSampler([scene], SamplerConfig(), seed=seed)
            continue
        except UserError:
            pass
        out += [
            (a, b)
            for i, a in enumerate(rows)
            for b in rows[i + 1 :]
            if len(rows) == 2 or min(seen_share(bank, a, b), seen_share(bank, b, a)) >= min_overlap
        ]
    return out


@torch.no_grad()
def evaluate_predictor(
    model: GaussianPredictor,
    bank: Views,
    scenes: Sequence[Scene],
    pairs: Sequence[tuple[int, int]],
    constant_depth: float | None = None,
    batch_size: int = 4,
    progress: bool = False,
    train_median: float | None = None,
) -> dict[str, Any]:
    """Depth errors of the predictor on both views of every pair (pooled over pixels; also per parallax
    bin, :func:`parallax_bins`), of its coarse cost-volume estimate alone, and of a constant depth (``constant_depth``, default the median ground
    truth of the evaluated views; with ``train_median`` also that constant, the training data's median).
    ``bank`` is :func:`~splatdistill.lifters.bank.load_bank` of ``scenes``; its ``tokens`` are the guide
    features when the predictor matches on
    backbone features. The pairs run on the model's device; the errors are computed on the CPU in float64."""
    if not pairs:
        raise UserError("no view pairs to evaluate on (the scenes' views do not overlap)")
    model.eval()
    device = next(model.parameters()).device
    preds, coarse, gts, scene_of, parallax = [], [], [], [], []
    t0 = time.perf_counter()
    for s in tqdm(range(0, len(pairs), batch_size), desc="evaluating", unit="batch", disable=not progress, leave=False):
        chunk = pairs[s : s + batch_size]
        scene_of += [scenes[int(bank.scene_index[r])].name for pair in chunk for r in pair]
        b = pair_views(bank, chunk, device)
        parallax += [  # from the bank, on the CPU, whatever device the pairs run on
            pair_parallax(bank.cameras[list(pair)], bank.depths[list(pair)]) for pair in chunk
        ]
        out = model(b)
        preds.append(out.depth.flatten(0, 1).cpu().numpy())
        up = F.interpolate(
            out.coarse_t.flatten(0, 1)[:, None], size=b.depths.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0].unflatten(0, out.coarse_t.shape[:2])
        coarse.append(out.depth_of(up, model.config).flatten(0, 1).cpu().numpy())
        gts.append(b.depths.flatten(0, 1).cpu().numpy())
    seconds = time.perf_counter() - t0
    pred, gt = np.concatenate(preds), np.concatenate(gts)
    if not (gt > 0).any():
        raise UserError("the evaluated views have no ground-truth depth")
    result = {
        "predictor": depth_errors(pred, gt),
        "coarse_only": depth_errors(np.concatenate(coarse), gt),
        "pairs": len(pairs),
        "views": int(pred.shape[0]),
        "seconds_per_pair": seconds / len(pairs),
    }
    names = np.array(scene_of)
    result["per_scene_abs_rel"] = {
        n: depth_errors(pred[names == n], gt[names == n])["abs_rel"] for n in dict.fromkeys(scene_of)
    }
    value = float(np.median(gt[gt > 0])) if constant_depth is None else float(constant_depth)
    result["constant_depth"] = {**depth_errors(np.full_like(gt, value), gt), "value": value}
    result["by_parallax"] = parallax_bins(parallax, pred, gt, value)
    if train_median:
        result["constant_train_median"] = {**depth_errors(np.full_like(gt, train_median), gt), "value": train_median}
    return result


def evaluate_saved_predictor(
    path: str | Path,
    data: str = "rooms",
    splits: Sequence[str] = ("val", "test"),
    pairs_per_scene: int = 6,
    backbone: str | None = None,
    seed: int = 0,
    progress: bool = True,
    threads: int = 1,
    planes: str | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Depth errors of a saved predictor on ``data`` (see the module docstring). ``backbone`` swaps the
    guide features' backbone (e.g. a Splat-and-Distill teacher); ``planes`` overrides where its planes
    go ("fixed" / "baseline", :class:`~splatdistill.lifters.predictor.PredictorConfig`); ``device``
    (auto: CUDA when present) is where the predictor and the guide backbone run."""
    dev = resolve_device(device)  # a device this machine lacks stops here, before any loading
    with torch_threads(threads):
        return _evaluate_saved(path, data, splits, pairs_per_scene, backbone, seed, progress, planes, dev)


def _evaluate_saved(path, data, splits, pairs_per_scene, backbone, seed, progress, planes, dev) -> dict[str, Any]:
    path = resolve_predictor(str(path))
    model = load_predictor(path, dev)
    pcfg = model.config
    if planes is not None:
        if planes not in PLANE_MODES:
            raise UserError(f"planes must be one of {', '.join(PLANE_MODES)}, got {planes!r}")
        pcfg.planes = planes
    root, split_scenes = load_splits(data, [s for s in splits if s != "all"])
    scenes = [s for sp in splits if sp != "all" for s in split_scenes[sp]]
    note = None
    if not scenes:  # a capture of one's own: no held-out split, so all of it
        scenes = load_dataset(root)
        if "all" not in splits:
            note = f"no scenes in split(s) {', '.join(splits)}: evaluating on all {len(scenes)} scene(s)"
        splits = ["all"]
    bb = None
    spec = backbone or pcfg.backbone
    if pcfg.uses_backbone:
        bb = load_backbone(spec, device=dev).eval()
        if bb.embed_dim != pcfg.backbone_dim:
            raise UserError(
                f"backbone {spec} gives {bb.embed_dim}-channel features; the predictor expects {pcfg.backbone_dim}"
            )
    elif backbone:
        raise UserError("this predictor matches on its own CNN features; --backbone does not apply")
    first = scenes[0].views[0]
    size = predictor_input_size(first.height, first.width, pcfg.image_size)
    bank = load_bank(scenes, size, bb, pcfg.backbone_size, progress, "evaluated views", need_depth=False)
    sparse = add_sparse_depth(bank, scenes)
    if not bool((bank.depths > 0).any()):
        raise UserError("no depth to evaluate against: the dataset has no depth maps and no COLMAP points", root)
    pairs = eval_pairs(bank, scenes, pairs_per_scene, seed=seed)
    res = evaluate_predictor(
        model, bank, scenes, pairs, progress=progress, train_median=json_meta(path).get("train_median_depth")
    )
    res.update(
        {
            "splits": list(splits),
            "scenes": [s.name for s in scenes],
            "guide_backbone": spec if bb else None,
            "size": list(size),
            "planes": pcfg.planes,
            "sparse_depth_views": sparse,
            "note": note,
            "device": str(dev),
        }
    )
    return res


def json_meta(path: str | Path) -> dict[str, Any]:
    """The training metadata (``meta``) of a saved predictor's ``predictor.json``."""
    return read_predictor_meta(path).get("meta", {})
