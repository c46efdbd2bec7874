"""``evaluate(...)``: run the evaluation suite for several backbones on the same data and write the report.

One pass loads the data (train split: images + ground truth on the probes' loss grid; held-out split:
images + full-resolution ground truth), then each backbone extracts (or loads from the cache) its
features of every image once, and all tasks share them: the three probes, correspondence and
consistency. Pairs, query points and probe initialisations are seeded and identical across backbones,
so the rows of a table differ only by the features.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from splatdistill import __version__
from splatdistill.data.scene import Scene, ViewData
from splatdistill.errors import UserError
from splatdistill.eval import consistency as cons
from splatdistill.eval import correspondence as corr
from splatdistill.eval import metrics
from splatdistill.data.sampler import resize_view
from splatdistill.eval.features import BackboneEntry, FeatureSet, get_features, pca_rgb
from splatdistill.eval.probes import (
    ProbeConfig,
    Standardiser,
    train_depth_probe,
    train_normal_probe,
    train_seg_probe,
)

TASKS = ("depth", "normals", "segmentation", "correspondence", "consistency")
PROBE_TASKS = ("depth", "normals", "segmentation")
PAIR_TASKS = ("correspondence", "consistency")


@dataclass
class EvalConfig:
    """Every knob of an evaluation run; the defaults fit one ViT-S/14 on ``rooms`` in a few CPU minutes."""

    resolution: int = 224  # short image side fed to the backbone (rounded to its patch size)
    train_split: str = "train"
    eval_split: str = "auto"  # held-out scenes: "test" if the data has any, else "val"
    max_train_views: int = 192  # spread evenly over the train scenes
    max_eval_views: int = 64  # spread evenly over the held-out scenes
    loss_res: int = 64  # short side of the grid the probe losses are computed on
    probe_steps: int = 300
    probe_batch: int = 16
    depth_lr: float = 2e-3
    normals_lr: float = 1e-2
    seg_lr: float = 1e-2
    depth_bins: int = 256
    min_depth: float = 0.01
    max_depth: float = 10.0  # metres; indoor protocol cap for bins and metrics
    depth_use_cls: bool = False  # the protocol concatenates CLS; off by default (docs/evaluation.md)
    corr_pairs: int = 48  # view pairs per dataset
    corr_queries: int = 8192  # cap on query pixels per pair (A's visible pixels on the matching grid)
    corr_keep: int = 1000
    corr_min_overlap: float = 0.25
    corr_grid_step: float = 2.0  # candidate spacing in view B, pixels of the 160x120 reference
    occlusion_tol: float = 0.05
    consistency_points: int = 1000  # points per pair
    middlebury: bool = True  # add the real Middlebury stereo pair to correspondence/consistency
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads for feature extraction (None: torch's setting)
    # Threads for probe training and matching: their ops are small, and on a shared 2-core machine two
    # threads measured ~15x slower per probe step than one (spinning on a busy core); see the docs.
    task_threads: int = 1
    batch_size: int = 16  # feature extraction batch
    cache_dir: str | None = None  # None: <out_dir>/cache; "" disables the feature cache
    figures: bool = True
    figure_views: int = 4
    progress: bool = True

    def probe_config(self) -> ProbeConfig:
        return ProbeConfig(
            steps=self.probe_steps,
            batch_size=self.probe_batch,
            depth_lr=self.depth_lr,
            normals_lr=self.normals_lr,
            seg_lr=self.seg_lr,
            depth_bins=self.depth_bins,
            min_depth=self.min_depth,
            max_depth=self.max_depth,
            depth_use_cls=self.depth_use_cls,
            seed=self.seed,
            progress=self.progress,
        )

    def correspondence_config(self) -> corr.CorrespondenceConfig:
        return corr.CorrespondenceConfig(
            queries=self.corr_queries,
            keep=self.corr_keep,
            grid_step_ref=self.corr_grid_step,
            occlusion_tol=self.occlusion_tol,
            min_overlap=self.corr_min_overlap,
            max_pairs=self.corr_pairs,
        )

    def validate(self) -> None:
        positive = ["resolution", "max_train_views", "max_eval_views", "loss_res", "probe_steps", "probe_batch",
                    "depth_bins", "corr_queries", "corr_keep", "consistency_points", "batch_size"]  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if (self.threads is not None and self.threads < 1) or self.task_threads < 1:
            raise UserError(f"threads must be at least 1, got {self.threads if self.task_threads >= 1 else self.task_threads}")
        if self.corr_pairs < 0:
            raise UserError(f"corr-pairs must be >= 0, got {self.corr_pairs}")
        if not 0 < self.min_depth < self.max_depth:
            raise UserError(f"need 0 < min-depth < max-depth, got {self.min_depth} and {self.max_depth}")
        if self.eval_split not in ("auto", "train", "val", "test"):
            raise UserError(f"unknown eval split '{self.eval_split}' (choose from auto, train, val, test)")
        if self.train_split not in ("train", "val", "test"):
            raise UserError(f"unknown train split '{self.train_split}' (choose from train, val, test)")


def parse_tasks(tasks: str | Sequence[str] | None) -> list[str]:
    """Task names from a comma-separated string or a list (None or "all" = every task), in canonical order."""
    if tasks is None:
        return list(TASKS)
    items = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    names = [t.strip().lower() for t in items if t.strip()]
    if names == ["all"]:
        return list(TASKS)
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise UserError(f"unknown task '{unknown[0]}' (choose from {', '.join(TASKS)}, or all)")
    if not names:
        raise UserError("no tasks given")
    return [t for t in TASKS if t in names]


# ----------------------------------------------------------------------------------------------- data


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


def resolve_data(data: str | Path | Sequence[Scene]) -> tuple[str, list[Scene]]:
    """(name, scenes) for ``data``: in-memory scenes, ``"rooms"`` (built on first use), or a dataset path."""
    if isinstance(data, (list, tuple)):
        if not data or not all(isinstance(s, Scene) for s in data):
            raise UserError("data must be a dataset path, 'rooms', or a non-empty list of Scene objects")
        return "data", list(data)
    from splatdistill.data import ensure_rooms, load_dataset

    text = str(data)
    if text == "rooms":
        return "rooms", load_dataset(ensure_rooms())
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


def _image_tensor(view: ViewData, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) float16 backbone input, resized like the training pipeline does (``resize_view``)."""
    return torch.from_numpy(resize_view(view, size).image).permute(2, 0, 1).half()


