"""View sampling for Splat-and-Distill: two context views and one or more target views per sample.

Contexts ``(i, j)`` of one scene are picked either a fixed number of frames apart (``gap``), by the
reference code's frame-number rule (``mode="frames"``, see :class:`SamplerConfig`), or —
the default — so that the rotation accumulated along the path from ``i`` to ``j`` lies in
``baseline_deg`` (the rooms paths turn 10-25 degrees per view, so 25-65 degrees means 2-4 views
apart). Targets are views strictly between the contexts (``target="between"``, as in the paper:
context frames some distance apart, target in between), or any other view that sees enough of
what the contexts see (``target="overlap"``, measured by depth reprojection when depth exists,
otherwise by the angle between viewing directions). Every choice comes from a seeded Generator:
the same (seed, epoch, index) always gives the same sample.

:class:`MultiViewDataset` turns samples into typed :class:`~splatdistill.data.views.Sample` objects
(optionally resized, K scaled to match) and :func:`collate_views` batches them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from splatdistill.errors import UserError
from splatdistill.geometry.cameras import rotation_angle_deg
from splatdistill.geometry.warp import view_warp

from .scene import Scene
from .views import Sample, Views, collate_samples, fit_size, parse_size


@dataclass(frozen=True)
class SamplerConfig:
    num_targets: int = 1
    gap: int | tuple[int, int] | None = None  # frames between contexts (fixed or [lo, hi]); None: use baseline_deg
    baseline_deg: tuple[float, float] = (25.0, 65.0)  # accumulated rotation between contexts
    target: str = "between"  # "between" | "overlap"
    min_overlap: float = 0.3  # target="overlap": share of target pixels seen by a context
    # "frames" is the reference code's ScanNet++ sampler: views sorted by the frame number in their name,
    # contexts exactly ``gap`` (default 8) apart in that numbering (a removed frame leaves a hole: no pair
    # spans it with fewer views), the target anywhere from the first context to the second, inclusive
    mode: str = "rotation"  # "rotation" | "frames"


REFERENCE_GAP = 8  # frames between the reference code's ScanNet++ context views


def frame_number(name: str, position: int) -> int:
    """The frame number in a view's name (the last run of digits of its file stem: DSC01234.JPG -> 1234,
    frame_000120 -> 120); the view's position when its name has none."""
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    digits = re.findall(r"\d+", stem)
    return int(digits[-1]) if digits else position


@dataclass(frozen=True)
class SampleIndex:
    """Which views make a sample: scene number, context pair, targets."""

    scene: int
    context: tuple[int, int]
    targets: tuple[int, ...]


