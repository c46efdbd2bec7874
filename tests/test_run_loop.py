"""The loop every training run shares (:class:`splatdistill.runs.Run`) and the method's parts: the loss
objects (head, centre, the centre's collective) and the registry of target sources.

The loop runs a counting step on an injected clock, so budgets and cadences are checked exactly."""

from __future__ import annotations

import json
import os
import signal
import typing

import numpy as np
import pytest
import torch
import torch.distributed as dist

from splatdistill.distill.config import MethodConfig, TrainConfig
from splatdistill.distill.distributed import DistInfo
from splatdistill.distill.heads import DINOHead, dino_loss, update_center
from splatdistill.distill.losses import DinoLoss, FeatureLoss, loss_for
from splatdistill.distill.targets import TARGET_SOURCES
from splatdistill.errors import UserError
from splatdistill.runs import Run, StallCheck, TimeBudget


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def counting_run(tmp_path, clock: Clock, seconds_per_step: float = 1.0, **kw) -> tuple[Run, list]:
    saves: list = []
    state = {"step": kw.pop("step", 0)}

    def step() -> dict[str, float]:
        clock.t += seconds_per_step
        state["step"] += 1
        return {"step": state["step"], "loss": 1.0 / state["step"], "share": 1.0}

    kw.setdefault("log_jsonl", tmp_path / "log.jsonl")
    run = Run(
        name="t",
        total=kw.pop("total", 10),
        step=state["step"],
        train_step=step,
        progress=False,
        save=lambda final: saves.append((state["step"], final)),
        **kw,
    )
    return run, saves


def test_the_loop_checkpoints_on_its_cadence_and_once_at_the_end_and_logs_every_step(tmp_path):
    clock = Clock()
    run, saves = counting_run(tmp_path, clock, checkpoint_every=4, budget=TimeBudget(0, 0, clock))
    res = run()
    assert res.steps == 10 and res.stopped_by is None and len(res.history) == 10
    assert saves == [(4, False), (8, False), (10, True)]  # step 10 is the end: one save, the final one
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 11))
    assert res.seconds == 10.0


def test_the_time_budget_stops_after_the_step_that_spends_it_and_counts_earlier_sessions(tmp_path):
    clock = Clock()
    run, saves = counting_run(
        tmp_path, clock, seconds_per_step=6.0, checkpoint_every=100, budget=TimeBudget(0.5, 12.0, clock)
    )  # 30 s, 12 of them used before
    res = run()
    assert res.steps == 3 and res.stopped_by == "time" and saves == [(3, True)]
    # the session's own time only (schedule=steps): 30 s of it
    clock2 = Clock()
    run, _ = counting_run(
        tmp_path / "b",
        clock2,
        seconds_per_step=6.0,
        session_budget=True,
        budget=TimeBudget(0.5, 12.0, clock2),
        log_jsonl=None,
    )
    assert run().steps == 5
    # a resumed run already out of time takes no step, and saves nothing new beyond its final call
    clock3 = Clock()
    run, saves = counting_run(tmp_path / "c", clock3, budget=TimeBudget(0.5, 31.0, clock3), log_jsonl=None, step=4)
    res = run()
    assert res.steps == 4 and res.history == [] and res.stopped_by == "time"


def test_sigterm_finishes_the_step_saves_and_returns_and_the_old_handler_comes_back(tmp_path):
    clock, seen = Clock(), []
    previous = signal.signal(signal.SIGTERM, lambda *a: seen.append("old"))
    try:
        run, saves = counting_run(
            tmp_path,
            clock,
            budget=TimeBudget(0, 0, clock),
            on_step=lambda m: m["step"] == 3 and os.kill(os.getpid(), signal.SIGTERM),
        )
        res = run()
        assert res.steps == 3 and res.stopped_by == "signal" and saves == [(3, True)]
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == ["old"]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_stop_on_another_rank_stops_this_one_and_the_stall_check_raises(tmp_path):
    clock = Clock()
    calls = []
    run, _ = counting_run(
        tmp_path, clock, budget=TimeBudget(0, 0, clock), agree=lambda flag: calls.append(flag) or len(calls) > 2
    )  # rank 1 asks after step 2
    assert run().steps == 2 and calls == [False, False, False]

    def fail(steps, whole, last):
        raise UserError(f"stalled {steps} {whole} {last}")

    run, saves = counting_run(
        tmp_path / "s", clock, budget=TimeBudget(0, 0, clock), log_jsonl=None, stall=StallCheck("share", 2.0, 3, fail)
    )
    with pytest.raises(UserError, match="stalled 3 False 1.0"):
        run()
    assert saves == []  # the stalled step is not checkpointed
    run, _ = counting_run(
        tmp_path / "w",
        clock,
        budget=TimeBudget(0, 0, clock),
        log_jsonl=None,
        total=2,
        stall=StallCheck("share", 2.0, 50, fail),
    )
    with pytest.raises(UserError, match="stalled 2 True"):  # a whole run shorter than stall_steps
        run()