def _input_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """Short side = ``resolution``, aspect kept (the backbone snaps it to its patch size)."""
    s = resolution / min(height, width)
    return max(1, round(height * s)), max(1, round(width * s))


def _class_lookup(scene: Scene, names: list[str]) -> np.ndarray:
    return np.array([names.index(n) for n in scene.class_names], dtype=np.int64)


def _remap_semantic(sem: np.ndarray | None, lookup: np.ndarray) -> np.ndarray | None:
    if sem is None or lookup.size == 0:
        return None
    sem = np.asarray(sem, dtype=np.int64)
    ok = (sem >= 0) & (sem < lookup.size)
    return np.where(ok, lookup[np.clip(sem, 0, lookup.size - 1)], -1)


def _load_views(items: list[tuple[Scene, int]], desc: str, progress: bool) -> list[ViewData]:
    from tqdm.auto import tqdm

    return [scene.load_view(i) for scene, i in tqdm(items, desc=desc, unit="view", disable=not progress, leave=False)]


def prepare_data(
    name: str, scenes: list[Scene], tasks: list[str], cfg: EvalConfig, extra: dict[str, list[Scene]] | None = None
) -> PreparedData:
    """Load and resample everything the tasks need, once for all backbones."""
    splits = sorted({s.split for s in scenes})
    eval_split = cfg.eval_split
    if eval_split == "auto":
        eval_split = "test" if any(s.split == "test" for s in scenes) else "val"
    held = [s for s in scenes if s.split == eval_split]
    if not held:
        raise UserError(f"split '{eval_split}' has no scenes (the data has: {', '.join(splits)})")
    train = [s for s in scenes if s.split == cfg.train_split] if any(t in PROBE_TASKS for t in tasks) else []
    if any(t in PROBE_TASKS for t in tasks) and not train:
        raise UserError(f"split '{cfg.train_split}' has no scenes to train the probes on (the data has: {', '.join(splits)})")
    if train and set(s.name for s in train) & set(s.name for s in held):
        raise UserError(f"splits '{cfg.train_split}' and '{eval_split}' share scenes; probes need held-out scenes")

    class_names: list[str] = []
    for s in train + held:
        class_names += [c for c in s.class_names if c not in class_names]

    train_items = spread_views(train, cfg.max_train_views) if train else []
    held_items = spread_views(held, cfg.max_eval_views)
    # One input size for all probe views (the most common image size), so their grids stack.
    shapes = [(s.views[i].height, s.views[i].width) for s, i in train_items + held_items]
    common = max(set(shapes), key=shapes.count)
    size = _input_size(*common, cfg.resolution)
    ls = _input_size(*common, cfg.loss_res)

    train_set = targets = None
    if train_items:
        views = _load_views(train_items, "loading train views", cfg.progress)
        images = torch.stack([_image_tensor(v, size) for v in views])
        lookups = {s.name: _class_lookup(s, class_names) for s in train}
        # Ground truth on the loss grid: nearest pixel under each grid cell centre (keeps 0 / -1 labels).
        small = [resize_view(v, ls) for v in views]
        depth = normals = semantic = None
        if "depth" in tasks and any(v.depth is not None for v in small):
            depth = torch.from_numpy(np.stack([
                v.depth if v.depth is not None else np.zeros(ls, np.float32) for v in small
            ]).astype(np.float32))  # fmt: skip
        if "normals" in tasks and any(v.normals is not None for v in small):
            normals = torch.from_numpy(np.stack([
                v.normals if v.normals is not None else np.zeros(ls + (3,), np.float32) for v in small
            ]).astype(np.float32)).permute(0, 3, 1, 2).contiguous()  # fmt: skip
        if "segmentation" in tasks and class_names:
            sems = [_remap_semantic(v.semantic, lookups[s.name]) for v, (s, _) in zip(small, train_items)]
            if any(m is not None for m in sems):
                semantic = torch.from_numpy(np.stack([m if m is not None else np.full(ls, -1, np.int64) for m in sems]))
        train_set = ViewSet([], [s.name for s, _ in train_items], images)  # train views are not kept
        targets = TrainTargets(depth, normals, semantic)
        del views, small

    held_views = _load_views(held_items, "loading held-out views", cfg.progress)
    lookups = {s.name: _class_lookup(s, class_names) for s in held}
    for v, (s, _) in zip(held_views, held_items):
        v.semantic = _remap_semantic(v.semantic, lookups[s.name])
        v.instance = None
    held_set = ViewSet(held_views, [s.name for s, _ in held_items], torch.stack([_image_tensor(v, size) for v in held_views]))

    extra_sets = {}
    for key, ex_scenes in (extra or {}).items():
        for s in ex_scenes:
            vs = [s.load_view(i) for i in range(len(s))]
            # Each view keeps its own aspect ratio (these only feed correspondence/consistency).
            for j, v in enumerate(vs):
                sz = _input_size(v.height, v.width, cfg.resolution)
                extra_sets[f"{key}/{s.name}/{j}"] = ViewSet([v], [f"{key}/{s.name}"], _image_tensor(v, sz)[None])

    counts = {
        "train_scenes": len({s.name for s, _ in train_items}),
        "train_views": len(train_items),
        "eval_scenes": len({s.name for s, _ in held_items}),
        "eval_views": len(held_items),
    }
    return PreparedData(name, size, train_set, targets, held_set, eval_split, class_names, extra_sets, counts)


