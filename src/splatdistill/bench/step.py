"""Seconds per Splat-and-Distill training step, split by phase, against the backbone passes alone."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from splatdistill.data.views import fit_size
from splatdistill.distill.config import TrainConfig
from splatdistill.distill.trainer import StepTimes, Trainer


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="rooms", help="dataset folder or 'rooms' (default)")
    p.add_argument("--steps", type=int, default=12, help="measured steps (after 2 warm-up steps)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="training config overrides")


def run(args: argparse.Namespace) -> int:
    out = tempfile.mkdtemp(prefix="bench_step_")
    cfg = TrainConfig.load(None, [f"data={args.data}", f"out={out}", f"steps={args.steps + 2}", "progress=false",
                                  *args.overrides])
    trainer = Trainer(cfg)
    batches = [trainer.batch_for_step(i) for i in range(args.steps + 2)]
    phases: dict[str, list[float]] = {}
    totals = []
    for i, batch in enumerate(batches):
        times = StepTimes()
        t = time.perf_counter()
        trainer.train_step(batch, times)
        total = time.perf_counter() - t
        if i >= 2:
            totals.append(total)
            for k, v in times.values.items():
                phases.setdefault(k, []).append(v)

    # the backbone passes alone, on the same batches: teacher forward of the contexts (no grad),
    # student forward + backward of the targets (through the LoRA adapters)
    student = trainer.student.backbone
    teacher = trainer.teacher.module.backbone
    alone = []
    for batch in batches[2:]:
        ctx = batch.context.images.flatten(0, 1)
        tgt = batch.target.images.flatten(0, 1)
        t = time.perf_counter()
        with torch.no_grad():
            teacher.patch_features(ctx)
        feats = student.patch_features(tgt)
        feats.float().pow(2).mean().backward()
        alone.append(time.perf_counter() - t)
    trainer.optimizer.zero_grad(set_to_none=True)

    med = statistics.median(totals)
    med_alone = statistics.median(alone)
    d, m = cfg.data, cfg.method
    img = batches[0].context
    render = fit_size(d.render_size, img.height, img.width)
    print(f"bench step: {cfg.model.backbone}, {img.height}x{img.width}, batch {cfg.optim.batch_size}, "
          f"2 context + {d.num_targets} target, render {render[0]}x{render[1]}, loss {m.loss} "
          f"({m.prototypes} prototypes), {torch.get_num_threads()} threads, {args.steps} steps")
    print(f"  whole step: median {med:.3f} s")
    names = {"teacher_forward": "teacher forward", "splat": "upsample+lift+render+blend",
             "student_forward": "student forward", "student_backward": "student backward + Adam",
             "head_loss": "head + loss", "ema": "EMA update"}
    for key, label in names.items():
        if key in phases:
            m = statistics.median(phases[key])
            print(f"  {label:28s} {m:7.3f} s  {100 * m / med:5.1f}%")
    split = statistics.median(phases["splat"])
    print(f"  3D part share: {100 * split / med:.1f}% (goal <= 25%)")
    print(f"  backbone passes alone: median {med_alone:.3f} s; whole step / backbone = {med / med_alone:.2f}x (goal <= 1.5x)")
    return 0
