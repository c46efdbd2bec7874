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
from splatdistill.eval.features import BackboneEntry, FeatureSet, TokenKind
from splatdistill.eval.paper_probes import PAPER_TOKENS, train_paper_depth_probe, train_paper_normal_probe
from splatdistill.eval.probes import (
    ProbeConfig,
    Standardiser,
    probe_settings,
    train_depth_probe,
    train_normal_probe,
    train_seg_probe,
)
from splatdistill.eval.report import FigureData

#: Feature group of the mirrored held-out images (``EvalConfig.depth_flip``).
FLIPPED_EVAL = "eval_flipped"


def _run_depth(
    x_train,
    x_eval,
    data: PreparedData,
    pcfg: ProbeConfig,
    fig_idx,
    figs: FigureData,
    label: str,
    saved: dict | None = None,
    x_flipped=None,
) -> dict:
    """``x_flipped``: probe inputs of the mirrored held-out images; when given, each prediction is the mean
    of the prediction and the mirrored prediction of the mirrored image."""
    assert data.targets is not None and data.held_out is not None
    if data.targets.depth is None or not (data.targets.depth > 0).any():
        return {"skipped": "no depth ground truth in the train split"}
    paper = pcfg.suite == "paper"
    probe = (
        train_paper_depth_probe(x_train, data.targets.depth, pcfg)
        if paper
        else train_depth_probe(x_train, data.targets.depth, pcfg)
    )
    preds, gts = [], []
    for i, v in enumerate(data.held_out.views):
        if v.depth is None:
            continue
        pred = probe.predict(x_eval.subset(slice(i, i + 1)), v.depth.shape)[0]
        if x_flipped is not None:
            pred = 0.5 * (pred + probe.predict(x_flipped.subset(slice(i, i + 1)), v.depth.shape)[0].flip(-1))
        pred = pred.numpy()
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


def _run_normals(
    x_train,
    x_eval,
    data: PreparedData,
    pcfg: ProbeConfig,
    fig_idx,
    figs: FigureData,
    label: str,
    saved: dict | None = None,
) -> dict:
    assert data.targets is not None and data.held_out is not None
    if data.targets.normals is None or not (data.targets.normals.norm(dim=1) > 0.5).any():
        return {"skipped": "no normal ground truth in the train split"}
    paper = pcfg.suite == "paper"
    train = train_paper_normal_probe if paper else train_normal_probe
    probe = train(x_train, data.targets.normals, pcfg)
    errors = []
    for i, v in enumerate(data.held_out.views):
        if v.normals is None:
            continue
        n, _ = probe.predict(x_eval.subset(slice(i, i + 1)), v.normals.shape[:2])
        pred = n[0].permute(1, 2, 0).numpy()
        if saved is not None:
            saved[f"normals/{i}"] = pred
        valid = (np.linalg.norm(v.normals, axis=-1) > 0.5) & metrics.crop_mask(v.normals.shape[:2], pcfg.normals_crop)
        if valid.any():
            errors.append(metrics.angular_errors_deg(pred[valid], v.normals[valid]))
        if i in fig_idx:
            figs.normals.setdefault(label, []).append(pred)
    if not errors:
        return {"skipped": "no normal ground truth in the held-out split"}
    # the paper (Probe3D) averages each image's metrics; the fast protocol pools the pixels
    out = metrics.paper_normal_metrics(errors) if paper else metrics.normal_metrics_from_errors(np.concatenate(errors))
    out["final_train_loss"] = float(np.mean(probe.losses[-10:]))
    return out


def _run_segmentation(
    x_train,
    x_eval,
    data: PreparedData,
    pcfg: ProbeConfig,
    fig_idx,
    figs: FigureData,
    label: str,
    saved: dict | None = None,
) -> dict:
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