def load_extra_datasets(cfg: EvalConfig, tasks: list[str]) -> tuple[dict[str, list[Scene]], str | None]:
    """The real Middlebury pair for correspondence/consistency, when asked for and available."""
    if not cfg.middlebury or not any(t in PAIR_TASKS for t in tasks):
        return {}, None
    from splatdistill.data.middlebury import load_middlebury

    try:
        scene = load_middlebury()
    except Exception as exc:  # e.g. scikit-image's data files missing: report it, keep evaluating
        return {}, f"Middlebury pair unavailable ({type(exc).__name__}: {exc})"
    return {"middlebury": [scene]}, None


# ------------------------------------------------------------------------------------------ backbones


def resolve_backbones(backbones: Sequence[str | BackboneEntry], device: str) -> list[BackboneEntry]:
    """Backbone entries for spec strings (``LABEL=SPEC`` or ``SPEC``) or ready entries; labels made unique."""
    from splatdistill.eval.features import load_backbone_spec

    if not backbones:
        raise UserError("no backbone given (use --backbone SPEC)")
    entries = []
    for b in backbones:
        if isinstance(b, BackboneEntry):
            entries.append(b)
            continue
        from splatdistill.backbones import split_label

        label, spec = split_label(str(b))
        entries.append(BackboneEntry(label, spec, load_backbone_spec(spec, device)))
    seen: dict[str, int] = {}
    for e in entries:
        seen[e.label] = seen.get(e.label, 0) + 1
        if seen[e.label] > 1:
            e.label = f"{e.label}#{seen[e.label]}"
    return entries


