"""The demo pipeline end to end, in a tiny configuration (tiny rooms, tiny random ViT, a few steps)."""

from __future__ import annotations

import json
import types

import pytest
import torch

from _data_helpers import tiny_rooms


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path_factory, tmp_path):
    import shutil

    from splatdistill.commands.demo_recipe import DemoConfig, run_demo

    # a folder not called "rooms": correspondence results are keyed by the dataset's name
    rooms = shutil.copytree(tiny_rooms(tmp_path_factory), tmp_path / "my_scenes")
    cfg = DemoConfig(
        out=str(tmp_path / "demo"),
        steps=3,
        data=str(rooms),
        backbone="random:vit_tiny_patch16_224",
        train={"image_size": 64, "render_size": 32, "checkpoint_every": 2, "ema_every": 1},
        eval={
            "resolution": 64,
            "max_train_views": 6,
            "max_eval_views": 4,
            "probe_steps": 5,
            "corr_pairs": 2,
            "corr_queries": 64,
            "corr_keep": 32,
            "consistency_points": 32,
            "middlebury": False,
            "figure_views": 1,
        },
        progress=False,
        oracle=True,
        ablations=True,
        castel=False,  # castel: only where the test data is cached
    )
    # steps are fixed and there is no time cap: nothing here depends on the machine's speed
    doc = run_demo(cfg)
    out = tmp_path / "demo"
    for name in (
        "report.md",
        "report.html",
        "training_curves.png",
        "demo.json",
        "eval/results.json",
        "runs/blend/student.safetensors",
        "runs/noblend/student.safetensors",
    ):
        assert (out / name).is_file(), name
    results = json.loads((out / "eval/results.json").read_text())
    labels = [b["label"] for b in results["backbones"]]
    from splatdistill.commands.demo_recipe import ALTERNATIVE_OBJECTIVE_NAME as ALT
    from splatdistill.commands.demo_recipe import DEMO_OBJECTIVE

    assert labels == [
        "DINOv2",
        "SnD blend (alpha 0.5)",
        "SnD noblend (alpha 1.0)",
        "SnD blend-oracle (alpha 0.5)",
        "SnD noblend-oracle (alpha 1.0)",
        "SnD blend-frozen (alpha 0.5)",
        f"SnD blend-{ALT} (alpha 0.5)",
        "SnD blend EMA teacher (alpha 0.5)",
        "SnD noblend EMA teacher (alpha 1.0)",
    ]
    # the variants lift feed-forward; their oracle twins lift ground-truth depth for the same step count
    train = {t["name"]: t for t in doc["training"]}
    assert train["blend"]["lifter"] == "auto" and train["blend-oracle"]["lifter"] == "depth"
    assert train["noblend-oracle"]["steps"] == train["noblend"]["steps"] == 3
    # the ablation twins: same steps, a frozen teacher (which stays the original) and the other objective
    assert train["blend-frozen"]["steps"] == train[f"blend-{ALT}"]["steps"] == train["blend"]["steps"]
    assert train["blend-frozen"]["config"]["ema_momentum"] == 1.0 and train[f"blend-{ALT}"]["config"]["loss"] == ALT
    from splatdistill.commands.demo_recipe import OBJECTIVES

    assert train["blend"]["config"]["loss"] == OBJECTIVES[DEMO_OBJECTIVE]["loss"] != ALT
    assert train["blend"]["config"]["cosine_weight"] == OBJECTIVES[DEMO_OBJECTIVE].get("cosine_weight", 0.0)
    from safetensors.torch import load_file

    frozen_teacher = load_file(train["blend-frozen"]["teacher"])
    moved_teacher = load_file(train["blend"]["teacher"])
    student = load_file(train["blend"]["student"])
    key = next(k for k in frozen_teacher if "qkv.weight" in k)
    assert not torch.equal(moved_teacher[key], frozen_teacher[key])  # the EMA teacher moved
    assert not torch.equal(student[key], moved_teacher[key])
    # the before/after table has every headline metric for every variant, with consistent arithmetic
    rows = doc["summary"]
    assert {r["variant"] for r in rows} == set(labels[1:])
    assert len(rows) == 4 * 8
    assert sum("correspondence" in r["metric"] for r in rows) == 8
    abl = {r["metric"]: r for r in doc["ablations"]}
    by_label = {(r["variant"], r["metric"]): r["change"] for r in rows}
    for metric, r in abl.items():
        assert r["frozen"] == by_label[("SnD blend-frozen (alpha 0.5)", metric)]
        assert r["teacher"] == by_label[("SnD blend EMA teacher (alpha 0.5)", metric)]
    assert "What the dynamic teacher and the objective buy" in (out / "report.md").read_text()
    oracle = doc["oracle"]
    assert len(oracle) == 8 and {r["variant"] for r in oracle} == {"blend", "noblend"}
    by = {(r["variant"], r["metric"]): r for r in rows}
    for r in oracle:
        assert (
            r["feed_forward"]
            == by[(f"SnD {r['variant']} (alpha {train[r['variant']]['blend_alpha']})", r["metric"])]["change"]
        )
    # the lifter's own held-out depth, against the constant baseline
    assert 0 < doc["lifter_depth"]["predictor"]["abs_rel"] < 1 and "constant_depth" in doc["lifter_depth"]
    for r in rows:
        assert abs(r["after"] - r["before"] - r["change"]) < 1e-9
    from test_reliability import assert_rendered, parse_report

    page = parse_report(out / "report.html")  # markdown rendered: tables, bold, inline figures; no raw syntax
    assert_rendered(page, min_tables=6)
    assert page.tags.get("h1", 0) >= 2  # the demo's report and the evaluation report below it
    md = (out / "report.md").read_text()
    assert "| blend | 0.5 | auto | 3 |" in md and "| blend-oracle | 0.5 | depth | 3 |" in md
    assert "->" in md.split("| blend | 0.5 | auto | 3 |")[1].splitlines()[0]
    assert "## The lifter's own depth (held-out)" in md and "share of the oracle's gain" in md
    # a second call reuses the finished runs (no retraining) and gives the same table
    again = run_demo(cfg)
    assert [r["after"] for r in again["summary"]] == [r["after"] for r in rows]


