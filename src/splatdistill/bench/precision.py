"""The same training run in fp32 and in another precision (bf16 by default): loss at the start and the end,
how closely the two final students agree, and the time each took.

Both runs draw the same batches from the same initial weights; the students' patch features are compared
(cosine per token, both students evaluated in fp32) on the first batches of the stream, beside how far
training moved the fp32 student from its start, which puts the difference in scale.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from splatdistill.distill.config import TrainConfig
from splatdistill.distill.trainer import Trainer


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="rooms", help="dataset folder or 'rooms' (default)")
    p.add_argument("--steps", type=int, default=100, help="training steps of each run")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp16"), help="compared against fp32")
    p.add_argument("--compare-batches", type=int, default=4, help="batches the final students are compared on")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="training config overrides")


@torch.no_grad()
def _features(trainer: Trainer, steps: range) -> list[torch.Tensor]:
    trainer.student.eval()
    return [
        trainer.student.backbone.patch_features(
            trainer.batch_for_step(s).target.images.flatten(0, 1).to(trainer.device)
        ).float()
        for s in steps
    ]


def _cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(torch.cat([F.cosine_similarity(x, y, dim=1).flatten() for x, y in zip(a, b)]).mean())


def _train(args: argparse.Namespace, precision: str) -> tuple[Trainer, dict, float, list[torch.Tensor]]:
    cfg = TrainConfig.load(
        None,
        [
            f"data={args.data}",
            f"out={tempfile.mkdtemp(prefix='bench_precision_')}",
            f"steps={args.steps}",
            "progress=false",
            "val_samples=0",
            *args.overrides,
            f"precision={precision}",
        ],
    )
    trainer = Trainer(cfg)
    start = _features(trainer, range(args.compare_batches))
    t = time.perf_counter()
    result = trainer.fit()
    return trainer, result, time.perf_counter() - t, start


def run(args: argparse.Namespace) -> int:
    runs = {p: _train(args, p) for p in ("fp32", args.precision)}
    compare = range(args.compare_batches)
    final = {p: _features(r[0], compare) for p, r in runs.items()}
    tr = runs["fp32"][0]
    print(
        f"bench precision: {tr.cfg.model.backbone}, {args.steps} steps on {args.data}, {tr.device}, "
        f"{tr.num_workers} data workers"
    )
    print(
        f"  {'precision':10s} {'loss first 10':>14s} {'loss last 10':>13s} {'agreement first 10':>19s} "
        f"{'last 10':>8s} {'s/step':>8s} {'total s':>8s}"
    )
    for trainer, result, seconds, _ in runs.values():
        h = result["history"]
        first, last = h[:10], h[-10:]
        print(
            f"  {trainer.precision:10s} {statistics.mean(x['loss'] for x in first):14.4f} "
            f"{statistics.mean(x['loss'] for x in last):13.4f} {statistics.mean(x['agreement'] for x in first):19.4f} "
            f"{statistics.mean(x['agreement'] for x in last):8.4f} "
            f"{statistics.median(x['step_time'] for x in h):8.3f} {seconds:8.1f}"
        )
    moved = 1 - _cosine(runs["fp32"][3], final["fp32"])
    apart = 1 - _cosine(final["fp32"], final[args.precision])
    print(
        f"  final students, fp32 vs {args.precision}: mean token cosine {1 - apart:.5f} (1 - cos = {apart:.2e}); "
        f"training moved the fp32 student by 1 - cos = {moved:.2e} from its start"
    )
    return 0
