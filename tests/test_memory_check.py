"""The step-memory estimate against what autograd really keeps (deterministic: the bytes of the tensors
saved for backward, counted by storage), and the refusal a step that cannot fit gets."""

from __future__ import annotations

import pytest
import torch

from splatdistill.distill.config import TrainConfig
from splatdistill.distill.losses import dino_loss
from splatdistill.distill.memory_check import check_step_memory, estimate_step_memory
from splatdistill.distill.parts import build_student
from splatdistill.errors import UserError

TINY = [
    "backbone=random:vit_tiny_patch16_224",
    "render_size=32",
    "head_hidden=64",
    "head_bottleneck=32",
    "deterministic=true",
    "seed=7",
    "loss=dino",
]


def _saved_bytes(student, images: torch.Tensor) -> int:
    """Bytes of the non-parameter tensors autograd saves for the student's forward and the DINO loss,
    plus the teacher logits alive beside them."""
    weights = {t.untyped_storage().data_ptr() for t in [*student.parameters(), *student.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        tokens, logits = student(images)
        teacher = torch.randn_like(logits)
        loss = dino_loss(logits, teacher)
    assert torch.isfinite(loss)
    return sum(seen.values()) + teacher.numel() * 4


@pytest.mark.parametrize(
    "extra", [["image_size=64", "prototypes=4096"], ["image_size=128", "batch_size=2", "prototypes=1024"]]
)
def test_the_estimate_is_within_a_factor_two_of_what_autograd_keeps(extra):
    cfg = TrainConfig.load(None, ["data=rooms", *TINY, *extra]).validate()
    student, _ = build_student(cfg)
    est = estimate_step_memory(cfg, student, (80, 80))
    size = cfg.data.image_size
    images = torch.rand(cfg.optim.batch_size, 3, *student.backbone.input_size(size, size))
    kept = _saved_bytes(student, images)
    ratio = (est.activations + est.head) / kept
    assert 1.0 <= ratio <= 2.0, (est, kept, ratio)  # never under: the peak adds gradient buffers to these


class _Scene:
    class _View:
        height, width = 576, 880

    views = [_View()]


class _Data:
    scenes = [_Scene()]


def test_the_paper_preset_is_refused_on_a_small_machine_and_can_be_forced(monkeypatch):
    cfg = TrainConfig.load(
        None, ["data=rooms", "preset=paper", "lifter=depth", "backbone=random:vit_small_patch14_dinov2"]
    ).validate()
    student, _ = build_student(cfg)
    monkeypatch.setattr("splatdistill.distill.memory_check.available_memory", lambda device: 16 << 30)
    with pytest.raises(
        UserError,
        match=r"a training step needs about \d+\.\d GiB \(ViT activations .*\) but 16.0 GiB "
        r"is available on cpu; lower image_size \(now 574x868\), batch_size \(now 14\)",
    ):
        check_step_memory(cfg, student, _Data(), torch.device("cpu"))
    cfg.run.memory_check = False
    check_step_memory(cfg, student, _Data(), torch.device("cpu"))  # forced: no error
