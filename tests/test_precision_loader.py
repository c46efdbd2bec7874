"""Mixed precision and the input pipeline (issue 29), checked on the CPU.

bf16 autocast: the teacher's tokens and the splatted targets stay within a stated tolerance of fp32, and a
student trained in bf16 fits a batch as the fp32 one does, with finite weights. The data loader: workers
build exactly the batches the training process would (so resume and the rank shards do not depend on them).
"""

from __future__ import annotations

import pytest
import torch

from _train_worker import TINY_RUN
from splatdistill.devices import default_workers, resolve_precision
from splatdistill.distill.config import TrainConfig
from splatdistill.distill.loader import step_loader
from splatdistill.distill.parts import StepTimes
from splatdistill.distill.trainer import Trainer
from splatdistill.errors import UserError

#: bf16 keeps 8 significant bits (relative rounding 2^-9); through the tiny ViT the teacher's tokens and the
#: splatted targets moved by 3.2e-3 and 2.3e-3 relative L2 (pytest -s prints them): the bound is ~10x that
BF16_REL_TOL = 3e-2


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _trainer(rooms, tmp_path, *extra: str) -> Trainer:
    cfg = TrainConfig.load(
        None, [f"data={rooms}", f"out={tmp_path}", *TINY_RUN, "val_samples=0", "steps=8", "lr=3e-3", *extra]
    )
    return Trainer(cfg)


def test_bf16_autocast_targets_match_fp32_and_a_bf16_student_fits_a_batch(rooms, tmp_path):
    fp32 = _trainer(rooms, tmp_path / "a", "precision=fp32")
    bf16 = _trainer(rooms, tmp_path / "b", "precision=bf16")
    assert bf16.precision == "bf16" and fp32.precision == "fp32"
    batch = fp32.batch_for_step(0)
    with torch.no_grad():
        images = batch.context.images.flatten(0, 1)
        tok32 = fp32.teacher.module.backbone.patch_features(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            tok16 = bf16.teacher.module.backbone.patch_features(images)
        assert _rel(tok16, tok32) < BF16_REL_TOL
        t32, m32, _ = fp32.teacher_targets(batch, StepTimes())
        t16, m16, _ = bf16.teacher_targets(batch, StepTimes())
    assert t16.dtype == torch.float32  # the splatter composites in fp32 whatever the networks ran in
    assert torch.equal(m16, m32) and m32.any()
    sel = m32.view(t32.shape[0], 1, *t32.shape[-2:]).expand_as(t32)  # the supervised tokens
    print(f"bf16 vs fp32: teacher tokens {_rel(tok16, tok32):.2e}, splatted targets {_rel(t16[sel], t32[sel]):.2e}")
    assert _rel(t16[sel], t32[sel]) < BF16_REL_TOL
    losses = {}
    for name, tr in (("fp32", fp32), ("bf16", bf16)):  # the same batch again and again: the loss must fall
        losses[name] = [tr.train_step(batch)["loss"] for _ in range(6)]
        assert tr.weights_finite(collective=False)
    assert losses["bf16"][-1] < losses["bf16"][0] - 1e-3
    drop32, drop16 = losses["fp32"][0] - losses["fp32"][-1], losses["bf16"][0] - losses["bf16"][-1]
    print(f"loss over 6 steps on one batch: fp32 {losses['fp32']}, bf16 {losses['bf16']}")
    assert drop16 == pytest.approx(drop32, rel=0.25)


def test_loader_workers_build_the_same_batches_as_the_training_process(rooms, tmp_path):
    tr = _trainer(rooms, tmp_path, "batch_size=2", "num_workers=0")
    expected = [tr.batch_for_step(s) for s in range(3, 7)]
    got = list(step_loader(tr.step_batches, 3, 7, workers=2, pin=False))
    assert len(got) == len(expected) == 4
    for a, b in zip(got, expected):
        assert a.scene == b.scene
        for va, vb in ((a.context, b.context), (a.target, b.target)):
            assert torch.equal(va.images, vb.images) and torch.equal(va.segments, vb.segments)
            assert torch.equal(va.cameras.cam_to_world, vb.cameras.cam_to_world) and torch.equal(va.depths, vb.depths)
    assert not torch.equal(got[0].target.images, got[1].target.images)  # the steps differ


def test_precision_and_worker_defaults():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu)
    with pytest.raises(UserError, match="precision must be one of"):
        resolve_precision("fp8", cpu)
    assert default_workers(cpu, 1, cores=2) == 1 and default_workers(cpu, 1, cores=1) == 0
    assert default_workers(cpu, 1, cores=64) == 2 and default_workers(gpu, 1, cores=64) == 8
    assert default_workers(gpu, 8, cores=16) == 1
    with pytest.raises(UserError, match="num_workers"):
        TrainConfig.load(None, ["num_workers=-2"]).validate()
