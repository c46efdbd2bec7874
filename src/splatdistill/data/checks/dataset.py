"""``splatdistill data check``: validate a dataset and report every problem with its file.

Checks everything a loader checks (files present, images decodable and of the declared size,
K invertible, rotations orthonormal, ...) and then decodes every map (depth/normal/id sizes,
NaN, non-unit normals, labels out of range). Optionally measures geometric consistency on random
view pairs (:mod:`.consistency`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splatdistill.data.formats import detect_format, read_dataset
from splatdistill.data.formats.native import find_scene_dirs, load_scene
from splatdistill.data.scene import Scene
from splatdistill.data.validate import DatasetWarning, Problem
from splatdistill.errors import UserError

from .geometry import label_transfer_agreement, normal_agreement, reprojection_error


@dataclass
class CheckReport:
    path: Path
    format: str
    scenes: list[Scene] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    views_checked: int = 0
    bad_views: set[tuple[str, str]] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.problems


def _collect(fn, report: CheckReport, fallback_path: Path, scene: str = ""):
    """Run ``fn`` recording skipped-view warnings and a UserError as problems."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DatasetWarning)
        try:
            result = fn()
        except UserError as exc:
            report.problems.append(
                Problem(
                    exc.path or fallback_path, str(exc).removeprefix(f"{exc.path}: ") if exc.path else str(exc), scene
                )
            )
            result = None
    for w in caught:
        if isinstance(w.message, DatasetWarning) and w.message.problem is not None:
            p = w.message.problem
            report.problems.append(p)
            report.bad_views.add((p.scene, p.view))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return result


def check_dataset(path: str | Path, split: str | None = None, decode: bool = True) -> CheckReport:
    """Every problem in the dataset at ``path`` (nothing raised for bad data; see ``report.problems``)."""
    path = Path(path).expanduser()
    fmt = detect_format(path)
    report = CheckReport(path, fmt)
    if fmt == "splatdistill":
        root = path.parent if path.is_file() else path
        dirs = find_scene_dirs(root)
        if not dirs:
            report.problems.append(Problem(root, "no scene folders (*/scene.json)"))
        for d in dirs:
            if not (d / "scene.json").is_file():
                report.problems.append(Problem(d / "scene.json", "file not found (listed in dataset.json)", d.name))
                continue
            scene = _collect(lambda d=d: load_scene(d, skip_bad=True), report, d / "scene.json", d.name)
            if scene is not None and (split is None or scene.split == split):
                report.scenes.append(scene)
    else:
        scenes = _collect(lambda: read_dataset(path, split=split, skip_bad=True), report, path)
        report.scenes = scenes or []
    if decode:
        for scene in report.scenes:
            keep = []
            for rec in scene.views:
                report.views_checked += 1
                try:
                    rec.load()
                    keep.append(rec)
                except UserError as exc:
                    msg = str(exc).removeprefix(f"{exc.path}: ") if exc.path else str(exc)
                    report.problems.append(Problem(exc.path or path, msg, scene.name, rec.name))
                    report.bad_views.add((scene.name, rec.name))
            scene.views = keep
    else:
        report.views_checked = sum(len(s) for s in report.scenes)
    return report


@dataclass
class GeometryReport:
    pairs: int
    median_reprojection_rel_error: float
    visible_fraction: float
    median_normal_angle_deg: float
    label_agreement: float


def geometry_report(
    scenes: list[Scene], pairs_per_scene: int = 3, max_gap: int = 3, seed: int = 0
) -> GeometryReport | None:
    """Consistency of depth, normals and labels on random nearby view pairs of scenes that have them."""

    rng = np.random.default_rng(seed)
    rel, vis, ang, lab = [], [], [], []
    n = 0
    for scene in scenes:
        if len(scene) < 2:
            continue
        for _ in range(pairs_per_scene):
            i = int(rng.integers(len(scene)))
            j = int(np.clip(i + rng.integers(1, max_gap + 1) * (1 if rng.random() < 0.5 else -1), 0, len(scene) - 1))
            if i == j:
                continue
            a, b = scene.load_view(i), scene.load_view(j)
            if a.depth is None or b.depth is None:
                continue
            r = reprojection_error(a, b)
            rel.append(r.rel_errors)
            vis.append(r.visible_fraction)
            if a.normals is not None:
                ang.append(normal_agreement(a)[0])
            if a.instance is not None and b.instance is not None:
                lab.append(label_transfer_agreement(a, b)[0])
            n += 1
    if n == 0:
        return None
    allrel = np.concatenate(rel) if rel else np.array([np.nan])
    return GeometryReport(
        n,
        float(np.median(allrel)),
        float(np.mean(vis)),
        float(np.nanmedian(ang)) if ang else float("nan"),
        float(np.nanmean(lab)) if lab else float("nan"),
    )