# ---------------------------------------------------------------------------------------------- tasks


@dataclass
class FigureData:
    """What the qualitative figures show: a few held-out views and each backbone's outputs on them."""

    views: list[ViewData] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    depth: dict[str, list[np.ndarray]] = field(default_factory=dict)
    normals: dict[str, list[np.ndarray]] = field(default_factory=dict)
    segmentation: dict[str, list[np.ndarray]] = field(default_factory=dict)
    pca: dict[str, list[np.ndarray]] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    max_depth: float = 10.0


def _figure_indices(groups: list[str], n: int) -> list[int]:
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


def _run_depth(x_train, x_eval, data: PreparedData, pcfg: ProbeConfig, fig_idx, figs: FigureData, label: str) -> dict:
    assert data.targets is not None and data.held_out is not None
    if data.targets.depth is None or not (data.targets.depth > 0).any():
        return {"skipped": "no depth ground truth in the train split"}
    probe = train_depth_probe(x_train, data.targets.depth, pcfg)
    preds, gts = [], []
    for i, v in enumerate(data.held_out.views):
        if v.depth is None:
            continue
        pred = probe.predict(x_eval.subset(slice(i, i + 1)), v.depth.shape)[0].numpy()
        valid = (v.depth > 0) & (v.depth <= pcfg.max_depth)
        preds.append(pred[valid])
        gts.append(v.depth[valid])
        if i in fig_idx:
            figs.depth.setdefault(label, []).append(pred)
    if not gts or sum(g.size for g in gts) == 0:
        return {"skipped": "no valid depth ground truth in the held-out split"}
    out = metrics.depth_metrics(np.concatenate(preds), np.concatenate(gts))
    out["final_train_loss"] = float(np.mean(probe.losses[-10:]))
    return out


def _run_normals(x_train, x_eval, data: PreparedData, pcfg: ProbeConfig, fig_idx, figs: FigureData, label: str) -> dict:
    assert data.targets is not None and data.held_out is not None
    if data.targets.normals is None or not (data.targets.normals.norm(dim=1) > 0.5).any():
        return {"skipped": "no normal ground truth in the train split"}
    probe = train_normal_probe(x_train, data.targets.normals, pcfg)
    errors = []
    for i, v in enumerate(data.held_out.views):
        if v.normals is None:
            continue
        n, _ = probe.predict(x_eval.subset(slice(i, i + 1)), v.normals.shape[:2])
        pred = n[0].permute(1, 2, 0).numpy()
        valid = np.linalg.norm(v.normals, axis=-1) > 0.5
        if valid.any():
            errors.append(metrics.angular_errors_deg(pred[valid], v.normals[valid]))
        if i in fig_idx:
            figs.normals.setdefault(label, []).append(pred)
    if not errors:
        return {"skipped": "no normal ground truth in the held-out split"}
    out = metrics.normal_metrics_from_errors(np.concatenate(errors))
    out["final_train_loss"] = float(np.mean(probe.losses[-10:]))
    return out


def _run_segmentation(x_train, x_eval, data: PreparedData, pcfg: ProbeConfig, fig_idx, figs: FigureData, label: str) -> dict:
    assert data.targets is not None and data.held_out is not None
    if data.targets.semantic is None or not (data.targets.semantic >= 0).any():
        return {"skipped": "no semantic labels in the train split"}
    k = len(data.class_names)
    probe = train_seg_probe(x_train, data.targets.semantic, k, pcfg)
    conf = np.zeros((k, k), dtype=np.int64)
    for i, v in enumerate(data.held_out.views):
        if v.semantic is None:
            continue
        pred = probe.predict(x_eval.subset(slice(i, i + 1)), v.semantic.shape)[0].numpy()
        conf += metrics.confusion_matrix(pred, v.semantic, k)
        if i in fig_idx:
            figs.segmentation.setdefault(label, []).append(pred)
    if conf.sum() == 0:
        return {"skipped": "no semantic labels in the held-out split"}
    out = metrics.segmentation_metrics(conf, data.class_names)
    out["final_train_loss"] = float(np.mean(probe.losses[-10:]))
    return out


@dataclass
class PairPlan:
    """Pairs of one dataset and their ground-truth geometry, computed once for all backbones."""

    views: list[ViewData]
    feature_keys: list[tuple[str, int]]  # (feature group, index in it) per view
    pairs: list[tuple[int, int]]
    geometry: list[corr.PairGeometry]


