"""Where the student's targets come from: one :class:`TargetSource` per choice of the method.

``targets=splat`` (the method): the teacher's context features lifted and splatted into the target view;
``targets=2d``: the teacher's own features of the target view (the 2D baseline); ``targets=splat+2d``:
splatted where the context covers a token, the 2D target elsewhere; ``method=fit3d``: renders of per-scene
feature fields fitted before training (FiT3D-style, :mod:`splatdistill.baselines.fit3d`). The trainer asks
its source for targets and never asks which one it has; :data:`TARGET_SOURCES` maps the config's value
(:attr:`~.config.MethodConfig.target_source`) to the class.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

import torch
from torch import Tensor

from splatdistill.baselines.fit3d import Fit3DTargets
from splatdistill.data.sampler import MultiViewDataset
from splatdistill.data.views import Sample, fit_size
from splatdistill.devices import autocast
from splatdistill.distill.config import TrainConfig
from splatdistill.distill.distributed import DistInfo
from splatdistill.distill.parts import SnDModel, StepTimes, fill_uncovered, plain_targets, require_depth
from splatdistill.errors import UserError
from splatdistill.lifters.online import OnlineRefiner
from splatdistill.splat import splat_targets

#: tokens (B*T, C, h, w), supervised mask (B*T, h*w), coverage (B, T, h, w)
Targets = tuple[Tensor, Tensor, Tensor]

__all__ = [
    "TARGET_SOURCES",
    "Fit3DSource",
    "SplatAnd2DTargets",
    "SplatTargets",
    "TargetSource",
    "Targets",
    "TeacherTargets",
    "make_target_source",
]


class TargetSource(Protocol):
    """Makes a batch's targets on the device. ``held_out``: it can make them for scenes it was not built
    on (the held-out agreement); ``refiner`` / ``metrics``: the lifter refiner it trains, if any, and what
    its last step measured (merged into the step's metrics)."""

    held_out: bool
    refiner: OnlineRefiner | None
    metrics: dict[str, float]

    def __call__(
        self, b: Sample, teacher: SnDModel, student: SnDModel, times: StepTimes, step: int, refine: bool = False
    ) -> Targets: ...


class TeacherTargets:
    """``targets=2d``: the teacher's own tokens of the target view(s), every token supervised."""

    held_out = True

    def __init__(
        self,
        cfg: TrainConfig,
        dataset: MultiViewDataset,
        device: torch.device,
        precision: str,
        dist: DistInfo,
        lifter: Any,
    ):
        self.cfg, self.device, self.precision = cfg, device, precision
        self.refiner: OnlineRefiner | None = None
        self.metrics: dict[str, float] = {}

    def plain(self, b: Sample, teacher: SnDModel, times: StepTimes) -> Targets:
        with times.phase("teacher_forward", self.device), torch.no_grad(), autocast(self.device, self.precision):
            tokens, mask, coverage = plain_targets(teacher.backbone, b.target.images)
        return tokens.float(), mask, coverage

    def __call__(
        self, b: Sample, teacher: SnDModel, student: SnDModel, times: StepTimes, step: int, refine: bool = False
    ) -> Targets:
        return self.plain(b, teacher, times)


class SplatTargets(TeacherTargets):
    """``targets=splat``: the context views' teacher tokens lifted by the lifter and splatted into the
    targets (:func:`splatdistill.splat.splat_targets`); optionally the lifter learns from the batches
    (``lifter_refine_every``, :class:`~splatdistill.lifters.online.OnlineRefiner`)."""

    def __init__(
        self,
        cfg: TrainConfig,
        dataset: MultiViewDataset,
        device: torch.device,
        precision: str,
        dist: DistInfo,
        lifter: Any,
    ):
        super().__init__(cfg, dataset, device, precision, dist, lifter)
        m = cfg.method
        self.lifter, self.splat = lifter, m.splat
        if m.lifter.strip() == "depth":
            require_depth(dataset.scenes, cfg.data.root)
        if m.lifter_refine_every > 0:
            self.refiner = OnlineRefiner(lifter, m.lifter_refine_every, m.lifter_refine_lr)
            if dist.world > 1:
                raise UserError(
                    "lifter_refine_every > 0 is single-process for now (each rank would refine its "
                    "own copy of the lifter); train without torchrun or set lifter_refine_every=0"
                )

    def splatted(self, b: Sample, teacher: SnDModel, times: StepTimes, step: int, refine: bool) -> Targets:
        dev = self.device
        B, V = b.context.images.shape[:2]
        R = fit_size(self.cfg.data.render_size, b.context.height, b.context.width)  # the 3D stage, aspect kept
        with times.phase("teacher_forward", dev), torch.no_grad(), autocast(dev, self.precision):
            ctx_tokens = teacher.backbone.patch_features(b.context.images.flatten(0, 1))
        ctx_tokens = ctx_tokens.float().unflatten(0, (B, V))  # lifting and splatting run in fp32
        grid = tuple(ctx_tokens.shape[-2:])
        with times.phase("splat", dev):
            context = replace(b.context.at(R), tokens=ctx_tokens)
            out = splat_targets(context, b.target.at(R), grid, self.splat, self.lifter)
        if refine and self.refiner is not None:  # iterative refinement: the lifter learns from these views
            with times.phase("lifter_refine", dev):
                self.metrics = self.refiner.maybe_step(step, context)
        return out.tokens.flatten(0, 1), out.valid.flatten(0, 1).flatten(1), out.coverage

    def __call__(
        self, b: Sample, teacher: SnDModel, student: SnDModel, times: StepTimes, step: int, refine: bool = False
    ) -> Targets:
        return self.splatted(b, teacher, times, step, refine)


class SplatAnd2DTargets(SplatTargets):
    """``targets=splat+2d``: splatted tokens where the context covers them, the teacher's own elsewhere; every
    token supervised (a student of another architecture has no copy of the teacher to keep there)."""

    def __call__(
        self, b: Sample, teacher: SnDModel, student: SnDModel, times: StepTimes, step: int, refine: bool = False
    ) -> Targets:
        plain = self.plain(b, teacher, times)
        tokens, mask, coverage = self.splatted(b, teacher, times, step, refine)
        return fill_uncovered(tokens, mask, plain[0]), torch.ones_like(mask), coverage


class Fit3DSource(TeacherTargets):
    """``method=fit3d``: renders of per-scene feature fields, every one fitted (or loaded from its cache) here,
    before the first step, to the initial teacher; it has no fields for held-out scenes."""

    held_out = False

    def __init__(
        self,
        cfg: TrainConfig,
        dataset: MultiViewDataset,
        device: torch.device,
        precision: str,
        dist: DistInfo,
        lifter: Any,
    ):
        super().__init__(cfg, dataset, device, precision, dist, lifter)
        self.fields = Fit3DTargets(cfg, dataset.scenes, device, cfg.run.progress, dist.is_main)

    def __call__(
        self, b: Sample, teacher: SnDModel, student: SnDModel, times: StepTimes, step: int, refine: bool = False
    ) -> Targets:
        grid = student.backbone.grid_size(b.context.height, b.context.width)
        with times.phase("splat", self.device):
            return self.fields.targets(b, grid, self.cfg.data.render_size)


#: the config's choice (:attr:`~.config.MethodConfig.target_source`) -> its source
TARGET_SOURCES: dict[str, type[TeacherTargets]] = {
    "splat": SplatTargets,
    "2d": TeacherTargets,
    "splat+2d": SplatAnd2DTargets,
    "fit3d": Fit3DSource,
}


def make_target_source(
    cfg: TrainConfig, dataset: MultiViewDataset, device: torch.device, precision: str, dist: DistInfo, lifter: Any
) -> TargetSource:
    return TARGET_SOURCES[cfg.method.target_source](cfg, dataset, device, precision, dist, lifter)
