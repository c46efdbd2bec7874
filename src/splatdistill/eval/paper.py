"""``suite=paper``: the paper's benchmarks in their native layouts, each with its protocol, and one table.

:data:`BENCHMARKS` is the registry (a :class:`~splatdistill.registry.Registry`, like timm's pretrained
configs): the name a user passes as ``--data NAME=PATH``, the loader of the native layout, the tasks the paper reports on it, and the
``EvalConfig`` values of its protocol (depth range and evaluation crop, input size, pairs). Any other
name (``rooms``, ``mydata=PATH``) is read by :func:`splatdistill.data.load_dataset` and gets the paper's
heads and losses with no dataset-specific preset. :func:`evaluate_paper` runs :func:`evaluate` once per
dataset into ``OUT/<name>/`` and writes ``OUT/report.md`` + ``OUT/results.json`` laid out like the
paper's table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from splatdistill.atomic import atomic_write_text
from splatdistill.config import build_config
from splatdistill.data import load_dataset, resolve_root
from splatdistill.data.scene import Scene
from splatdistill.errors import UserError
from splatdistill.eval.benchmarks import ade20k, fit3d_probes, kitti, nyuv2, scannet1500
from splatdistill.eval.config import EvalConfig, parse_tasks
from splatdistill.eval.features import BackboneEntry
from splatdistill.eval.report import markdown_table
from splatdistill.eval.runner import _jsonable, evaluate, resolve_backbones
from splatdistill.registry import Registry

ALL_VIEWS = 10**9  # the paper evaluates on every view; the CPU budget flags can still cap it
# ADE20K's 20,210 training images would hold ~80 GB of features and images at 512 px; 1,500 of them with
# the 2,000 validation images measured ~3.9 MB a view, ~15 GB in all (docs/evaluation.md)
ADE20K_TRAIN_VIEWS = 1500


@dataclass(frozen=True)
class Benchmark:
    """One of the paper's datasets: how to read it and which protocol it is scored with."""

    title: str
    load: Callable[[Path, EvalConfig], list[Scene]]
    tasks: tuple[str, ...]
    preset: dict[str, Any] = field(default_factory=dict)
    protocol: str = ""
    note: Callable[[Path], str] | None = None  # what the files found decide (e.g. which normals NYUv2 has)


