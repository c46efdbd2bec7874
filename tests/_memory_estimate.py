"""Compare the step-memory estimate (splatdistill.distill.memory_check) with measurements; prints the
tables of docs/training.md ("A step's memory"). Usage: ``python tests/_memory_estimate.py ROOMS_DATA``."""

from __future__ import annotations

import gc
import resource
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from splatdistill.distill.config import TrainConfig  # noqa: E402
from splatdistill.distill.memory_check import estimate_step_memory  # noqa: E402
from splatdistill.distill.parts import build_student  # noqa: E402
from splatdistill.distill.trainer import Trainer  # noqa: E402
from test_memory_check import TINY, _saved_bytes  # noqa: E402

CONFIGS = (
    ["image_size=64", "prototypes=4096"],
    ["image_size=128", "batch_size=2", "prototypes=1024"],
    [
        "backbone=random:vit_small_patch14_dinov2",
        "image_size=224",
        "batch_size=2",
        "prototypes=8192",
        "head_hidden=2048",
        "head_bottleneck=256",
    ],
)
MiB = 2**20


def saved_tensors(data: str) -> None:
    for extra in CONFIGS:
        cfg = TrainConfig.load(None, [f"data={data}", *TINY, *extra]).validate()
        student, _ = build_student(cfg)
        est = estimate_step_memory(cfg, student, (80, 80))
        s = cfg.data.image_size
        kept = _saved_bytes(student, torch.rand(cfg.optim.batch_size, 3, *student.backbone.input_size(s, s)))
        both = est.activations + est.head
        print(f"| {' '.join(extra)} | {both / MiB:.1f} MiB | {kept / MiB:.1f} MiB | {both / kept:.2f} |")


def first_step_peak(data: str) -> None:
    extra = ["image_size=224", "render_size=80", "batch_size=2", "prototypes=16384"]
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig.load(
            None,
            [
                f"data={data}",
                f"out={out}",
                "backbone=random:vit_small_patch14_dinov2",
                "loss=dino",
                "lifter=depth",
                "progress=false",
                "val_samples=0",
                *extra,
            ],
        )
        trainer = Trainer(cfg)
        batch = trainer.batch_for_step(0)
        gc.collect()
        resident = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
        trainer.train_step(batch)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        est = estimate_step_memory(cfg, trainer.student, (80, 80))
        parts = ", ".join(f"{k} {v / MiB:.0f}" for k, v in vars(est).items())
        print(
            f"{' '.join(extra)}: estimate {est.total / MiB:.0f} MiB ({parts}); measured {(peak - resident) / MiB:.0f} MiB"
        )


if __name__ == "__main__":
    saved_tensors(sys.argv[1])
    first_step_peak(sys.argv[1])
