"""``demo --compare``: the report's statistics against a hand computation, and the command on a tiny run."""

from __future__ import annotations

import math

import pytest

from _data_helpers import tiny_rooms
from splatdistill.eval.compare import Metric, Stat, paired, paired_table, results_table, summarize

RECALL = Metric("r", "recall", 100.0, False, "{:.2f}")
ERROR = Metric("e", "error", 1.0, True, "{:.3f}")

#: a fake result set: DINOv2 once (no training), two trained methods with three seeds
FAKE = {
    "dinov2": {0: {"r": 0.50, "e": 1.0}},
    "fit3d": {0: {"r": 0.52, "e": 0.9}, 1: {"r": 0.55, "e": 1.1}, 2: {"r": 0.49, "e": 0.8}},
    "snd": {0: {"r": 0.56, "e": 0.95}, 1: {"r": 0.54, "e": None}, 2: {"r": 0.58, "e": 0.85}},
}


def test_mean_spread_and_paired_differences_match_a_hand_computation():
    stats = summarize(FAKE, [RECALL, ERROR])
    s = stats["snd"]["r"]  # 56, 54, 58 points: mean 56, deviations 0, -2, 2 -> sample variance 8 / 2 = 4
    assert (s.mean, s.std, s.low, s.high, s.n) == pytest.approx((56.0, 2.0, 54.0, 58.0, 3))
    assert stats["snd"]["e"].n == 2 and stats["snd"]["e"].mean == pytest.approx(0.9)  # the missing seed left out
    assert stats["dinov2"]["r"] == Stat(50.0, 0.0, 50.0, 50.0, 1)
    # against DINOv2 (one value, paired with every seed): 6, 4, 8 -> mean 6, std 2, better on 3 of 3
    p = paired(FAKE, "snd", "dinov2", RECALL)
    assert p.diffs == pytest.approx((6.0, 4.0, 8.0)) and p.stat.std == pytest.approx(2.0) and p.better == 3
    # against FiT3D-style seed by seed: 4, -1, 9 -> mean 4, sample std sqrt((0 + 25 + 25) / 2) = 5, better 2/3
    p = paired(FAKE, "snd", "fit3d", RECALL)
    assert p.diffs == pytest.approx((4.0, -1.0, 9.0)) and p.stat.mean == pytest.approx(4.0)
    assert p.stat.std == pytest.approx(5.0) and p.better == 2
    # lower is better: seeds 0 and 2 only (seed 1 unmeasured): 0.05, 0.05 -> worse on both
    p = paired(FAKE, "snd", "fit3d", ERROR)
    assert p.diffs == pytest.approx((0.05, 0.05)) and p.better == 0 and p.stat.std == pytest.approx(0.0, abs=1e-12)
    assert paired(FAKE, "fit3d", "snd", ERROR).better == 2  # the other way round: lower error on both
    assert paired(FAKE, "fit3d", "fit3d", ERROR).better == 0  # a zero difference is not "better"
    assert math.isclose(paired(FAKE, "fit3d", "dinov2", ERROR).stat.mean, (-0.1 + 0.1 - 0.2) / 3)
    # the tables show exactly these numbers
    table = results_table(FAKE, [RECALL, ERROR], {"snd": "SnD"})
    assert "| SnD | 56.00 ± 2.00 [54.00, 58.00] | 0.900 ± 0.071 [0.850, 0.950] |" in table
    assert "| dinov2 | 50.00 | 1.000 |" in table
    diff = paired_table(FAKE, [RECALL], "fit3d", ["fit3d", "snd"], {"snd": "SnD", "fit3d": "FiT3D"})
    assert "| SnD − FiT3D | +4.00 ± 5.00 [-1.00, +9.00] (2/3) |" in diff and "FiT3D − FiT3D" not in diff


