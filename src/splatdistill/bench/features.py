"""Patch-feature speed and memory per backbone: images/s and peak resident memory on this machine.

``splatdistill bench features --backbone dinov2_vits14 --backbone runs/mnv2/student.safetensors`` sets
a teacher beside its student at the same input size. Each backbone is measured in its own fresh process,
so that one model's peak memory does not hide the next one's.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import torch

from splatdistill.backbones import load_backbone
from splatdistill.bench.render import PeakRSS
from splatdistill.errors import UserError
from splatdistill.threads import configure_threads, default_threads


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backbone", action="append", default=None, help="backbone spec; repeat to compare (default: dinov2_vits14)"
    )
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: the cores this process may use)")


def measure(spec: str, size: int, batch: int, repeats: int, threads: int) -> dict:
    """Median seconds per batch of ``patch_features``, images/s, parameters and peak memory of one backbone
    (``peak_mb``: the process's peak resident memory, torch included; ``peak_over_start_mb``: what loading
    and running the model added to the peak reached by the imports)."""
    configure_threads(threads or default_threads())
    with PeakRSS() as mem, torch.inference_mode():
        bb = load_backbone(spec)
        x = torch.rand(batch, 3, size, size)
        times = []
        feats = bb.patch_features(x)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            bb.patch_features(x)
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    mb = 2.0**-20
    return {
        "spec": spec,
        "name": bb.name,
        "seconds_per_batch": med,
        "images_per_s": batch / med,
        "min_s": min(times),
        "grid": list(feats.shape[-2:]),
        "channels": int(feats.shape[1]),
        "parameters": sum(p.numel() for p in bb.parameters()),
        "peak_mb": mem.peak * mb,
        "peak_over_start_mb": (mem.peak - mem.start_rss) * mb,
        "threads": torch.get_num_threads(),
    }


def _child(queue, *args) -> None:
    try:
        queue.put(measure(*args))
    except Exception as exc:  # reported by the parent as one line
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run(args: argparse.Namespace) -> int:
    specs = args.backbone or ["dinov2_vits14"]
    ctx = mp.get_context("spawn")  # a fresh process per backbone: its own peak memory
    rows = []
    for spec in specs:
        q = ctx.Queue()
        proc = ctx.Process(target=_child, args=(q, spec, args.size, args.batch, args.repeats, args.threads))
        proc.start()
        row = q.get()
        proc.join()
        if "error" in row:
            raise UserError(f"backbone {spec!r}: {row['error']}")
        rows.append(row)
    print(
        f"bench features: {args.size}x{args.size}, batch {args.batch}, {rows[0]['threads']} threads, "
        f"median of {args.repeats} runs, each backbone in a fresh process"
    )
    print(
        f"  {'backbone':<44} {'grid':>7} {'ch':>5} {'params':>8} {'ms/image':>9} {'images/s':>9} {'peak MB':>8} {'+model MB':>9}"
    )
    for r in rows:
        grid = "x".join(map(str, r["grid"]))
        print(
            f"  {r['name'][:44]:<44} {grid:>7} {r['channels']:>5} {r['parameters'] / 1e6:>7.2f}M "
            f"{r['seconds_per_batch'] / args.batch * 1000:>9.1f} {r['images_per_s']:>9.1f} {r['peak_mb']:>8.0f} {r['peak_over_start_mb']:>9.0f}"
        )
    if len(rows) > 1:
        base = rows[0]
        for r in rows[1:]:
            print(
                f"  {r['name']}: {r['images_per_s'] / base['images_per_s']:.2f}x the images/s of {base['name']}, "
                f"{r['peak_mb'] / base['peak_mb']:.2f}x its peak memory"
            )
    return 0