def _generic(path: Path, cfg: EvalConfig) -> list[Scene]:
    return load_dataset(path)


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
BENCHMARKS.register(
    "nyu",
    Benchmark(
        "NYUv2",
        lambda p, c: nyuv2.load_nyuv2(p, classes=c.data.nyu_classes),
        ("depth", "normals", "segmentation"),
        dict(
            min_depth=1e-3,
            max_depth=10.0,
            depth_crop="nyu_eigen",
            depth_flip=True,
            normals_crop="center_square",
            nyu_classes=13,
            resolution=480,
            loss_res=120,
            max_train_views=ALL_VIEWS,
            max_eval_views=ALL_VIEWS,
            middlebury=False,
        ),
        "official 795/654 split of the labelled set; depth 0.001 < d < 10 m inside the Eigen crop, flip-averaged, "
        "metrics per image; normals in the central 480x480 crop, metrics per image; segmentation on 13 classes",
        lambda p: f"normals: {nyuv2.normals_source(p)}",
    ),
)
BENCHMARKS.register(
    "kitti",
    Benchmark(
        "KITTI",
        lambda p, c: kitti.load_kitti(p),
        ("depth",),
        dict(
            min_depth=1e-3,
            max_depth=80.0,
            depth_crop="kitti_garg",
            depth_flip=True,
            resolution=352,
            loss_res=352,
            max_train_views=ALL_VIEWS,
            max_eval_views=ALL_VIEWS,
            middlebury=False,
        ),
        "Eigen split, KB crop 352x1216; depth 0.001 < d < 80 m inside the Garg crop, flip-averaged, metrics per "
        "image; the probe loss at full resolution (the LiDAR ground truth is sparse)",
    ),
)
BENCHMARKS.register(
    "ade20k",
    Benchmark(
        "ADE20K",
        lambda p, c: ade20k.load_ade20k(p),
        ("segmentation",),
        dict(resolution=512, max_train_views=ADE20K_TRAIN_VIEWS, max_eval_views=ALL_VIEWS, middlebury=False),
        f"train on {ADE20K_TRAIN_VIEWS} of the training images (spread evenly), score on all of validation; 150 "
        "classes, 0 ignored; mIoU over classes with a non-empty union",
    ),
)
BENCHMARKS.register(
    "scannet1500",
    Benchmark(
        "ScanNet-1500",
        lambda p, c: scannet1500.load_scannet1500(p),
        ("correspondence",),
        dict(resolution=480, corr_min_overlap=0.0, corr_pairs=1500, max_eval_views=ALL_VIEWS, middlebury=False),
        "the 1500 test pairs at 640x480, matched as Probe3D does (every pixel with depth at 160x120, cosine "
        "nearest neighbour, best 1000 by ratio); recall at 5/10/20 px, by relative rotation",
    ),
)
BENCHMARKS.register(
    "scannet",
    Benchmark(
        "ScanNet",
        lambda p, c: fit3d_probes.load_probe_set(p, "scannet_probe"),
        ("depth", "segmentation"),
        dict(
            min_depth=1e-3,
            max_depth=10.0,
            depth_crop="nyu_eigen",
            depth_flip=True,
            resolution=480,
            loss_res=120,
            max_train_views=ALL_VIEWS,
            max_eval_views=ALL_VIEWS,
            middlebury=False,
        ),
        "FiT3D's probe set; depth 0.001 < d < 10 m inside the Eigen crop, flip-averaged, metrics per image; "
        "40 classes, 0 ignored",
    ),
)
BENCHMARKS.register(
    "scannetpp",
    Benchmark(
        "ScanNet++",
        lambda p, c: fit3d_probes.load_probe_set(p, "scannetpp_probe"),
        ("depth", "segmentation"),
        dict(
            min_depth=1e-3,
            max_depth=20.0,
            depth_flip=True,
            resolution=584,
            loss_res=146,
            max_train_views=ALL_VIEWS,
            max_eval_views=ALL_VIEWS,
            middlebury=False,
        ),
        "FiT3D's probe set; depth at 584x876, 0.001 < d < 20 m, no crop, flip-averaged, metrics per image; "
        "100 classes, 0 ignored",
    ),
)

#: The headline metric of each benchmark in the paper's table: (dataset, task, key, header).
HEADLINES = [
    ("ade20k", "segmentation", "miou", "ADE20K mIoU ↑"),
    ("kitti", "depth", "abs_rel", "KITTI AbsRel ↓"),
    ("nyu", "depth", "abs_rel", "NYUv2 AbsRel ↓"),
    ("scannet", "depth", "abs_rel", "ScanNet AbsRel ↓"),
    ("scannetpp", "depth", "abs_rel", "ScanNet++ Rel ↓"),
    ("nyu", "normals", "rmse_deg", "NYUv2 normals RMSE ↓"),
    ("nyu", "segmentation", "miou", "NYUv2 mIoU ↑"),
    ("scannet1500", "correspondence", "recall_10", "ScanNet-1500 R@10 ↑"),
]
COLUMNS = {
    "depth": [
        ("abs_rel", "AbsRel ↓", "{:.4f}"),
        ("rmse", "RMSE ↓", "{:.3f}"),
        ("delta1", "δ1 ↑", "{:.3f}"),
        ("delta2", "δ2 ↑", "{:.3f}"),
        ("delta3", "δ3 ↑", "{:.3f}"),
    ],
    "normals": [
        ("mean_deg", "mean ↓", "{:.2f}"),
        ("median_deg", "median ↓", "{:.2f}"),
        ("rmse_deg", "RMSE ↓", "{:.2f}"),
        ("pct_11_25", "11.25° ↑", "{:.1f}"),
        ("pct_22_5", "22.5° ↑", "{:.1f}"),
        ("pct_30", "30° ↑", "{:.1f}"),
    ],
    "segmentation": [("miou", "mIoU ↑", "{:.3f}"), ("pixel_acc", "pixel acc. ↑", "{:.3f}")],
    "correspondence": [
        ("recall_5", "R@5 ↑", "{:.3f}"),
        ("recall_10", "R@10 ↑", "{:.3f}"),
        ("recall_20", "R@20 ↑", "{:.3f}"),
    ],
}