def test_collect_reads_rooms_middlebury_and_a_real_dataset_per_backbone():
    from splatdistill.commands.compare_recipe import collect

    def row(r10, moto, castel=None):
        corr = {"rooms": {"recall_10": r10}, "middlebury": {"recall_5": moto, "recall_10": moto + 0.1}}
        return {"results": {"depth": {"rmse": 0.5}, "correspondence": corr}}, castel

    rooms_rows = [row(0.25, 0.60), row(0.30, 0.70)]
    rooms = {"data": {"name": "rooms"}, "backbones": [r for r, _ in rooms_rows]}
    castel = {
        "data": {"name": "castel"},
        "backbones": [
            {"results": {"correspondence": {"castel": {"recall_5": 0.20, "recall_10": 0.4}}}},
            {"results": {"correspondence": {"castel": {"recall_5": 0.30, "recall_10": 0.5}}}},
        ],
    }
    values = collect([("dinov2", 0), ("snd-noblend", 1)], rooms, {"castel": castel})
    v = values["snd-noblend"][1]
    assert v["rooms_r10"] == 0.30 and v["moto_r5"] == 0.70 and v["castel_r5"] == 0.30
    assert v["real_r5"] == pytest.approx(0.50) and v["seg_miou"] is None
    assert collect([("dinov2", 0), ("snd-noblend", 1)], rooms, {})["dinov2"][0]["real_r5"] == pytest.approx(0.60)


@pytest.mark.slow
def test_compare_command_on_a_tiny_configuration(tmp_path_factory, tmp_path):
    from splatdistill.commands.compare_recipe import CompareConfig, run_compare

    rooms = tiny_rooms(tmp_path_factory)
    cfg = CompareConfig(
        out=str(tmp_path / "cmp"),
        steps=2,
        seeds=2,
        data=str(rooms),
        backbone="random:vit_tiny_patch16_224",
        methods="dinov2,fit3d,snd-noblend",
        castel=False,
        tasks="correspondence",
        timing_scenes=1,
        timing_size=32,
        timing_iterations=2,
        progress=False,
        train={
            "image_size": 64,
            "render_size": 32,
            "prototypes": 64,
            "head_hidden": 64,
            "head_bottleneck": 32,
            "ema_every": 1,
            "checkpoint_every": 1000,
            "fit3d.iterations": 2,
            "fit3d.views": 3,
            "fit3d.lift_views": 2,
        },
        eval={"resolution": 64, "corr_pairs": 2, "corr_queries": 64, "corr_keep": 32, "middlebury": False},
    )
    doc = run_compare(cfg)
    # every trained method ran exactly the fixed step count, with its own seed
    for method in ("fit3d", "snd-noblend"):
        runs = doc["training"][method]
        assert sorted(runs) == [0, 1] and all(r["steps"] == 2 and r["config"]["seed"] == s for s, r in runs.items())
    assert doc["training"]["fit3d"][0]["config"]["method"] == "fit3d"
    # the fields were fitted once (seed 0) and hard-linked for seed 1: two names per train scene, one file
    from splatdistill.data import load_dataset

    fields = sorted((tmp_path / "cmp" / "fit3d_cache").glob("*.pt"))
    assert len(fields) == 2 * len(load_dataset(rooms, split="train")) and all(f.stat().st_nlink == 2 for f in fields)
    values = doc["values"]
    assert list(values["dinov2"]) == [0] and sorted(values["snd-noblend"]) == [0, 1]
    # the stored statistics are those of the stored per-seed values
    r = [values["snd-noblend"][s]["rooms_r10"] * 100 for s in (0, 1)]
    st = doc["stats"]["snd-noblend"]["rooms_r10"]
    assert st["mean"] == pytest.approx(sum(r) / 2) and st["std"] == pytest.approx(abs(r[0] - r[1]) / math.sqrt(2))
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "## Paired per-seed differences against FiT3D-style" in md and "**2 steps**" in md
    assert doc["lifting"][0]["fit_s"] > 0 and doc["lifting"][0]["lift_s"] > 0
    # the same folder with another step count: refused, never a table of runs of another length
    from dataclasses import replace

    from splatdistill.errors import UserError

    with pytest.raises(UserError, match="trained for 2 steps, not 3"):
        run_compare(replace(cfg, steps=3))
