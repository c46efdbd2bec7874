"""``evaluate(...)``: run the evaluation suite for several backbones on the same data and write the report.

One pass loads the data (train split: images + ground truth on the probes' loss grid; held-out split:
images + full-resolution ground truth), then each backbone extracts (or loads from the cache) its
features of every image once, and all tasks share them: the three probes, correspondence and
consistency. Pairs, query points and probe initialisations are seeded and identical across backbones,
so the rows of a table differ only by the features.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from splatdistill import __version__
from splatdistill.atomic import atomic_write_stream, atomic_write_text
from splatdistill.backbones import split_label
from splatdistill.config import flat_config
from splatdistill.data.scene import Scene
from splatdistill.errors import UserError
from splatdistill.eval import report
from splatdistill.eval.config import PAIR_TASKS, PROBE_TASKS, EvalConfig, parse_tasks
from splatdistill.eval.data import PreparedData, load_extra_datasets, plan_pairs, prepare_data, resolve_data
from splatdistill.eval.features import BackboneEntry, Mirrored, get_features, load_backbone_spec
from splatdistill.eval.report import FigureData
from splatdistill.eval.tasks import FLIPPED_EVAL, run_tasks, token_kind
from splatdistill.threads import resolve_threads, torch_threads
from splatdistill.viz import pca_rgb

# ------------------------------------------------------------------------------------------ backbones


def resolve_backbones(backbones: Sequence[str | BackboneEntry], device: str) -> list[BackboneEntry]:
    """Backbone entries for spec strings (``LABEL=SPEC`` or ``SPEC``) or ready entries; labels made unique."""

    if not backbones:
        raise UserError("no backbone given (use --backbone SPEC)")
    entries = []
    for b in backbones:
        if isinstance(b, BackboneEntry):
            entries.append(b)
            continue

        label, spec = split_label(str(b))
        entries.append(BackboneEntry(label, spec, load_backbone_spec(spec, device)))
    seen: dict[str, int] = {}
    for e in entries:
        seen[e.label] = seen.get(e.label, 0) + 1
        if seen[e.label] > 1:
            e.label = f"{e.label}#{seen[e.label]}"
    return entries


# --------------------------------------------------------------------------------------------- driver


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
    name: str | None = None,
) -> dict:
    """Evaluate each backbone on ``data`` and write ``results.json``, ``report.md`` and figures to ``out_dir``.

    ``backbones``: spec strings (``dinov2_vits14``, a checkpoint path, ``random:ARCH``, ...; ``LABEL=SPEC``
    names the row) or :class:`BackboneEntry` objects. ``data``: a dataset path, ``"rooms"``, or a list
    of :class:`Scene`. ``tasks``: names from :data:`TASKS` (default all). Returns the results dict that
    is also written to ``results.json``. ``name`` names the data in the report (default: the folder's name).
    """
    cfg = config or EvalConfig()
    cfg.validate()
    with torch_threads(resolve_threads(cfg.run.threads)):
        return _evaluate(backbones, data, tasks, Path(out_dir), cfg, name)


def _evaluate(
    backbones: Sequence[str | BackboneEntry],
    data: str | Path | Sequence[Scene],
    tasks,
    out: Path,
    cfg: EvalConfig,
    data_name: str | None = None,
) -> dict:
    t_start = time.perf_counter()
    task_list = parse_tasks(tasks)
    if not backbones:
        raise UserError("no backbone given (use --backbone SPEC)")
    name, scenes = resolve_data(data)
    name = data_name or name
    if cfg.data.eval_split == "auto" and not any(s.split in ("val", "test") for s in scenes):
        # One capture, nothing held out: the multi-view tasks still run on its views, the probes cannot.
        probes = [t for t in task_list if t in PROBE_TASKS]
        task_list = [t for t in task_list if t not in PROBE_TASKS]
        if probes:
            print(
                f"eval: skipped {', '.join(probes)}: the data has no held-out (val or test) scenes to "
                "evaluate probes on",
                file=sys.stderr,
            )
        if not task_list:
            raise UserError(
                "the data has no held-out (val or test) scenes; the probes need them (put a scene in "
                "split val, or ask for --tasks correspondence,consistency)",
                name,
            )
        print(
            "eval: correspondence and consistency on the train scenes (the data has no held-out ones)", file=sys.stderr
        )
        cfg = replace(cfg, data=replace(cfg.data, eval_split="train"))
    entries = resolve_backbones(backbones, cfg.run.device)  # before the slow data loading: fail fast
    extra, extra_note = load_extra_datasets(cfg, task_list)
    prepared = prepare_data(name, scenes, task_list, cfg, extra)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory: {exc.strerror}", out) from None
    cache_dir = None if cfg.run.cache_dir == "" else Path(cfg.run.cache_dir) if cfg.run.cache_dir else out / "cache"

    images = {"eval": prepared.held_out.images}  # type: ignore[union-attr]
    if cfg.probe.depth_flip and "depth" in task_list:  # test-time flip averaging of the depth probe
        images[FLIPPED_EVAL] = Mirrored(prepared.held_out.images)  # type: ignore[union-attr]
    if prepared.train is not None:
        images["train"] = prepared.train.images
    for key, vs in prepared.extra.items():
        images[key] = vs.images
    plans = plan_pairs(prepared, cfg) if any(t in PAIR_TASKS for t in task_list) else {}
    assert prepared.held_out is not None
    fig_idx = prepared.figure_views
    figs = FigureData(
        views=[prepared.held_out.views[i] for i in fig_idx],
        titles=[f"{prepared.held_out.groups[i]} / {prepared.held_out.views[i].name}" for i in fig_idx],
        class_names=prepared.class_names,
        max_depth=cfg.probe.max_depth,
    )
    rows = [
        _backbone_row(entry, images, cache_dir, prepared, plans, task_list, cfg, fig_idx, figs, out)
        for entry in entries
    ]
    for line in skipped_tasks(rows):
        print(f"eval: {line}", file=sys.stderr)
    results_doc = _jsonable(_results_doc(data, prepared, task_list, plans, cfg, rows, extra_note, t_start))
    results_doc["files"] = report.write_all(results_doc, out, figs if cfg.run.figures else None)
    results_doc["wall_time_s"] = time.perf_counter() - t_start
    atomic_write_text(out / "results.json", json.dumps(results_doc, indent=2))
    return results_doc


def skipped_tasks(rows: list[dict]) -> list[str]:
    """'skipped TASK (on DATA): REASON' for every task (or pair dataset) a result marks as skipped."""
    seen: dict[str, None] = {}
    for row in rows:
        for task, result in row["results"].items():
            if not isinstance(result, dict):
                continue
            if "skipped" in result:
                seen[f"skipped {task}: {result['skipped']}"] = None
            for dataset, sub in result.items():
                if isinstance(sub, dict) and "skipped" in sub:
                    seen[f"skipped {task} on {dataset}: {sub['skipped']}"] = None
    return list(seen)


def _backbone_row(
    entry: BackboneEntry,
    images,
    cache_dir,
    prepared: PreparedData,
    plans,
    task_list,
    cfg: EvalConfig,
    fig_idx,
    figs: FigureData,
    out: Path,
) -> dict:
    """Features of one backbone (cached), every task on them, and its row of the results."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    raw = any(token_kind(t, cfg) == "raw" for t in task_list)  # raw tokens only when a task reads them
    feats = get_features(entry, images, cache_dir, cfg.run.batch_size, cfg.run.device, cfg.run.progress, raw=raw)
    timings["features_s"] = time.perf_counter() - t0
    saved: dict | None = {} if cfg.probe.save_predictions else None
    with torch_threads(cfg.run.task_threads):
        results = run_tasks(entry, feats, prepared, plans, task_list, cfg, fig_idx, figs, timings, saved)
    if saved:
        assert prepared.held_out is not None
        saved["view_names"] = np.array(
            [f"{g}/{v.name}" for g, v in zip(prepared.held_out.groups, prepared.held_out.views)]
        )
        name = f"{re.sub(r'[^A-Za-z0-9._-]+', '_', entry.label)}.npz"
        atomic_write_stream(out / "predictions" / name, lambda fh: np.savez_compressed(fh, **saved))
    if fig_idx:
        figs.pca[entry.label] = pca_rgb([feats.patch["eval"][i] for i in fig_idx], seed=cfg.run.seed)
    timings["total_s"] = sum(timings.values())
    model = entry.model
    return {
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
    }


def _results_doc(data, prepared: PreparedData, task_list, plans, cfg: EvalConfig, rows, extra_note, t_start) -> dict:
    return {
        "splatdistill_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tasks": task_list,
        "data": {
            "name": prepared.name,
            "source": str(data) if isinstance(data, (str, Path)) else "in-memory scenes",
            "train_split": cfg.data.train_split,
            "eval_split": prepared.held_out_split,
            **prepared.scenes,
            "input_size": list(prepared.input_size),
            "class_names": prepared.class_names,
            "pairs": {k: len(p.pairs) for k, p in plans.items()},
            "notes": [extra_note] if extra_note else [],
        },
        "config": flat_config(cfg),  # one level, by option name, as key=value takes them
        "backbones": rows,
        "wall_time_s": time.perf_counter() - t_start,
    }
