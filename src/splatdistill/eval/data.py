"""Data preparation for the evaluation: which views, at which sizes, with which ground truth, and the view pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from splatdistill.data import ROOMS, load_dataset
from splatdistill.data.formats.middlebury import load_middlebury
from splatdistill.data.scene import Scene, ViewData
from splatdistill.data.views import Views, fit_size
from splatdistill.errors import UserError
from splatdistill.eval import benchmarks  # noqa: F401  (registers the paper's layouts with load_dataset)
from splatdistill.eval import correspondence as corr
from splatdistill.eval.config import PAIR_TASKS, PROBE_TASKS, EvalConfig


@dataclass
class ViewSet:
    """Loaded views of one role, with backbone-ready images of one shared size."""

    views: list[ViewData]
    groups: list[str]  # scene name per view
    images: torch.Tensor  # (N, 3, Hi, Wi) float16 in [0, 1]


@dataclass
class TrainTargets:
    """Train-split ground truth sampled onto the probes' loss grid (None where the data has none)."""

    depth: torch.Tensor | None  # (N, Hl, Wl), 0 = invalid
    normals: torch.Tensor | None  # (N, 3, Hl, Wl), 0 = invalid
    semantic: torch.Tensor | None  # (N, Hl, Wl) int64, -1 = ignore


@dataclass
class PreparedData:
    name: str
    input_size: tuple[int, int]
    train: ViewSet | None
    targets: TrainTargets | None
    held_out: ViewSet | None
    held_out_split: str
    class_names: list[str]
    extra: dict[str, ViewSet] = field(default_factory=dict)
    scenes: dict[str, int] = field(default_factory=dict)
    figure_views: list[int] = field(default_factory=list)  # held-out views shown in the figures (pixels kept)


#: Views decoded at a time while the backbone-ready tensors and the loss-grid targets are built: a dataset
#: of any length never sits in memory at full resolution.
LOAD_CHUNK = 32


def figure_indices(groups: list[str], n: int) -> list[int]:
    """First view of each scene, then second views, ... up to ``n``: varied scenes in the figures."""
    order: list[int] = []
    by_scene: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_scene.setdefault(g, []).append(i)
    depth = 0
    while len(order) < n and any(depth < len(v) for v in by_scene.values()):
        for v in by_scene.values():
            if depth < len(v) and len(order) < n:
                order.append(v[depth])
        depth += 1
    return order


def resolve_data(data: str | Path | Sequence[Scene]) -> tuple[str, list[Scene]]:
    """(name, scenes) for ``data``: in-memory scenes, ``"rooms"`` (built on first use), or a dataset path."""
    if isinstance(data, (list, tuple)):
        if not data or not all(isinstance(s, Scene) for s in data):
            raise UserError("data must be a dataset path, 'rooms', or a non-empty list of Scene objects")
        return "data", list(data)

    text = str(data)
    if text == ROOMS:
        return ROOMS, load_dataset(ROOMS)
    path = Path(text).expanduser()
    if not path.exists():
        raise UserError("data directory not found", path)
    return path.name or str(path), load_dataset(path)


def spread_views(scenes: Sequence[Scene], max_views: int) -> list[tuple[Scene, int]]:
    """Up to ``max_views`` (scene, view index) pairs, shared out evenly over the scenes and evenly
    spaced along each scene's views (deterministic: no randomness, so runs agree)."""
    sizes = [len(s) for s in scenes]
    quota = [0] * len(scenes)
    left = max_views
    while left > 0 and any(q < n for q, n in zip(quota, sizes)):
        for i in range(len(scenes)):
            if left > 0 and quota[i] < sizes[i]:
                quota[i] += 1
                left -= 1
    out = []
    for scene, q, n in zip(scenes, quota, sizes):
        if q == 0:
            continue
        idx = sorted(set(np.linspace(0, n - 1, q).round().astype(int).tolist()))
        out += [(scene, i) for i in idx]
    return out


def _class_lookup(scene: Scene, names: list[str]) -> np.ndarray:
    return np.array([names.index(n) for n in scene.class_names], dtype=np.int64)


def _remap_semantic(sem: np.ndarray | None, lookup: np.ndarray) -> np.ndarray | None:
    if sem is None or lookup.size == 0:
        return None
    sem = np.asarray(sem, dtype=np.int64)
    ok = (sem >= 0) & (sem < lookup.size)
    return np.where(ok, lookup[np.clip(sem, 0, lookup.size - 1)], -1)