class ViewSampler:
    """Seeded sampler of (scene, context pair, targets) over a list of scenes."""

    def __init__(self, scenes: list[Scene], config: SamplerConfig | None = None, seed: int = 0):
        self.scenes = scenes
        self.config = cfg = config or SamplerConfig()
        self.seed = seed
        if cfg.target not in ("between", "overlap"):
            raise UserError(f"unknown target mode '{cfg.target}' (choose between or overlap)")
        if cfg.mode not in ("rotation", "frames"):
            raise UserError(f"unknown sampler '{cfg.mode}' (choose rotation or frames)")
        if cfg.num_targets < 1:
            raise UserError("num_targets must be at least 1")
        self._overlap_cache: dict[tuple[int, int, int], float] = {}
        # frames mode: (view index, frame number) per scene, sorted by frame number
        self.frames = [
            sorted(((k, frame_number(v.name, k)) for k, v in enumerate(s.views)), key=lambda x: x[1]) for s in scenes
        ]
        self.frame_of = [dict(f) for f in self.frames]  # view index -> frame number
        # Candidate context pairs per scene (each with at least num_targets possible targets).
        self.pairs: list[list[tuple[int, int]]] = [
            self._frame_pairs(k) if cfg.mode == "frames" else self._pairs(s) for k, s in enumerate(scenes)
        ]
        self.usable = [k for k, p in enumerate(self.pairs) if p]
        if not self.usable:
            turn = max(
                (
                    sum(
                        rotation_angle_deg(s.views[k].cam_to_world, s.views[k + 1].cam_to_world)
                        for k in range(len(s) - 1)
                    )
                    for s in scenes
                ),
                default=0.0,
            )
            hint = (
                (
                    "; for a capture that turns less, set sampler=frames context_gap=N (contexts N views apart "
                    "in name order, the target between)"
                )
                if cfg.mode == "rotation"
                else ""
            )
            raise UserError(
                f"no scene has a context pair for gap={cfg.gap} / baseline {cfg.baseline_deg} deg with "
                f"{cfg.num_targets} target(s) {cfg.target}; scenes have {sorted({len(s) for s in scenes})} views, "
                f"turning at most {turn:.1f} deg from first to last view{hint}"
            )

    def _pairs(self, scene: Scene) -> list[tuple[int, int]]:
        cfg, n = self.config, len(scene)
        poses = [v.cam_to_world for v in scene.views]
        steps = np.array([rotation_angle_deg(poses[k], poses[k + 1]) for k in range(n - 1)])
        cum = np.concatenate([[0.0], np.cumsum(steps)])
        out = []
        for i in range(n):
            for j in range(i + 1, n):
                if cfg.gap is not None:
                    lo, hi = (cfg.gap, cfg.gap) if isinstance(cfg.gap, int) else cfg.gap
                    if not lo <= j - i <= hi:
                        continue
                elif not cfg.baseline_deg[0] <= cum[j] - cum[i] <= cfg.baseline_deg[1]:
                    continue
                n_between = j - i - 1
                if cfg.target == "between" and n_between < cfg.num_targets:
                    continue
                if cfg.target == "overlap" and n - 2 < cfg.num_targets:
                    continue
                out.append((i, j))
        return out

    def _frame_pairs(self, scene_idx: int) -> list[tuple[int, int]]:
        """frames mode: context pairs exactly ``gap`` frame numbers apart, as view indices."""
        cfg = self.config
        gap = cfg.gap if isinstance(cfg.gap, int) else REFERENCE_GAP
        by_number = {f: k for k, f in self.frames[scene_idx]}
        out = []
        for k, f in self.frames[scene_idx]:
            j = by_number.get(f + gap)
            if j is not None and len(self._frame_targets(scene_idx, k, j)) >= cfg.num_targets:
                out.append((k, j))
        return out

    def _frame_targets(self, scene_idx: int, i: int, j: int) -> list[int]:
        """frames mode: views whose frame number lies between the contexts', both included."""
        number = self.frame_of[scene_idx]
        lo, hi = sorted((number[i], number[j]))
        return [k for k, f in self.frames[scene_idx] if lo <= f <= hi]

    def _overlap(self, scene_idx: int, t: int, c: int) -> float:
        """Share of target t's pixels that context c sees (depth reprojection on a coarse grid)."""
        key = (scene_idx, t, c)
        if key in self._overlap_cache:
            return self._overlap_cache[key]
        scene = self.scenes[scene_idx]
        rt, rc = scene.views[t], scene.views[c]
        vt = scene.load_view(t)
        if vt.depth is None:
            # No depth: viewing directions within 45 degrees count as overlapping.
            zt, zc = rt.cam_to_world[:3, 2], rc.cam_to_world[:3, 2]
            val = float(max(0.0, (zt @ zc - math.cos(math.radians(45))) / (1 - math.cos(math.radians(45)))))
        else:
            step = max(1, min(vt.depth.shape) // 32)
            ok, _, uv, z = view_warp(vt, rc, step)
            inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < rc.width) & (uv[:, 1] >= 0) & (uv[:, 1] < rc.height)
            val = float(inside.sum() / max(ok.size, 1))
        self._overlap_cache[key] = val
        return val

    def sample(self, rng: np.random.Generator) -> SampleIndex:
        cfg = self.config
        k = self.usable[int(rng.integers(len(self.usable)))]
        i, j = self.pairs[k][int(rng.integers(len(self.pairs[k])))]
        if cfg.mode == "frames":  # the reference: left and right context, target between them inclusive
            targets = rng.choice(self._frame_targets(k, i, j), size=cfg.num_targets, replace=False)
            return SampleIndex(k, (i, j), tuple(int(t) for t in sorted(targets)))
        if rng.random() < 0.5:  # either order along the path
            i, j = j, i
        lo, hi = min(i, j), max(i, j)
        if cfg.target == "between":
            cands = list(range(lo + 1, hi))
        else:
            n = len(self.scenes[k])
            cands = [
                t
                for t in range(n)
                if t not in (i, j) and max(self._overlap(k, t, i), self._overlap(k, t, j)) >= cfg.min_overlap
            ]
            if len(cands) < cfg.num_targets:
                cands = list(range(lo + 1, hi)) or [t for t in range(n) if t not in (i, j)]
        targets = rng.choice(cands, size=cfg.num_targets, replace=False)
        return SampleIndex(k, (i, j), tuple(int(t) for t in sorted(targets)))

    def sample_at(self, index: int, epoch: int = 0) -> SampleIndex:
        """Deterministic sample number ``index`` of ``epoch``."""
        return self.sample(np.random.default_rng([self.seed, epoch, index]))


class MultiViewDataset(Dataset):
    """Samples of 2 context + T target views as dicts of tensors (see :meth:`__getitem__`).

    ``length`` samples per epoch (default: the number of views in all usable scenes); call
    :meth:`set_epoch` to draw new samples. ``size`` resizes every view, scaling K consistently and never
    squashing: ``(H, W)`` or ``"HxW"`` is exact (a view of another aspect ratio is centre-cropped to it
    first), an int is the short side (each sample keeps its views' aspect ratio; see :func:`fit_size`).
    ``mask_mode`` picks segments (see :mod:`.masks`).
    """

    def __init__(
        self,
        scenes: list[Scene],
        config: SamplerConfig | None = None,
        seed: int = 0,
        size: tuple[int, int] | int | str | None = None,
        mask_mode: str = "auto",
        length: int | None = None,
    ):
        self.sampler = ViewSampler(scenes, config, seed)
        self.scenes = scenes
        self.size = None if size is None else parse_size(size)
        self.mask_mode = mask_mode
        self.length = length if length is not None else sum(len(scenes[k]) for k in self.sampler.usable)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        """Sample number ``index`` of the current epoch: 2 context and ``num_targets`` target :class:`Views`."""
        if not 0 <= index < self.length:
            raise IndexError(index)
        s = self.sampler.sample_at(index, self.epoch)
        scene = self.scenes[s.scene]

        loaded = {i: scene.load_view(i) for i in (*s.context, *s.targets)}
        first = loaded[s.context[0]]
        size = None if self.size is None else fit_size(self.size, first.height, first.width)

        def views(ids: tuple[int, ...]) -> Views:
            return Views.from_view_data([loaded[i] for i in ids], ids, self.mask_mode, size, scene=scene.name)

        return Sample(views(s.context), views(s.targets), scene.name, torch.tensor(s.scene))


def collate_views(batch: list[Sample]) -> Sample:
    """Stack samples (see :func:`splatdistill.data.views.collate_samples`)."""
    return collate_samples(batch)
