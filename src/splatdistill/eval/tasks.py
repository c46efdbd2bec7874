"""The evaluation tasks on extracted features: the three probes and the pair tasks (correspondence, consistency)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from splatdistill.eval import consistency as cons
from splatdistill.eval import correspondence as corr
from splatdistill.eval import metrics
from splatdistill.eval.config import PAIR_TASKS, PROBE_TASKS, EvalConfig
from splatdistill.eval.data import PairPlan, PreparedData
from splatdistill.eval.features import (
    BackboneEntry,
    FeatureSet,
)
from splatdistill.eval.paper_probes import train_paper_depth_probe
from splatdistill.eval.probes import (
    ProbeConfig,
    Standardiser,
    probe_settings,
    train_depth_probe,
    train_normal_probe,
    train_seg_probe,
)
from splatdistill.eval.report import FigureData


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


def _run_depth(x_train, x_eval, data: PreparedData, pcfg: ProbeConfig, fig_idx, figs: FigureData, label: str,
               saved: dict | None = None) -> dict:
    assert data.targets is not None and data.held_out is not None
    if data.targets.depth is None or not (data.targets.depth > 0).any():
        return {"skipped": "no depth ground truth in the train split"}
    paper = pcfg.suite == "paper"
    probe = train_paper_depth_probe(x_train, data.targets.depth, pcfg) if paper else train_depth_probe(x_train, data.targets.depth, pcfg)
    preds, gts = [], []
    for i, v in enumerate(data.held_out.views):
        if v.depth is None:
            continue
        pred = probe.predict(x_eval.subset(slice(i, i + 1)), v.depth.shape)[0].numpy()
        if saved is not None:
            saved[f"depth/{i}"] = pred
        if paper:  # per image: the crop and the open depth range are applied by the metric
            preds.append(pred)
            gts.append(v.depth)
        else:
            valid = (v.depth > 0) & (v.depth <= pcfg.max_depth)
            preds.append(pred[valid])
            gts.append(v.depth[valid])
        if i in fig_idx:
            figs.depth.setdefault(label, []).append(pred)
    try:
        if paper:
            out = metrics.paper_depth_metrics(preds, gts, pcfg.min_depth, pcfg.max_depth, pcfg.depth_crop)
        elif not gts or sum(g.size for g in gts) == 0:
            raise ValueError("no valid pixels")
        else:
            out = metrics.depth_metrics(np.concatenate(preds), np.concatenate(gts))
    except ValueError:
        return {"skipped": "no valid depth ground truth in the held-out split"}
    out["final_train_loss"] = float(np.mean(probe.losses[-10:]))
    return out


def _run_normals(x_train, x_eval, data: PreparedData, pcfg: ProbeConfig, fig_idx, figs: FigureData, label: str,
                 saved: dict | None = None) -> dict:
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
        if saved is not None:
            saved[f"normals/{i}"] = pred
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


def _run_segmentation(x_train, x_eval, data: PreparedData, pcfg: ProbeConfig, fig_idx, figs: FigureData, label: str,
                      saved: dict | None = None) -> dict:
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
        if saved is not None:
            saved[f"segmentation/{i}"] = pred.astype(np.int16)
        conf += metrics.confusion_matrix(pred, v.semantic, k)
        if i in fig_idx:
            figs.segmentation.setdefault(label, []).append(pred)
    if conf.sum() == 0:
        return {"skipped": "no semantic labels in the held-out split"}
    if pcfg.suite == "paper":
        out = metrics.miou_mmseg(conf, data.class_names)
    else:
        out = metrics.segmentation_metrics(conf, data.class_names)
    out["final_train_loss"] = float(np.mean(probe.losses[-10:]))
    return out


def _run_pairs(feats: FeatureSet, plans: dict[str, PairPlan], tasks: list[str], cfg: EvalConfig) -> dict[str, dict]:
    ccfg = corr.correspondence_settings(cfg)
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
        reason = None
        if not plan.pairs:
            has_depth = any(v.depth is not None for v in plan.views)
            reason = ("no view has depth ground truth (pairs and their ground-truth matches come from depth)"
                      if not has_depth else "no pair of views of one scene overlaps enough (min_overlap)")
        if "correspondence" in tasks:
            out["correspondence"][name] = ({"pairs": 0, "skipped": reason} if reason else
                                           corr.summarise_pairs(pair_results))
        if "consistency" in tasks:
            out["consistency"][name] = {"pairs": 0, "skipped": reason} if reason else cons.summarise(samples)
    return out


def run_tasks(
    entry: BackboneEntry,
    feats: FeatureSet,
    data: PreparedData,
    plans: dict[str, PairPlan],
    tasks: list[str],
    cfg: EvalConfig,
    fig_idx: list[int],
    figs: FigureData,
    timings: dict[str, float],
    saved: dict | None = None,
) -> dict[str, Any]:
    """All tasks of one backbone on its features; fills ``timings`` with seconds per task and ``saved``
    (when given) with every held-out probe prediction, keyed ``TASK/VIEW``."""
    results: dict[str, Any] = {}
    if any(t in PROBE_TASKS for t in tasks):
        std = Standardiser(feats.patch["train"], feats.cls["train"])
        x_train = std(feats.patch["train"], feats.cls["train"])
        x_eval = std(feats.patch["eval"], feats.cls["eval"])
        runners = {"depth": _run_depth, "normals": _run_normals, "segmentation": _run_segmentation}
        pcfg = probe_settings(cfg)
        for task in PROBE_TASKS:
            if task in tasks:
                t0 = time.perf_counter()
                results[task] = runners[task](x_train, x_eval, data, pcfg, fig_idx, figs, entry.label, saved)
                timings[f"{task}_s"] = time.perf_counter() - t0
    if any(t in PAIR_TASKS for t in tasks):
        t0 = time.perf_counter()
        results.update(_run_pairs(feats, plans, tasks, cfg))
        timings["pairs_s"] = time.perf_counter() - t0
    return results
