"""A training step's memory, estimated before the first step, so a configuration that cannot fit (the
paper's 574x868 frames, batch 14 and 65,536 prototypes on a CPU) stops with one line instead of a
MemoryError traceback or the kernel's OOM killer an hour into data loading.

The estimate adds what a step holds at its peak, in float32: the student ViT's activations kept for the
backward pass (per block ~``ACT_PER_TOKEN_DIM`` floats per token and channel, plus one block's
attention matrices), the DINO head's per-token logits for student and teacher (with softmax, log-softmax and
their gradients), the splatting stage's render buffers, and the optimizer state of what trains.
docs/training.md compares it with measured peaks; ``memory_check=false`` skips the check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from splatdistill.data.views import fit_size
from splatdistill.errors import UserError

F32 = 4
#: floats a ViT block keeps per token and channel for backward: 14 measured (the tensors autograd saves,
#: tests/test_memory_check.py; torch's fused CPU attention keeps no N x N matrix), plus 2 for the
#: gradient buffers alive while a block runs backward
ACT_PER_TOKEN_DIM = 16
#: copies of the (tokens x prototypes) logits alive at the head's peak: student logits, log-softmax and
#: its gradient, teacher logits and softmax targets
LOGIT_COPIES = 5
#: render buffers per rendered pixel and channel of each view (context teacher features, target render);
#: not calibrated like the parts above: see docs/training.md
RENDER_COPIES = 1
#: share of the available memory a step may plan to use (the rest: allocator slack, data, Python)
USABLE_SHARE = 0.9


@dataclass
class StepMemory:
    activations: int
    head: int
    render: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.activations + self.head + self.render + self.optimizer


def _vit_shape(backbone: torch.nn.Module) -> tuple[int, int]:
    """(blocks, heads) of a ViT-like backbone (attention modules with ``num_heads``); (12, 0) otherwise."""
    heads = [int(m.num_heads) for m in backbone.modules() if hasattr(m, "num_heads") and hasattr(m, "qkv")]
    return (len(heads), max(heads)) if heads else (12, 0)


def estimate_step_memory(cfg, student: torch.nn.Module, view_hw: tuple[int, int]) -> StepMemory:
    """Bytes a training step of ``cfg`` adds on top of the weights, for views of ``view_hw`` (H, W)."""
    d, m, o = cfg.data, cfg.method, cfg.optim
    backbone = student.backbone
    H, W = backbone.input_size(*fit_size(d.image_size, *view_hw))
    gh, gw = backbone.grid_size(H, W)
    tokens = gh * gw + 1
    images = o.batch_size * d.num_targets
    blocks, heads = _vit_shape(backbone)
    dim = int(backbone.embed_dim)
    # every block's saved tensors, plus one block's attention scores while it runs
    activations = images * (blocks * ACT_PER_TOKEN_DIM * tokens * dim + 2 * heads * tokens * tokens) * F32
    head = 0
    if m.loss == "dino":
        per_token = LOGIT_COPIES * m.prototypes + 4 * m.head_hidden + 2 * m.head_bottleneck
        head = images * gh * gw * per_token * F32
    rh, rw = fit_size(d.render_size, *view_hw)
    render = o.batch_size * (d.num_targets + 2) * rh * rw * (dim + 1) * RENDER_COPIES * F32
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    return StepMemory(activations, head, render, 3 * trainable * F32)


def available_memory(device: torch.device) -> int | None:
    """Bytes this process can still take: the GPU's free memory, or on a CPU MemAvailable capped by the
    cgroup limit; None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        free = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    for limit_file, used_file in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path("/sys/fs/cgroup", limit_file).read_text().strip()
            used = int(Path("/sys/fs/cgroup", used_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            free = min(free, int(limit) - used)
    return free


def check_step_memory(cfg, student: torch.nn.Module, dataset, device: torch.device) -> None:
    """Refuse, with the estimate and what to lower, a step that cannot fit (``memory_check=false`` skips).
    The views' aspect comes from the dataset's first view."""
    try:
        first = dataset.scenes[0].views[0]
    except (AttributeError, IndexError):  # a dataset of another kind: nothing to size the images by
        return
    free = available_memory(device) if cfg.run.memory_check else None
    if free is None:
        return
    est = estimate_step_memory(cfg, student, (first.height, first.width))
    if est.total <= USABLE_SHARE * free:
        return
    gb = 1 << 30
    parts = (
        f"ViT activations {est.activations / gb:.1f}, head logits {est.head / gb:.1f}, "
        f"render buffers {est.render / gb:.1f}, optimizer {est.optimizer / gb:.1f}"
    )
    raise UserError(
        f"a training step needs about {est.total / gb:.1f} GiB ({parts}) but {free / gb:.1f} GiB is "
        f"available on {device.type}; lower image_size (now {cfg.data.image_size}), batch_size (now "
        f"{cfg.optim.batch_size}), prototypes (now {cfg.method.prototypes}) or render_size (now "
        f"{cfg.data.render_size}), or pass memory_check=false to try anyway"
    )