def token_kind(task: str, cfg: EvalConfig) -> TokenKind:
    """The tokens ``task`` reads: the final ones, except under ``suite=paper`` (with ``paper_tokens``) where
    each task reads what the paper's evaluation code feeds it (:data:`PAPER_TOKENS`)."""
    return PAPER_TOKENS[task] if cfg.run.suite == "paper" and cfg.probe.paper_tokens else "final"


def _run_pairs(feats: FeatureSet, plans: dict[str, PairPlan], tasks: list[str], cfg: EvalConfig) -> dict[str, dict]:
    ccfg = corr.correspondence_settings(cfg)
    out: dict[str, dict] = {t: {} for t in PAIR_TASKS if t in tasks}
    corr_patch = feats.tokens(token_kind("correspondence", cfg))[0]
    cons_patch = feats.tokens(token_kind("consistency", cfg))[0]
    for name, plan in plans.items():
        pair_results, samples = [], []
        for p, ((i, j), geo) in enumerate(zip(plan.pairs, plan.geometry)):
            ga, ia = plan.feature_keys[i]
            gb, ib = plan.feature_keys[j]
            if "correspondence" in tasks:
                rng = np.random.default_rng([cfg.run.seed, p, 1])
                fa, fb = corr_patch[ga][ia], corr_patch[gb][ib]
                r = (
                    corr.probe3d_pair(fa, fb, plan.views[i], plan.views[j], cfg.correspondence.corr_keep)
                    if cfg.run.suite == "paper"
                    else corr.evaluate_pair(fa, fb, plan.views[i], plan.views[j], ccfg, rng, geo)
                )
                if r is not None:
                    pair_results.append(r)
            if "consistency" in tasks:
                rng = np.random.default_rng([cfg.run.seed, p, 2])
                samples.append(
                    cons.pair_consistency(
                        cons_patch[ga][ia],
                        cons_patch[gb][ib],
                        plan.views[i],
                        plan.views[j],
                        cfg.correspondence.consistency_points,
                        rng,
                        cfg.correspondence.occlusion_tol,
                        geo,
                    )
                )
        reason = None
        if not plan.pairs:
            has_depth = any(v.depth is not None for v in plan.views)
            reason = (
                "no view has depth ground truth (pairs and their ground-truth matches come from depth)"
                if not has_depth
                else "no pair of views of one scene overlaps enough (min_overlap)"
            )
        if "correspondence" in tasks:
            out["correspondence"][name] = (
                {"pairs": 0, "skipped": reason} if reason else corr.summarise_pairs(pair_results)
            )
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
    inputs: dict[str, tuple] = {}  # token kind -> standardised (train, held-out) probe inputs

    def probe_inputs(kind: TokenKind) -> tuple:
        if kind not in inputs:
            patch, cls = feats.tokens(kind)
            std = Standardiser(patch["train"], cls["train"])
            inputs.clear()  # one kind in memory at a time (the probes run in PROBE_TASKS order)
            flipped = std(patch[FLIPPED_EVAL], cls[FLIPPED_EVAL]) if FLIPPED_EVAL in patch else None
            inputs[kind] = (std(patch["train"], cls["train"]), std(patch["eval"], cls["eval"]), flipped)
        return inputs[kind]

    runners = {"depth": _run_depth, "normals": _run_normals, "segmentation": _run_segmentation}
    pcfg = probe_settings(cfg)
    for task in PROBE_TASKS:
        if task in tasks:
            t0 = time.perf_counter()
            x_train, x_eval, x_flipped = probe_inputs(token_kind(task, cfg))
            extra = {"x_flipped": x_flipped} if task == "depth" else {}
            results[task] = runners[task](x_train, x_eval, data, pcfg, fig_idx, figs, entry.label, saved, **extra)
            timings[f"{task}_s"] = time.perf_counter() - t0
    inputs.clear()
    if any(t in PAIR_TASKS for t in tasks):
        t0 = time.perf_counter()
        results.update(_run_pairs(feats, plans, tasks, cfg))
        timings["pairs_s"] = time.perf_counter() - t0
    return results