def test_dino_loss_owns_its_head_centre_and_the_centres_all_reduce(monkeypatch):
    m = MethodConfig(
        prototypes=8, head_hidden=16, head_bottleneck=4, center_momentum=0.9, teacher_temp=0.5, student_temp=0.2
    )
    g = torch.Generator().manual_seed(3)
    before = torch.get_rng_state()
    head = DinoLoss.head(m, 12, seed=0)
    assert isinstance(head, DINOHead) and torch.equal(torch.get_rng_state(), before)  # its own stream
    assert FeatureLoss.head(m, 12, seed=0) is None and loss_for(m) is DinoLoss
    tokens, s_logits = torch.randn(2, 12, 3, 3, generator=g), torch.randn(2, 9, 8, generator=g)
    mask = torch.rand(2, 9, generator=g) > 0.3
    with torch.no_grad():
        t_logits = head(tokens.flatten(2).transpose(1, 2))
    reduced = []

    def all_reduce(t, op=None, **kw):  # two ranks holding the same centre: the sum is twice it
        reduced.append(t.shape)
        t.mul_(2)

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    loss = DinoLoss(m, torch.device("cpu"), DistInfo(world=2, joined=True), torch.no_grad)
    total, cons = loss(tokens, s_logits, tokens, mask, head, update=True)
    want = dino_loss(s_logits, t_logits, mask, 0.2, 0.5, torch.zeros(8))  # the centre lags one step
    assert torch.allclose(total, want) and float(cons) == 0.0
    assert reduced == [torch.Size([8])]
    assert torch.allclose(loss.center, update_center(torch.zeros(8), t_logits, mask, 0.9))
    total2, _ = loss(tokens, s_logits, tokens, mask, head)  # held-out: uses the centre, does not move it
    assert torch.allclose(total2, dino_loss(s_logits, t_logits, mask, 0.2, 0.5, loss.center)) and len(reduced) == 1


def test_every_targets_choice_has_a_source_and_the_refiner_needs_splatted_targets():
    targets = typing.get_args(typing.get_type_hints(MethodConfig)["targets"])
    assert set(TARGET_SOURCES) == {*targets, "fit3d"}
    assert MethodConfig(method="fit3d").target_source == "fit3d" and MethodConfig(targets="2d").target_source == "2d"
    for bad in (["targets=2d", "loss=cosine"], ["method=fit3d", "loss=l1"]):
        with pytest.raises(UserError, match="lifter_refine_every > 0 refines the lifter of splatted targets"):
            TrainConfig.load(None, [*bad, "lifter_refine_every=2"]).validate()


def test_dino_loss_with_cosine_weight_adds_the_tokens_cosine_term_float64():
    m = MethodConfig(
        prototypes=8, head_hidden=16, head_bottleneck=4, teacher_temp=0.5, student_temp=0.2, cosine_weight=3
    )
    g = torch.Generator().manual_seed(5)
    head = DinoLoss.head(m, 12, seed=0)
    s_tok, t_tok = torch.randn(2, 12, 3, 3, generator=g), torch.randn(2, 12, 3, 3, generator=g)
    s_logits, mask = torch.randn(2, 9, 8, generator=g), torch.rand(2, 9, generator=g) > 0.3
    loss = DinoLoss(m, torch.device("cpu"), DistInfo(world=1, joined=False), torch.no_grad)
    total, _ = loss(s_tok, s_logits, t_tok, mask, head)
    with torch.no_grad():
        t_logits = head(t_tok.flatten(2).transpose(1, 2))
    s64, t64 = s_tok.double().flatten(2).transpose(1, 2).numpy(), t_tok.double().flatten(2).transpose(1, 2).numpy()
    cos = (s64 * t64).sum(-1) / np.linalg.norm(s64, axis=-1) / np.linalg.norm(t64, axis=-1)
    want = float(dino_loss(s_logits, t_logits, mask, 0.2, 0.5)) + 3 * (1 - cos)[mask.numpy()].mean()
    assert abs(float(total) - want) < 1e-5
    for bad, msg in (
        (["loss=cosine", "cosine_weight=1"], "adds a cosine term to loss=dino"),
        (["cosine_weight=-1"], ">= 0"),
    ):
        with pytest.raises(UserError, match=msg):
            TrainConfig.load(None, bad).validate()
