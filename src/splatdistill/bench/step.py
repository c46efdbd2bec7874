"""Seconds per Splat-and-Distill training step, split by phase, against the backbone passes alone.

The batches come through the trainer's input pipeline (:meth:`Trainer.batches`, ``num_workers`` data-loader
processes; 0 builds them inside the step): "data" is the time the step waits for its batch. On a CUDA device
the peak GPU memory is printed too, and the device and precision the run used (``precision=bf16`` etc.).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from splatdistill.data.views import fit_size
from splatdistill.devices import autocast
from splatdistill.distill.config import TrainConfig
from splatdistill.distill.trainer import StepTimes, Trainer

PHASES = {
    "data": "data (wait for the batch)",
    "teacher_forward": "teacher forward",
    "splat": "upsample+lift+render+blend",
    "student_forward": "student forward",
    "student_backward": "student backward + Adam",
    "head_loss": "head + loss",
    "ema": "EMA update",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="rooms", help="dataset folder or 'rooms' (default)")
    p.add_argument("--steps", type=int, default=12, help="measured steps (after 2 warm-up steps)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="training config overrides (device=, precision=, num_workers=, image_size=, ...)",
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(trainer: Trainer, n: int) -> tuple[list[float], dict[str, list[float]], list]:
    """Whole-step seconds and per-phase seconds of steps 2 .. n-1 (two warm-ups), and the batches used."""
    phases: dict[str, list[float]] = {}
    totals, used = [], []
    batches = trainer.batches(0, n)
    for i in range(n):
        times = StepTimes()
        t = time.perf_counter()
        with times.phase("data", trainer.device):
            batch = next(batches)
        trainer.train_step(batch, times)
        _sync(trainer.device)
        total = time.perf_counter() - t
        used.append(batch)
        if i >= 2:
            totals.append(total)
            for k, v in times.values.items():
                phases.setdefault(k, []).append(v)
    return totals, phases, used


def _backbones_alone(trainer: Trainer, batches) -> list[float]:
    """Teacher forward of the contexts (no grad) + student forward and backward of the targets (LoRA), in the
    run's precision, on the same batches."""
    student, teacher = trainer.student.backbone, trainer.teacher.module.backbone
    dev, alone = trainer.device, []
    for batch in batches:
        b = batch.to(dev)
        ctx, tgt = b.context.images.flatten(0, 1), b.target.images.flatten(0, 1)
        _sync(dev)
        t = time.perf_counter()
        with autocast(dev, trainer.precision):
            with torch.no_grad():
                teacher.patch_features(ctx)
            feats = student.patch_features(tgt)
        feats.float().pow(2).mean().backward()
        _sync(dev)
        alone.append(time.perf_counter() - t)
    trainer.optimizer.zero_grad(set_to_none=True)
    return alone


def run(args: argparse.Namespace) -> int:
    out = tempfile.mkdtemp(prefix="bench_step_")
    cfg = TrainConfig.load(
        None,
        [
            f"data={args.data}",
            f"out={out}",
            f"steps={args.steps + 2}",
            "progress=false",
            "val_samples=0",
            *args.overrides,
        ],
    )
    trainer = Trainer(cfg)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    totals, phases, batches = _time_steps(trainer, args.steps + 2)
    peak = torch.cuda.max_memory_allocated(trainer.device) if trainer.device.type == "cuda" else None
    med = statistics.median(totals)
    med_alone = statistics.median(_backbones_alone(trainer, batches[2:]))
    d, m = cfg.data, cfg.method
    img = batches[0].context
    render = fit_size(d.render_size, img.height, img.width)
    threads = f"{torch.get_num_threads()} threads" if trainer.device.type == "cpu" else str(trainer.device)
    print(
        f"bench step: {cfg.model.backbone}, {img.height}x{img.width}, batch {cfg.optim.batch_size}, "
        f"2 context + {d.num_targets} target, render {render[0]}x{render[1]}, loss {m.loss} "
        f"({m.prototypes} prototypes), {threads}, precision {trainer.precision}, "
        f"{trainer.num_workers} data workers, {args.steps} steps"
    )
    print(f"  whole step: median {med:.3f} s")
    for key, label in PHASES.items():
        if key in phases:
            v = statistics.median(phases[key])
            print(f"  {label:28s} {v:7.3f} s  {100 * v / med:5.1f}%")
    split = statistics.median(phases["splat"])
    views = cfg.optim.batch_size * d.num_targets
    print(
        f"  3D part share: {100 * split / med:.1f}% (goal <= 25%); lift+splat {views / split:.1f} target views/s "
        f"at render {render[0]}x{render[1]}"
    )
    print(
        f"  backbone passes alone: median {med_alone:.3f} s; whole step / backbone = {med / med_alone:.2f}x "
        "(goal <= 1.5x; <= 1.3x on a GPU at the paper's size in bf16)"
    )
    if peak is not None:
        print(f"  peak GPU memory: {peak / 2**30:.2f} GiB")
    return 0