def plan_pairs(data: PreparedData, cfg: EvalConfig) -> dict[str, PairPlan]:
    ccfg = cfg.correspondence_config()
    plans = {}
    if data.held_out is not None and cfg.corr_pairs > 0:
        views = data.held_out.views
        pairs = corr.select_pairs(views, data.held_out.groups, ccfg, cfg.seed)
        geo = [corr.query_geometry(views[i], views[j], ccfg) for i, j in pairs]
        plans[data.name] = PairPlan(views, [("eval", i) for i in range(len(views))], pairs, geo)
    # Extra datasets (Middlebury): views of one scene across single-view feature groups.
    by_dataset: dict[str, list[str]] = {}
    for key in data.extra:
        by_dataset.setdefault(key.split("/")[0], []).append(key)
    for name, keys in by_dataset.items():
        views = [data.extra[k].views[0] for k in keys]
        groups = [data.extra[k].groups[0] for k in keys]
        pairs = corr.select_pairs(views, groups, ccfg, cfg.seed)
        geo = [corr.query_geometry(views[i], views[j], ccfg) for i, j in pairs]
        plans[name] = PairPlan(views, [(k, 0) for k in keys], pairs, geo)
    return plans


def _run_pairs(feats: FeatureSet, plans: dict[str, PairPlan], tasks: list[str], cfg: EvalConfig) -> dict[str, dict]:
    ccfg = cfg.correspondence_config()
    out: dict[str, dict] = {t: {} for t in PAIR_TASKS if t in tasks}
    for name, plan in plans.items():
        pair_results, samples = [], []
        for p, ((i, j), geo) in enumerate(zip(plan.pairs, plan.geometry)):
            ga, ia = plan.feature_keys[i]
            gb, ib = plan.feature_keys[j]
            fa, fb = feats.patch[ga][ia], feats.patch[gb][ib]
            if "correspondence" in tasks:
                rng = np.random.default_rng([cfg.seed, p, 1])
                r = corr.evaluate_pair(fa, fb, plan.views[i], plan.views[j], ccfg, rng, geo)
                if r is not None:
                    pair_results.append(r)
            if "consistency" in tasks:
                rng = np.random.default_rng([cfg.seed, p, 2])
                samples.append(cons.pair_consistency(fa, fb, plan.views[i], plan.views[j], cfg.consistency_points, rng, cfg.occlusion_tol, geo))
        if "correspondence" in tasks:
            out["correspondence"][name] = corr.summarise_pairs(pair_results)
        if "consistency" in tasks:
            out["consistency"][name] = cons.summarise(samples)
    return out


def _run_tasks(
    entry: BackboneEntry,
    feats: FeatureSet,
    data: PreparedData,
    plans: dict[str, PairPlan],
    tasks: list[str],
    cfg: EvalConfig,
    fig_idx: list[int],
    figs: FigureData,
    timings: dict[str, float],
) -> dict[str, Any]:
    """All tasks of one backbone on its features; fills ``timings`` with seconds per task."""
    results: dict[str, Any] = {}
    if any(t in PROBE_TASKS for t in tasks):
        std = Standardiser(feats.patch["train"], feats.cls["train"])
        x_train = std(feats.patch["train"], feats.cls["train"])
        x_eval = std(feats.patch["eval"], feats.cls["eval"])
        runners = {"depth": _run_depth, "normals": _run_normals, "segmentation": _run_segmentation}
        pcfg = cfg.probe_config()
        for task in PROBE_TASKS:
            if task in tasks:
                t0 = time.perf_counter()
                results[task] = runners[task](x_train, x_eval, data, pcfg, fig_idx, figs, entry.label)
                timings[f"{task}_s"] = time.perf_counter() - t0
    if any(t in PAIR_TASKS for t in tasks):
        t0 = time.perf_counter()
        results.update(_run_pairs(feats, plans, tasks, cfg))
        timings["pairs_s"] = time.perf_counter() - t0
    return results


# --------------------------------------------------------------------------------------------- driver


