"""The evaluation's options (:class:`EvalConfig`) and task names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from splatdistill.devices import resolve_device
from splatdistill.errors import UserError
from splatdistill.eval.metrics import DEPTH_CROPS, NORMAL_CROPS

TASKS = ("depth", "normals", "segmentation", "correspondence", "consistency")


PROBE_TASKS = ("depth", "normals", "segmentation")


PAIR_TASKS = ("correspondence", "consistency")


@dataclass
class EvalDataConfig:
    """Which views the probes train and are scored on, and at which size."""

    resolution: int = 224  # short image side fed to the backbone (rounded to its patch size)
    train_split: Literal["train", "val", "test"] = "train"
    eval_split: Literal["auto", "train", "val", "test"] = (
        "auto"  # held-out scenes: "test" if the data has any, else "val"
    )
    max_train_views: int = 192  # spread evenly over the train scenes
    max_eval_views: int = 64  # spread evenly over the held-out scenes
    nyu_classes: int = 40  # NYUv2 segmentation classes: 40 (classMapping40.mat), 13 (class13Mapping.mat) or 894


@dataclass
class EvalProbeConfig:
    """The depth, normal and segmentation probes: training and scoring."""

    loss_res: int = 64  # short side of the grid the probe losses are computed on
    probe_steps: int = 300  # optimiser steps per probe
    probe_batch: int = 16  # views per probe step
    depth_lr: float = 2e-3
    normals_lr: float = 1e-2
    seg_lr: float = 1e-2
    depth_bins: int = 256
    min_depth: float = 0.01
    max_depth: float = 10.0  # metres; indoor protocol cap for bins and metrics
    depth_use_cls: bool = False  # the protocol concatenates CLS; off by default (docs/evaluation.md); suite=paper: on
    # average each held-out depth prediction with the mirrored prediction of the mirrored image (the
    # reference's test-time flip); suite=paper turns it on for the depth benchmarks that use it
    depth_flip: bool = False
    depth_crop: str = "none"  # evaluation crop of the depth metrics: none, nyu_eigen, kitti_garg, kitti_eigen
    normals_crop: str = "none"  # evaluation crop of the normal metrics: none, center_square (Probe3D's NYUv2)
    # suite=paper: the depth/normal probes and matching read the last block before the final LayerNorm, as
    # the paper's evaluation code does (eval/paper_probes.PAPER_TOKENS); false: the final tokens everywhere
    paper_tokens: bool = True
    save_predictions: bool = False  # write predictions/<label>.npz (every held-out prediction of the probes)


@dataclass
class EvalCorrespondenceConfig:
    """Matching and multi-view consistency on held-out view pairs."""

    corr_pairs: int = 48  # view pairs per dataset
    corr_queries: int = 8192  # cap on query pixels per pair (A's visible pixels on the matching grid)
    corr_keep: int = 1000  # best matches (by ratio) kept per pair
    corr_min_overlap: float = 0.25  # pair selection: share of A's valid pixels visible in B
    corr_grid_step: float = 2.0  # candidate spacing in view B, pixels of the 160x120 reference
    occlusion_tol: float = 0.05  # relative depth tolerance of the visibility test
    consistency_points: int = 1000  # points per pair
    middlebury: bool = True  # add the real Middlebury stereo pair to correspondence/consistency


@dataclass
class EvalRunConfig:
    """The protocol, the machine, the feature cache and what is written."""

    # "fast": the CPU protocol of docs/evaluation.md; "paper": the heads, losses and metrics of the paper's
    # evaluation code (eval/paper_probes.py), on whatever data is given
    suite: Literal["fast", "paper"] = "fast"
    seed: int = 0
    device: str = "auto"  # auto: CUDA when present, else cpu (splatdistill.devices); cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads for feature extraction (None: torch's setting)
    # Threads for probe training and matching: their ops are small, and on a shared 2-core machine two
    # threads measured ~15x slower per probe step than one (spinning on a busy core); see the docs.
    task_threads: int = 1
    batch_size: int = 16  # feature extraction batch
    cache_dir: str | None = None  # None: <out_dir>/cache; "" disables the feature cache
    figures: bool = True
    figure_views: int = 4
    progress: bool = True


@dataclass
class EvalConfig:
    """Every knob of an evaluation run; the defaults fit one ViT-S/14 on ``rooms`` in a few CPU minutes."""

    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    probe: EvalProbeConfig = field(default_factory=EvalProbeConfig)
    correspondence: EvalCorrespondenceConfig = field(default_factory=EvalCorrespondenceConfig)
    run: EvalRunConfig = field(default_factory=EvalRunConfig)

    def validate(self) -> None:
        d, p, c, r = self.data, self.probe, self.correspondence, self.run
        r.device = str(resolve_device(r.device))  # "auto" -> the device it stands for on this machine
        positive = [
            (d, "resolution"),
            (d, "max_train_views"),
            (d, "max_eval_views"),
            (p, "loss_res"),
            (p, "probe_steps"),
            (p, "probe_batch"),
            (p, "depth_bins"),
            (c, "corr_queries"),
            (c, "corr_keep"),
            (c, "consistency_points"),
            (r, "batch_size"),
        ]
        for group, name in positive:
            if getattr(group, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be at least 1, got {getattr(group, name)}")
        if (r.threads is not None and r.threads < 1) or r.task_threads < 1:
            raise UserError(f"threads must be at least 1, got {r.threads if r.task_threads >= 1 else r.task_threads}")
        if c.corr_pairs < 0:
            raise UserError(f"corr-pairs must be >= 0, got {c.corr_pairs}")
        if not 0 < p.min_depth < p.max_depth:
            raise UserError(f"need 0 < min-depth < max-depth, got {p.min_depth} and {p.max_depth}")
        if r.suite not in ("fast", "paper"):
            raise UserError(f"unknown suite '{r.suite}' (choose from fast, paper)")
        if p.depth_crop not in DEPTH_CROPS:
            raise UserError(f"unknown depth crop '{p.depth_crop}' (choose from {', '.join(DEPTH_CROPS)})")
        if p.normals_crop not in NORMAL_CROPS:
            raise UserError(f"unknown normals crop '{p.normals_crop}' (choose from {', '.join(NORMAL_CROPS)})")
        if d.nyu_classes not in (13, 40, 894):
            raise UserError(f"nyu-classes must be 13, 40 or 894, got {d.nyu_classes}")
        if d.eval_split not in ("auto", "train", "val", "test"):
            raise UserError(f"unknown eval split '{d.eval_split}' (choose from auto, train, val, test)")
        if d.train_split not in ("train", "val", "test"):
            raise UserError(f"unknown train split '{d.train_split}' (choose from train, val, test)")


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
