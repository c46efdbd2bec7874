"""``splatdistill demo --compare``: the paper's three-way comparison, reproduced in kind on a CPU.

DINOv2 (no training), the FiT3D-style baseline (``method=fit3d``: per-scene fitted feature fields, L1,
as FiT3D) and Splat-and-Distill with and without semantic blending, every trained method with the
same student (LoRA on the offline DINOv2 ViT-S/14), the same fixed step count and the same learning
rate schedule, each with N seeds. All students are evaluated together on the held-out rooms (with
Middlebury's Motorcycle pair) and on the real captures available offline (commands/real_pairs.py).
The report gives mean and spread per metric, paired per-seed differences against DINOv2 and against
FiT3D-style, and the lifting time per scene of each method (a feed-forward lift against a per-scene fit).

Steps are fixed, never fitted to a time budget: the result must not depend on the machine's speed.
Finished runs are reused when the command is run again (the runs live in ``OUT/runs``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from splatdistill.atomic import atomic_write_text
from splatdistill.backbones import load_backbone
from splatdistill.baselines.fit3d import Fit3DConfig, field_config_of, fit_scene
from splatdistill.commands.demo_recipe import DEMO_TRAIN, DemoConfig, train_variant
from splatdistill.commands.demo_report import DATA
from splatdistill.commands.real_pairs import evaluate_real, real_datasets
from splatdistill.config import build_config
from splatdistill.data import load_dataset, resolve_root
from splatdistill.distill.config import TrainConfig
from splatdistill.errors import UserError
from splatdistill.eval.compare import Metric, paired_table, results_table, summarize
from splatdistill.eval.runner import EvalConfig, evaluate
from splatdistill.lifters import build_lifter, lift_scene
from splatdistill.report_html import write_html_report
from splatdistill.splat.lifter import SplatSettings
from splatdistill.splat.scene import load_scene_views_timed
from splatdistill.threads import torch_threads

#: method -> (label, training overrides on the demo recipe; None = the original backbone, not trained)
METHODS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "dinov2": ("DINOv2", None),
    "fit3d": ("FiT3D-style", {"method": "fit3d", "loss": "l1", "cosine_weight": 0.0, "blend_alpha": 1.0}),
    "snd-blend": ("SnD blend (α 0.5)", {"blend_alpha": 0.5}),
    "snd-noblend": ("SnD no-blend (α 1)", {"blend_alpha": 1.0}),
    # the separating runs (docs/compare.md): FiT3D-style with SnD's loss, and SnD with FiT3D's fixed teacher
    "fit3d-cosine": (
        "FiT3D-style, cosine",
        {"method": "fit3d", "loss": "cosine", "cosine_weight": 0.0, "blend_alpha": 1.0},
    ),
    "snd-frozen": ("SnD no-blend, frozen teacher", {"blend_alpha": 1.0, "ema_momentum": 1.0}),
}

#: metric key -> (evaluation it comes from: "rooms" or a real dataset's name, path in a results row)
READ: dict[str, tuple[str, tuple[str, ...]]] = {
    "depth_rmse": ("rooms", ("depth", "rmse")),
    "normals_deg": ("rooms", ("normals", "mean_deg")),
    "seg_miou": ("rooms", ("segmentation", "miou")),
    "rooms_r10": ("rooms", ("correspondence", DATA, "recall_10")),
    "moto_r5": ("rooms", ("correspondence", "middlebury", "recall_5")),
    "moto_r10": ("rooms", ("correspondence", "middlebury", "recall_10")),
    "castel_r5": ("castel", ("correspondence", "castel", "recall_5")),
    "castel_r10": ("castel", ("correspondence", "castel", "recall_10")),
}
METRICS = [
    Metric("depth_rmse", "depth RMSE (m)", 1.0, True, "{:.4f}"),
    Metric("normals_deg", "normals (deg)", 1.0, True, "{:.2f}"),
    Metric("seg_miou", "seg. mIoU", 100.0, False, "{:.1f}"),
    Metric("rooms_r10", "rooms corr. @10px", 100.0, False, "{:.1f}"),
    Metric("moto_r5", "Motorcycle @5px", 100.0, False, "{:.1f}"),
    Metric("moto_r10", "Motorcycle @10px", 100.0, False, "{:.1f}"),
    Metric("castel_r5", "castel @5px", 100.0, False, "{:.1f}"),
    Metric("castel_r10", "castel @10px", 100.0, False, "{:.1f}"),
    Metric("real_r5", "real pairs mean @5px", 100.0, False, "{:.1f}"),
]


@dataclass
class CompareConfig:
    out: str = "compare_out"
    steps: int = 300  # per trained run, fixed (no time budget)
    seeds: int = 3
    data: str = "rooms"
    backbone: str = "dinov2_vits14"
    methods: str = "dinov2,fit3d,snd-blend,snd-noblend"
    train: dict[str, Any] = field(default_factory=dict)  # overrides on the demo recipe (DEMO_TRAIN), every method
    eval: dict[str, Any] = field(default_factory=dict)  # EvalConfig overrides
    tasks: str = "depth,normals,segmentation,correspondence"
    real: list[str] = field(default_factory=list)  # extra real datasets (folders with posed views and depth)
    castel: bool = True  # the castel when its frames are cached (commands/real_pairs.py)
    share_fields: bool = True  # FiT3D-style: fit each scene's field once (seed 0) and reuse it for every seed
    timing_scenes: int = 2  # held-out scenes the lifting time is measured on (0 = not measured)
    timing_size: int = 112  # render size of the timed lift and fit (the trainer's default render_size)
    timing_iterations: int = 200  # Adam iterations of the timed per-scene fit (the trainer's default)
    progress: bool = True

    def method_list(self) -> list[str]:
        names = [m.strip() for m in self.methods.split(",") if m.strip()]
        unknown = [m for m in names if m not in METHODS]
        if unknown or not names:
            raise UserError(
                f"unknown compare method(s) {', '.join(unknown or ['(none)'])}; choose from {', '.join(METHODS)}"
            )
        return names


def run_name(method: str, seed: int) -> str:
    return f"{method}-s{seed}"


def field_config(values: dict[str, Any]) -> Fit3DConfig:
    """The field settings a ``method=fit3d`` run with these training values fits with (the trainer's own
    mapping), for its cache key."""
    return field_config_of(TrainConfig.from_dict(values, source="compare"))


def share_fields(values: dict[str, Any], cache: Path, seeds: range) -> int:
    """Make the fields fitted for seed 0 the cached fields of the other seeds (hard links): FiT3D fits a
    scene once; the training seeds then vary only the distillation, as for SnD, and the per-scene fit
    (~20 s a scene on 2 cores) is paid once. A key this misses only costs a refit. Returns the links made."""
    base = field_config({**values, "seed": 0})
    made = 0
    for scene in load_dataset(values["data"], split="train"):
        src = cache / f"{scene.name}-{base.key(values['backbone'], scene)}.pt"
        for seed in seeds:
            dst = cache / f"{scene.name}-{replace(base, seed=seed).key(values['backbone'], scene)}.pt"
            if src.is_file() and not dst.exists():
                os.link(src, dst)
                made += 1
    return made


def train_all(cfg: CompareConfig, data_root: str) -> dict[str, dict[int, dict]]:
    """method -> seed -> training summary (finished runs are reused)."""
    demo = DemoConfig(out=cfg.out, data=cfg.data, backbone=cfg.backbone, train=dict(cfg.train), progress=cfg.progress)
    cache = Path(cfg.out) / "fit3d_cache"
    runs: dict[str, dict[int, dict]] = {}
    for method in cfg.method_list():
        overrides = METHODS[method][1]
        if overrides is None:
            continue
        for seed in range(cfg.seeds):
            extra = {**overrides, "seed": seed, "val_samples": 0}
            if overrides.get("method") == "fit3d":
                extra["fit3d.cache"] = str(cache)  # fields keyed by scene, teacher, settings and seed
                if seed > 0 and cfg.share_fields:
                    share_fields(
                        {**DEMO_TRAIN, **cfg.train, "data": data_root, "backbone": cfg.backbone, **extra},
                        cache,
                        range(seed, seed + 1),
                    )
            if not (Path(cfg.out) / "runs" / run_name(method, seed) / "summary.json").is_file():
                print(f"compare: training {run_name(method, seed)} ({cfg.steps} steps)", flush=True)
            summary = train_variant(
                demo, run_name(method, seed), extra["blend_alpha"], data_root, cfg.steps, overrides=extra
            )
            if summary["scheduled_steps"] != cfg.steps:  # a finished run of an earlier comparison in this folder
                raise UserError(
                    f"runs/{run_name(method, seed)} was trained for {summary['scheduled_steps']} steps, "
                    f"not {cfg.steps}: compare in another --out folder",
                    cfg.out,
                )
            runs.setdefault(method, {})[seed] = summary
    return runs


def _read(row: dict, path: tuple[str, ...], data_name: str) -> float | None:
    node: Any = row.get("results", {})
    for key in path:
        key = data_name if key == DATA else key
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, (int, float)) else None


def collect(labels: list[tuple[str, int]], rooms: dict, real: dict[str, dict]) -> dict[str, dict[int, dict]]:
    """method -> seed -> metric key -> value, from the rooms results and the real datasets' results
    (rows in the order of ``labels``: (method, seed) per evaluated backbone)."""
    evals = {"rooms": rooms, **real}
    out: dict[str, dict[int, dict]] = {}
    for i, (method, seed) in enumerate(labels):
        row: dict[str, float | None] = {}
        for key, (source, path) in READ.items():
            doc = evals.get(source)
            row[key] = None if doc is None else _read(doc["backbones"][i], path, doc["data"]["name"])
        real_r5 = [row[k] for k in ("moto_r5", "castel_r5") if row[k] is not None]
        row["real_r5"] = sum(real_r5) / len(real_r5) if real_r5 else None
        out.setdefault(method, {})[seed] = row
    return out


def lifting_times(data_root: str, backbone: str, scenes: int, size: int = 112, iterations: int = 200) -> list[dict]:
    """Per held-out scene: the teacher's features (both methods need them), the feed-forward lift of all
    views with the shipped predictor (after one warm-up lift) and the FiT3D-style per-scene field fit
    (the trainer's default settings), timed one after the other in this process, on one thread (on a
    busy 2-core machine two threads made the field fit ~15x slower: small ops spinning on a shared core)."""
    if scenes <= 0:
        return []
    with torch_threads(1):
        return _lifting_times(data_root, backbone, scenes, size, iterations)


def _lifting_times(data_root: str, backbone: str, scenes: int, size: int, iterations: int) -> list[dict]:
    held = [s for s in load_dataset(data_root) if s.split in ("test", "val")][:scenes]
    teacher = load_backbone(backbone).eval()
    lifter = build_lifter("auto", SplatSettings())
    fcfg = Fit3DConfig(iterations=iterations, render_size=size)
    rows = []
    for scene in held:
        sv, teacher_s = load_scene_views_timed(scene, None, fcfg.render_size, teacher, fcfg.image_size, fcfg.mask)
        with torch.no_grad():
            lift_scene(sv, lifter, carry="features")
            t0 = time.perf_counter()
            g = lift_scene(sv, lifter, carry="features")
            lift_s = time.perf_counter() - t0
        _, stats = fit_scene(scene, teacher, fcfg)
        rows.append(
            {
                "scene": scene.name,
                "views": len(sv),
                "teacher_s": teacher_s,
                "lift_s": lift_s,
                "gaussians": len(g),
                "fit_s": stats["fit_seconds"],
                "fit_iterations": stats["iterations"],
            }
        )
    return rows


def _lifting_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    n = len(rows)
    lift = sum(r["lift_s"] for r in rows) / n
    fit = sum(r["fit_s"] for r in rows) / n
    teach = sum(r["teacher_s"] for r in rows) / n
    return [
        "## Lifting time per scene",
        "",
        (
            f"Mean over {n} held-out scenes ({rows[0]['views']} views each), one process on one thread; the teacher's "
            f"features ({teach:.2f} s per scene) are needed by both and not counted."
        ),
        "",
        "| method | lifting | per scene (s) |",
        "|---|---|---:|",
        "| DINOv2 | none | 0 |",
        f"| FiT3D-style | per-scene field fit ({rows[0]['fit_iterations']} Adam iterations) | {fit:.2f} |",
        f"| SnD (both) | feed-forward predictor (`lifter=auto`) | {lift:.2f} |",
        "",
        f"Feed-forward lifting is {fit / lift:.0f}x faster than the per-scene fit here.",
        "",
    ]


def write_report(cfg: CompareConfig, values: dict, runs: dict, timing: list[dict], notes: list[str]) -> Path:
    out = Path(cfg.out)
    methods = [m for m in cfg.method_list() if m in values]
    labels = {m: METHODS[m][0] for m in methods}
    metrics = [m for m in METRICS if any(v.get(m.key) is not None for r in values.values() for v in r.values())]
    train_rows = [
        f"| {labels[m]} | {s} | {r['steps']} | {r['minutes']:.1f} |"
        for m in methods
        for s, r in sorted(runs.get(m, {}).items())
    ]
    lines = [
        "# Splat-and-Distill against DINOv2 and FiT3D-style, same compute",
        "",
        (
            f"Student: LoRA on `{cfg.backbone}`; every trained method runs **{cfg.steps} steps** (fixed, no time "
            f"budget) with the demo's learning rate schedule, seeds 0..{cfg.seeds - 1}. Probes and matching are "
            "trained/run once per student with the evaluation's seed 0, so the spread below is the training seeds'."
        ),
        (
            f"SnD: the demo's recipe `{' '.join(f'{k}={v}' for k, v in {**DEMO_TRAIN, **cfg.train}.items())}`, "
            + (
                "lifter `auto` (the shipped feed-forward predictor). "
                if cfg.train.get("lifter", "auto") == "auto"
                else f"lifter `{cfg.train['lifter']}`. "
            )
            + "FiT3D-style: `method=fit3d loss=l1` (FiT3D's loss), "
            "per-scene fields on ground-truth depth fitted to the original teacher"
            + (" once per scene (seed 0) and shared by every seed." if cfg.share_fields else ", one set per seed.")
        ),
        "Cells: mean ± sample std [min, max] over seeds; DINOv2 is one value (no training).",
        "",
        *[f"- {n}" for n in notes],
        "",
        "## Results",
        "",
        results_table({m: values[m] for m in methods}, metrics, labels),
        "",
        "## Paired per-seed differences against DINOv2",
        "",
        "Mean ± std [min, max] of (method − DINOv2) over seeds, and on how many seeds the method is better.",
        "",
        paired_table(values, metrics, "dinov2", methods, labels),
        "",
    ]
    if "fit3d" in values:
        lines += [
            "## Paired per-seed differences against FiT3D-style",
            "",
            "Seed i of a method against seed i of FiT3D-style.",
            "",
            paired_table(values, metrics, "fit3d", [m for m in methods if m != "dinov2"], labels),
            "",
        ]
    lines += _lifting_section(timing)
    lines += ["## Training runs", "", "| method | seed | steps | minutes |", "|---|---:|---:|---:|", *train_rows, ""]
    text = "\n".join(lines)
    md = atomic_write_text(out / "compare.md", text)
    write_html_report(out / "compare.html", "Splat-and-Distill comparison", [(text, out)])
    return md


def run_compare(cfg: CompareConfig) -> dict:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data_root = str(resolve_root(cfg.data, progress=cfg.progress))
    runs = train_all(cfg, data_root)
    labels: list[tuple[str, int]] = []
    specs: list[str] = []
    for method in cfg.method_list():
        if METHODS[method][1] is None:
            labels.append((method, 0))
            specs.append(f"{METHODS[method][0]}={cfg.backbone}")
        for seed, s in sorted(runs.get(method, {}).items()):
            labels.append((method, seed))
            specs.append(f"{METHODS[method][0]} seed {seed}={s['student']}")
    ecfg = build_config(
        EvalConfig, {"progress": cfg.progress, "figures": False, **cfg.eval}, "compare eval", validate=False
    )
    rooms = evaluate(specs, data_root, cfg.tasks, out / "eval", ecfg)
    datasets = real_datasets(out / "real", cfg.real, castel=cfg.castel)
    real = evaluate_real(specs, datasets, out, ecfg)
    values = collect(labels, rooms, real)
    notes = [
        "real captures: Middlebury Motorcycle (with the rooms evaluation)"
        + "".join(f", {n} ({p})" for n, p in datasets.items())
        + ("" if "castel" in datasets or not cfg.castel else "; castel not cached, left out")
    ]
    timing = lifting_times(data_root, cfg.backbone, cfg.timing_scenes, cfg.timing_size, cfg.timing_iterations)
    md = write_report(cfg, values, runs, timing, notes)
    stats = summarize(values, METRICS)
    doc = {
        "config": asdict(cfg),
        "values": values,
        "lifting": timing,
        "stats": {m: {k: None if s is None else asdict(s) for k, s in v.items()} for m, v in stats.items()},
        "training": {
            m: {s: {k: v for k, v in r.items() if k != "curve"} for s, r in rs.items()} for m, rs in runs.items()
        },
        "report_md": str(md),
        "minutes": (time.perf_counter() - t0) / 60,
    }
    atomic_write_text(out / "compare.json", json.dumps(doc, indent=1))
    return doc