@contextmanager
def torch_threads(n: int | None):
    """Temporarily set torch's intra-op thread count (None: unchanged)."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if np.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def evaluate(
    backbones: Sequence[str | BackboneEntry],
    data: str | Path | Sequence[Scene],
    tasks: str | Sequence[str] | None = None,
    out_dir: str | Path = "eval_out",
    config: EvalConfig | None = None,
) -> dict:
    """Evaluate each backbone on ``data`` and write ``results.json``, ``report.md`` and figures to ``out_dir``.

    ``backbones``: spec strings (``dinov2_vits14``, a checkpoint path, ``random:ARCH``, ...; ``LABEL=SPEC``
    names the row) or :class:`BackboneEntry` objects. ``data``: a dataset path, ``"rooms"``, or a list
    of :class:`Scene`. ``tasks``: names from :data:`TASKS` (default all). Returns the results dict that
    is also written to ``results.json``.
    """
    cfg = config or EvalConfig()
    cfg.validate()
    with torch_threads(cfg.threads):
        return _evaluate(backbones, data, tasks, Path(out_dir), cfg)


def _evaluate(
    backbones: Sequence[str | BackboneEntry], data: str | Path | Sequence[Scene], tasks, out: Path, cfg: EvalConfig
) -> dict:
    t_start = time.perf_counter()
    task_list = parse_tasks(tasks)
    if not backbones:
        raise UserError("no backbone given (use --backbone SPEC)")
    name, scenes = resolve_data(data)
    entries = resolve_backbones(backbones, cfg.device)  # before the slow data loading: fail fast
    extra, extra_note = load_extra_datasets(cfg, task_list)
    prepared = prepare_data(name, scenes, task_list, cfg, extra)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory: {exc.strerror}", out) from None
    cache_dir = None if cfg.cache_dir == "" else Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"

    images = {"eval": prepared.held_out.images}  # type: ignore[union-attr]
    if prepared.train is not None:
        images["train"] = prepared.train.images
    for key, vs in prepared.extra.items():
        images[key] = vs.images
    plans = plan_pairs(prepared, cfg) if any(t in PAIR_TASKS for t in task_list) else {}
    assert prepared.held_out is not None
    fig_idx = _figure_indices(prepared.held_out.groups, cfg.figure_views) if cfg.figures else []
    figs = FigureData(
        views=[prepared.held_out.views[i] for i in fig_idx],
        titles=[f"{prepared.held_out.groups[i]} / {prepared.held_out.views[i].name}" for i in fig_idx],
        class_names=prepared.class_names,
        max_depth=cfg.max_depth,
    )

    rows = []
    for entry in entries:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        feats = get_features(entry, images, cache_dir, cfg.batch_size, cfg.device, cfg.progress)
        timings["features_s"] = time.perf_counter() - t0
        with torch_threads(cfg.task_threads):
            results = _run_tasks(entry, feats, prepared, plans, task_list, cfg, fig_idx, figs, timings)
        if fig_idx:
            figs.pca[entry.label] = pca_rgb([feats.patch["eval"][i] for i in fig_idx], seed=cfg.seed)
        timings["total_s"] = sum(timings.values())
        model = entry.model
        rows.append({
            "label": entry.label,
            "spec": entry.spec,
            "name": getattr(model, "name", entry.label),
            "embed_dim": int(getattr(model, "embed_dim", feats.patch["eval"].shape[1])),
            "patch_size": int(getattr(model, "patch_size", 0)),
            "grid": list(feats.patch["eval"].shape[-2:]),
            "has_cls": feats.cls["eval"] is not None,
            "feature_cache": None if feats.cache_path is None else str(feats.cache_path),
            "cache_hit": feats.cache_hit,
            "timings": timings,
            "results": results,
        })  # fmt: skip
        del feats

    pair_counts = {k: len(p.pairs) for k, p in plans.items()}
    results_doc = {
        "splatdistill_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tasks": task_list,
        "data": {
            "name": prepared.name,
            "source": str(data) if isinstance(data, (str, Path)) else "in-memory scenes",
            "train_split": cfg.train_split,
            "eval_split": prepared.held_out_split,
            **prepared.scenes,
            "input_size": list(prepared.input_size),
            "class_names": prepared.class_names,
            "pairs": pair_counts,
            "notes": [extra_note] if extra_note else [],
        },
        "config": asdict(cfg),
        "backbones": rows,
        "wall_time_s": time.perf_counter() - t_start,
    }
    results_doc = _jsonable(results_doc)
    from splatdistill.eval import report

    results_doc["files"] = report.write_all(results_doc, out, figs if cfg.figures else None)
    results_doc["wall_time_s"] = time.perf_counter() - t_start
    (out / "results.json").write_text(json.dumps(results_doc, indent=2))
    return results_doc