def parse_data_args(items: Sequence[str]) -> dict[str, str]:
    """``NAME=PATH`` (or a bare PATH / ``rooms``, named after itself) -> {name: path}, names unique."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = (Path(item).name or item), item
        if not name or not path:
            raise UserError(f"--data {item!r}: expected NAME=PATH (names: {', '.join(BENCHMARKS)}, or any other)")
        if name in out:
            raise UserError(f"--data {name} given twice")
        out[name] = path
    return out


#: The paper's protocol on any other dataset: its depth range floor and test-time flip; the data's own splits.
GENERIC_PRESET: dict[str, Any] = dict(min_depth=1e-3, depth_flip=True)


def protocol_of(name: str) -> Benchmark:
    return BENCHMARKS.find(name) or Benchmark(
        name,
        _generic,
        (),
        dict(GENERIC_PRESET),
        "the dataset's own splits; the paper's heads, losses, tokens and metrics",
    )


def evaluate_paper(
    backbones: Sequence[str | BackboneEntry],
    datasets: dict[str, str | Path],
    out_dir: str | Path,
    config_for: Callable[[dict[str, Any]], EvalConfig] | None = None,
    tasks: str | Sequence[str] | None = None,
) -> dict:
    """Each dataset under its protocol into ``out_dir/<name>/``, then the combined table.

    ``config_for(preset)`` builds the EvalConfig of one dataset from its preset (the CLI layers the
    user's flags over it); by default the preset over EvalConfig's defaults. ``tasks`` restricts every
    dataset to those tasks (default: the tasks the paper reports on each).
    """
    if not datasets:
        raise UserError("suite paper needs at least one --data NAME=PATH")
    out = Path(out_dir)
    make = config_for or (lambda preset: build_config(EvalConfig, preset, "preset", validate=False))
    wanted = None if tasks is None else parse_tasks(tasks)
    t0 = time.perf_counter()
    entries: list[BackboneEntry] | None = None
    docs: dict[str, dict] = {}
    notes: dict[str, str] = {}
    for name, path in datasets.items():
        bench = protocol_of(name)
        cfg = make({**bench.preset, "suite": "paper"})
        cfg = replace(cfg, run=replace(cfg.run, suite="paper"), probe=replace(cfg.probe, depth_use_cls=True))
        cfg.validate()
        if entries is None:  # load every backbone once, fail fast before reading any dataset
            entries = resolve_backbones(backbones, cfg.run.device)
        root = resolve_root(path)
        if str(path) != "rooms" and not root.exists():
            raise UserError(f"--data {name}: not found", root)
        scenes = bench.load(root, cfg)
        names = bench.tasks or tuple(wanted or ())
        task_list = [t for t in (names or parse_tasks(None)) if wanted is None or t in wanted]
        if not task_list:
            raise UserError(
                f"--data {name}: none of the requested tasks is scored on {bench.title} "
                f"(its tasks: {', '.join(bench.tasks)})"
            )
        note = bench.note(root) if bench.note else ""
        print(
            f"eval: {bench.title} ({name}): {', '.join(task_list)} on {sum(len(s) for s in scenes)} views"
            + (f"; {note}" if note else ""),
            flush=True,
        )
        doc = evaluate(entries, scenes, task_list, out / name, cfg, name=name)
        doc["data"]["source"] = str(path)
        docs[name] = doc
        notes[name] = note
    combined = _jsonable(
        {
            "suite": "paper",
            "datasets": {
                k: {
                    "title": protocol_of(k).title,
                    "protocol": protocol_of(k).protocol + (f"; {notes[k]}" if notes[k] else ""),
                    "path": str(datasets[k]),
                    "results": d,
                }
                for k, d in docs.items()
            },
            "wall_time_s": time.perf_counter() - t0,
        }
    )
    atomic_write_text(out / "results.json", json.dumps(combined, indent=2))
    atomic_write_text(out / "report.md", render_paper_report(combined))
    return combined


def _result(doc: dict, label: str, task: str, dataset: str) -> dict:
    row = next(b for b in doc["backbones"] if b["label"] == label)
    r = row["results"].get(task, {})
    return r.get(dataset, {}) if task in ("correspondence", "consistency") else r


def render_paper_report(combined: dict) -> str:
    """The headline table (one column per benchmark, as in the paper), then one table per dataset and task."""
    ds = combined["datasets"]
    if not ds:
        return "# Paper benchmarks\n\nno dataset evaluated\n"
    labels = [b["label"] for b in next(iter(ds.values()))["results"]["backbones"]]
    lines = [
        "# Paper benchmarks (suite=paper)",
        "",
        "Linear probes on frozen features with the heads, losses and metrics of the paper's evaluation code; "
        "optimisation budget and the differences listed in docs/evaluation.md are this machine's.",
        "",
    ]
    heads = [(d, t, k, h) for d, t, k, h in HEADLINES if d in ds and t in ds[d]["results"]["tasks"]]
    if heads:
        rows = [
            {f"{d}.{t}.{k}": _result(ds[d]["results"], label, t, d).get(k) for d, t, k, _ in heads} for label in labels
        ]
        cols = [(f"{d}.{t}.{k}", h, "{:.4f}") for d, t, k, h in heads]
        higher = {f"{d}.{t}.{k}": h.endswith("↑") for d, t, k, h in heads}
        lines += ["## Headline metrics", "", markdown_table(labels, rows, cols, higher), ""]
    for name, entry in ds.items():
        doc = entry["results"]
        lines += [
            f"## {entry['title']} (`{name}`: {entry['path']})",
            "",
            f"Protocol: {entry['protocol']}.",
            "",
            f"{doc['data'].get('train_views', 0)} train views, {doc['data'].get('eval_views', 0)} held-out views, "
            f"input {doc['data']['input_size'][0]}x{doc['data']['input_size'][1]}.",
            "",
        ]
        for task in doc["tasks"]:
            if task not in COLUMNS:
                continue
            rows = [_result(doc, label, task, name) for label in labels]
            if all("skipped" in r for r in rows):
                lines += [f"*{task}: skipped ({rows[0]['skipped']})*", ""]
                continue
            higher = {k: h.endswith("↑") for k, h, _ in COLUMNS[task]}
            lines += [f"### {task}", "", markdown_table(labels, rows, COLUMNS[task], higher), ""]
            if task == "correspondence":
                bins = [b for b in (rows[0].get("recall_10_by_rotation") or {})]
                if bins:
                    brows = [
                        {b: (r.get("recall_10_by_rotation") or {}).get(b, {}).get("recall_10") for b in bins}
                        for r in rows
                    ]
                    counts = rows[0].get("recall_10_by_rotation") or {}
                    bcols = [(b, f"R@10 {b}° ({counts[b]['pairs']} pairs)", "{:.3f}") for b in bins]
                    lines += [markdown_table(labels, brows, bcols, {b: True for b in bins}), ""]
        times = [f"{b['label']} {b['timings'].get('total_s', 0):.0f} s" for b in doc["backbones"]]
        lines += [f"Time: {', '.join(times)} (features + probes), {doc['wall_time_s']:.0f} s wall.", ""]
    return "\n".join(lines)