def _load_train(
    items: list[tuple[Scene, int]],
    scenes: list[Scene],
    class_names: list[str],
    tasks: list[str],
    size: tuple[int, int],
    ls: tuple[int, int],
    progress: bool,
) -> tuple[ViewSet, TrainTargets]:
    """Backbone-ready images and loss-grid targets of the train views, decoded ``LOAD_CHUNK`` at a time
    (the train views themselves are not kept)."""
    lookups = {s.name: _class_lookup(s, class_names) for s in scenes}
    parts: dict[str, list[torch.Tensor]] = {"images": [], "depth": [], "normals": [], "semantic": []}
    has = {"depth": False, "normals": False, "semantic": False}
    bar = tqdm(total=len(items), desc="loading train views", unit="view", disable=not progress, leave=False)
    for start in range(0, len(items), LOAD_CHUNK):
        chunk = items[start : start + LOAD_CHUNK]
        views = [scene.load_view(i) for scene, i in chunk]
        for v, (s, _) in zip(views, chunk):
            v.semantic = _remap_semantic(v.semantic, lookups[s.name]) if class_names else None
            has["depth"] |= v.depth is not None
            has["normals"] |= v.normals is not None
            has["semantic"] |= v.semantic is not None
        parts["images"].append(Views.from_view_data(views, mask_mode=None, size=size).images.half())
        # Ground truth on the loss grid: nearest pixel under each grid cell centre (keeps 0 / -1 labels).
        gt = Views.from_view_data(views, mask_mode=None, size=ls, normals="normals" in tasks)
        parts["depth"].append(gt.depths)
        parts["semantic"].append(gt.semantic)
        if gt.normals is not None:
            parts["normals"].append(gt.normals.permute(0, 3, 1, 2).contiguous())
        bar.update(len(chunk))
    bar.close()
    depth = torch.cat(parts["depth"]) if "depth" in tasks and has["depth"] else None
    normals = torch.cat(parts["normals"]) if "normals" in tasks and has["normals"] else None
    semantic = torch.cat(parts["semantic"]) if "segmentation" in tasks and has["semantic"] else None
    return ViewSet([], [s.name for s, _ in items], torch.cat(parts["images"])), TrainTargets(depth, normals, semantic)


def _load_held_out(
    items: list[tuple[Scene, int]],
    scenes: list[Scene],
    class_names: list[str],
    size: tuple[int, int],
    figure_views: list[int],
    progress: bool,
) -> ViewSet:
    """The held-out views with their full-resolution ground truth for the metrics. Their pixels live in the
    backbone-ready tensor, so only the figures' views keep an image (the others a zero-stride stand-in of
    the same shape: the pair tasks read only the shape)."""
    lookups = {s.name: _class_lookup(s, class_names) for s in scenes}
    label_dtype = np.int16 if len(class_names) < np.iinfo(np.int16).max else np.int32  # full-size label maps
    views_out: list[ViewData] = []
    images: list[torch.Tensor] = []
    bar = tqdm(total=len(items), desc="loading held-out views", unit="view", disable=not progress, leave=False)
    for start in range(0, len(items), LOAD_CHUNK):
        chunk = items[start : start + LOAD_CHUNK]
        views = [scene.load_view(i) for scene, i in chunk]
        images.append(Views.from_view_data(views, mask_mode=None, size=size).images.half())
        for k, (v, (s, _)) in enumerate(zip(views, chunk)):
            sem = _remap_semantic(v.semantic, lookups[s.name])
            v.semantic = None if sem is None else sem.astype(label_dtype)
            v.instance = None
            if start + k not in figure_views:
                v.image = np.broadcast_to(np.zeros(3, np.float32), v.image.shape)
        views_out += views
        bar.update(len(chunk))
    bar.close()
    return ViewSet(views_out, [s.name for s, _ in items], torch.cat(images))