def test_a_slow_machine_runs_the_same_fixed_schedule(tmp_path_factory, tmp_path, monkeypatch):
    """The demo fixes its step count (issue 31: a time budget cut the schedule on a busy machine and halved
    the real-photo gain): with every step taking 100 s on an injected clock the run still does all its
    steps, with the one-cycle schedule run to its end, and the same steps as at full speed."""
    import splatdistill.distill.trainer as trainer_module
    from splatdistill.commands.demo_recipe import DemoConfig, train_variant

    clock = [0.0]
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    real_step = trainer_module.Trainer.train_step

    def slow_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        clock[0] += 100.0
        return out

    monkeypatch.setattr(trainer_module.Trainer, "train_step", slow_step)
    rooms = tiny_rooms(tmp_path_factory)
    cfg = DemoConfig(
        out=str(tmp_path / "demo"),
        data=str(rooms),
        backbone="random:vit_tiny_patch16_224",
        steps=12,
        train={"image_size": 64, "render_size": 32, "val_samples": 0, "checkpoint_every": 1000},
        progress=False,
    )
    summary = train_variant(cfg, "blend", 0.5, str(rooms), cfg.steps)
    lr, peak = summary["curve"]["lr"], summary["config"]["lr"]
    assert summary["steps"] == summary["config"]["steps"] == 12 and summary["minutes"] == pytest.approx(12 * 100 / 60)
    assert summary["config"]["schedule"] == "steps" and summary["config"]["max_minutes"] == 0
    assert max(lr) == pytest.approx(peak, rel=0.05) and lr[-1] < 0.05 * peak
    from splatdistill.commands.demo_recipe import run_demo
    from splatdistill.errors import UserError

    with pytest.raises(UserError, match="fixes its step count with steps=5, not train.steps"):
        run_demo(DemoConfig(out=str(tmp_path / "d2"), data=str(rooms), train={"steps": 5}, progress=False))
