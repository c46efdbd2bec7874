"""Patch-feature time per image for a backbone (default DINOv2 ViT-S/14 at 224x224)."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from splatdistill.backbones import load_backbone
from splatdistill.distill.student import add_lora, trainable_parameter_count


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="dinov2_vits14")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    bb = load_backbone(args.backbone)
    x = torch.rand(args.batch, 3, args.size, args.size)
    times = []
    with torch.inference_mode():
        bb.patch_features(x)  # warm-up
        for _ in range(args.repeats):
            t = time.perf_counter()
            bb.patch_features(x)
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(f"backbone {bb.name}: {args.size}x{args.size}, batch {args.batch}, {torch.get_num_threads()} threads")
    print(f"  patch features: median {med * 1000:.1f} ms per batch, {med / args.batch * 1000:.1f} ms per image "
          f"(min {min(times) * 1000:.1f} ms, {args.repeats} runs)")
    if hasattr(bb, "model"):
        add_lora(bb)
        print(f"  default LoRA student (r=8, alpha=8, qkv+proj): {trainable_parameter_count(bb):,} trainable parameters "
              f"of {sum(p.numel() for p in bb.parameters()):,}")
    return 0