def prepare_data(
    name: str, scenes: list[Scene], tasks: list[str], cfg: EvalConfig, extra: dict[str, list[Scene]] | None = None
) -> PreparedData:
    """Load and resample everything the tasks need, once for all backbones."""
    splits = sorted({s.split for s in scenes})
    eval_split = cfg.data.eval_split
    if eval_split == "auto":
        eval_split = "test" if any(s.split == "test" for s in scenes) else "val"
    held = [s for s in scenes if s.split == eval_split]
    if not held:
        raise UserError(f"split '{eval_split}' has no scenes (the data has: {', '.join(splits)})")
    train = [s for s in scenes if s.split == cfg.data.train_split] if any(t in PROBE_TASKS for t in tasks) else []
    if any(t in PROBE_TASKS for t in tasks) and not train:
        raise UserError(
            f"split '{cfg.data.train_split}' has no scenes to train the probes on (the data has: {', '.join(splits)})"
        )
    if train and set(s.name for s in train) & set(s.name for s in held):
        raise UserError(f"splits '{cfg.data.train_split}' and '{eval_split}' share scenes; probes need held-out scenes")

    class_names: list[str] = []
    for s in train + held:
        class_names += [c for c in s.class_names if c not in class_names]

    train_items = spread_views(train, cfg.data.max_train_views) if train else []
    held_items = spread_views(held, cfg.data.max_eval_views)
    # One input size for all probe views (the most common image size), so their grids stack.
    shapes = [(s.views[i].height, s.views[i].width) for s, i in train_items + held_items]
    common = max(set(shapes), key=shapes.count)
    size = fit_size(cfg.data.resolution, *common)
    ls = fit_size(cfg.probe.loss_res, *common)

    train_set = targets = None
    if train_items:
        train_set, targets = _load_train(train_items, train, class_names, tasks, size, ls, cfg.run.progress)
    held_groups = [s.name for s, _ in held_items]
    figure_views = figure_indices(held_groups, cfg.run.figure_views) if cfg.run.figures else []
    held_set = _load_held_out(held_items, held, class_names, size, figure_views, cfg.run.progress)

    extra_sets = {}
    for key, ex_scenes in (extra or {}).items():
        for s in ex_scenes:
            vs = [s.load_view(i) for i in range(len(s))]
            # Each view keeps its own aspect ratio (these only feed correspondence/consistency).
            for j, v in enumerate(vs):
                sz = fit_size(cfg.data.resolution, v.height, v.width)
                extra_sets[f"{key}/{s.name}/{j}"] = ViewSet(
                    [v], [f"{key}/{s.name}"], Views.from_view_data([v], mask_mode=None, size=sz).images.half()
                )

    counts = {
        "train_scenes": len({s.name for s, _ in train_items}),
        "train_views": len(train_items),
        "eval_scenes": len({s.name for s, _ in held_items}),
        "eval_views": len(held_items),
    }
    return PreparedData(
        name, size, train_set, targets, held_set, eval_split, class_names, extra_sets, counts, figure_views
    )


def load_extra_datasets(cfg: EvalConfig, tasks: list[str]) -> tuple[dict[str, list[Scene]], str | None]:
    """The real Middlebury pair for correspondence/consistency, when asked for and available."""
    if not cfg.correspondence.middlebury or not any(t in PAIR_TASKS for t in tasks):
        return {}, None

    try:
        scene = load_middlebury()
    except Exception as exc:  # e.g. scikit-image's data files missing: report it, keep evaluating
        return {}, f"Middlebury pair unavailable ({type(exc).__name__}: {exc})"
    return {"middlebury": [scene]}, None


@dataclass
class PairPlan:
    """Pairs of one dataset and their ground-truth geometry, computed once for all backbones."""

    views: list[ViewData]
    feature_keys: list[tuple[str, int]]  # (feature group, index in it) per view
    pairs: list[tuple[int, int]]
    geometry: list[corr.PairGeometry]


def plan_pairs(data: PreparedData, cfg: EvalConfig) -> dict[str, PairPlan]:
    ccfg = corr.correspondence_settings(cfg)
    plans = {}
    if data.held_out is not None and cfg.correspondence.corr_pairs > 0:
        views = data.held_out.views
        pairs = corr.select_pairs(views, data.held_out.groups, ccfg, cfg.run.seed)
        geo = [corr.query_geometry(views[i], views[j], ccfg) for i, j in pairs]
        plans[data.name] = PairPlan(views, [("eval", i) for i in range(len(views))], pairs, geo)
    # Extra datasets (Middlebury): views of one scene across single-view feature groups.
    by_dataset: dict[str, list[str]] = {}
    for key in data.extra:
        by_dataset.setdefault(key.split("/")[0], []).append(key)
    for name, keys in by_dataset.items():
        views = [data.extra[k].views[0] for k in keys]
        groups = [data.extra[k].groups[0] for k in keys]
        pairs = corr.select_pairs(views, groups, ccfg, cfg.run.seed)
        geo = [corr.query_geometry(views[i], views[j], ccfg) for i, j in pairs]
        plans[name] = PairPlan(views, [(k, 0) for k in keys], pairs, geo)
    return plans
