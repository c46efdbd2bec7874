"""``evaluate()`` end to end on in-memory synthetic rooms with toy backbones."""

from __future__ import annotations

import json

import pytest
import torch

from splatdistill.config import build_config
from splatdistill.errors import UserError
from splatdistill.eval.config import TASKS, EvalConfig, parse_tasks
from splatdistill.eval.data import spread_views
from splatdistill.eval.features import BackboneEntry
from splatdistill.eval.runner import evaluate
from splatdistill.eval.synthetic import ColourBackbone, NoiseBackbone, make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: no thread contention


@pytest.fixture(scope="module")
def scenes():
    return make_dataset(train_scenes=4, test_scenes=2, views_per_scene=5, size=(48, 48), seed=0)


def small_config(**kw) -> EvalConfig:
    base = dict(
        resolution=48,
        loss_res=24,
        probe_steps=80,
        probe_batch=8,
        depth_lr=1e-2,
        depth_bins=64,
        corr_pairs=6,
        corr_queries=300,
        corr_keep=150,
        consistency_points=200,
        middlebury=False,
        figure_views=2,
        progress=False,
    )
    base.update(kw)
    return build_config(EvalConfig, base, validate=False)


def entries():
    return [
        BackboneEntry("colour", "toy:colour", ColourBackbone(patch_size=8, embed_dim=24)),
        BackboneEntry("noise", "toy:noise", NoiseBackbone(patch_size=8, embed_dim=24)),
    ]


def strip_volatile(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    for key in ("created", "wall_time_s", "files"):
        doc.pop(key, None)
    doc["config"].pop("cache_dir", None)
    for b in doc["backbones"]:
        b.pop("timings")
        b.pop("cache_hit")
        b.pop("feature_cache")
    return doc


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    return out, evaluate(entries(), scenes, None, out, small_config())


def test_writes_results_report_and_figures(run):
    out, doc = run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["tasks"] == list(TASKS)
    assert [b["label"] for b in on_disk["backbones"]] == ["colour", "noise"]
    for name in (
        "bars_depth",
        "bars_normals",
        "bars_segmentation",
        "bars_correspondence",
        "bars_consistency",
        "pca",
        "depth_predictions",
        "normal_predictions",
        "segmentation_predictions",
    ):
        path = out / on_disk["files"][name]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (out / "report.md").read_text()
    for title in (
        "## Depth",
        "## Surface normals",
        "## Semantic segmentation",
        "## Multi-view correspondence",
        "## Multi-view feature consistency",
        "## Timing",
    ):
        assert title in report
    assert "| colour | **" in report  # the better backbone's cells are bold
    res = on_disk["backbones"][0]["results"]
    assert set(res["depth"]) >= {"abs_rel", "rmse", "delta1", "delta2", "delta3"}
    assert set(res["normals"]) >= {"mean_deg", "median_deg", "rmse_deg", "pct_11_25", "pct_22_5", "pct_30"}
    assert set(res["segmentation"]) >= {"miou", "pixel_acc", "per_class_iou"}
    assert set(res["correspondence"]["data"]) >= {"recall_5", "recall_10", "recall_20", "recall_10_by_rotation"}
    assert set(res["consistency"]["data"]) >= {"positive_cos", "random_cos", "gap", "auc"}
    assert on_disk["data"]["eval_split"] == "test" and on_disk["data"]["train_views"] == 20


def test_informative_features_beat_noise(run):
    _, doc = run
    colour, noise = (b["results"] for b in doc["backbones"])
    assert colour["depth"]["abs_rel"] < noise["depth"]["abs_rel"]
    assert colour["segmentation"]["miou"] > noise["segmentation"]["miou"] + 0.2
    assert colour["correspondence"]["data"]["recall_20"] > noise["correspondence"]["data"]["recall_20"]
    assert colour["consistency"]["data"]["gap"] > noise["consistency"]["data"]["gap"] + 0.2


def test_same_call_twice_gives_same_numbers(run, scenes, tmp_path):
    out, doc = run
    again = evaluate(entries(), scenes, None, out, small_config())  # features now come from the cache
    assert all(b["cache_hit"] for b in again["backbones"])
    assert strip_volatile(again) == strip_volatile(doc)
    fresh = evaluate(entries(), scenes, None, tmp_path, small_config(cache_dir=""))  # no cache at all
    assert not any(b["cache_hit"] for b in fresh["backbones"])
    assert strip_volatile(fresh) == strip_volatile(doc)


def test_task_subset_and_missing_ground_truth(scenes, tmp_path):
    stripped = make_dataset(train_scenes=2, test_scenes=1, views_per_scene=3, size=(32, 32), seed=1)
    for s in stripped:  # a dataset without normals
        for rec in s.views:
            load = rec.loader
            rec.loader = lambda load=load: _without_normals(load())
    doc = evaluate(entries()[:1], stripped, "normals,depth", tmp_path, small_config(resolution=32, loss_res=16))
    res = doc["backbones"][0]["results"]
    assert doc["tasks"] == ["depth", "normals"]
    assert "abs_rel" in res["depth"] and "skipped" in res["normals"]
    assert "correspondence" not in res


def _without_normals(view):
    view.normals = None
    return view


def test_user_errors(scenes, tmp_path):
    with pytest.raises(UserError, match="unknown task 'flow'"):
        parse_tasks("depth,flow")
    with pytest.raises(UserError, match="split 'val' has no scenes"):
        evaluate(entries(), scenes, "depth", tmp_path, small_config(eval_split="val"))
    only_test = [s for s in scenes if s.split == "test"]
    with pytest.raises(UserError, match="split 'train' has no scenes"):
        evaluate(entries(), only_test, "depth", tmp_path, small_config())
    # pair tasks alone need no train split
    doc = evaluate(entries()[:1], only_test, "consistency", tmp_path, small_config())
    assert doc["backbones"][0]["results"]["consistency"]["data"]["pairs"] > 0
    with pytest.raises(UserError, match="data directory not found"):
        evaluate(entries(), str(tmp_path / "missing"), "depth", tmp_path, small_config())
    with pytest.raises(UserError, match="probe-steps must be at least 1"):
        evaluate(entries(), scenes, "depth", tmp_path, small_config(probe_steps=0))
    with pytest.raises(UserError, match="no backbone"):
        evaluate([], scenes, "depth", tmp_path, small_config())


def test_spread_views_is_even_and_capped(scenes):
    picked = spread_views(scenes[:4], 7)
    per_scene = [sum(1 for s, _ in picked if s is sc) for sc in scenes[:4]]
    assert sorted(per_scene) == [1, 2, 2, 2]
    assert len(spread_views(scenes, 1000)) == sum(len(s) for s in scenes)
    assert [i for s, i in spread_views(scenes[:1], 3)] == [0, 2, 4]


class _RawInformative(ColourBackbone):
    """Informative tokens before its 'final norm', image-independent noise after it: which kind a task
    reads decides whether its probe can learn."""

    def patch_features(self, images, return_cls=False, final_norm=True):
        tokens = super().patch_features(images, return_cls=True)
        out = self.apply_final_norm(*tokens) if final_norm else tokens
        return out if return_cls else out[0]

    def apply_final_norm(self, patch, cls):
        g = torch.Generator().manual_seed(int(patch.shape[0]))
        noise = torch.randn(patch.shape, generator=g)
        return noise, noise.mean(dim=(2, 3))


def test_paper_suite_feeds_each_probe_the_tokens_the_reference_does(scenes, tmp_path):
    """Depth and normals read the raw (pre-norm) tokens under suite=paper, segmentation the final ones."""
    entry = [BackboneEntry("split", "toy:split", _RawInformative(patch_size=8, embed_dim=24))]
    tasks = "depth,normals,segmentation"
    fast = evaluate(entry, scenes, tasks, tmp_path / "fast", small_config(cache_dir=""))["backbones"][0]["results"]
    paper = evaluate(entry, scenes, tasks, tmp_path / "paper", small_config(cache_dir="", suite="paper"))
    res = paper["backbones"][0]["results"]
    off = evaluate(
        entry, scenes, tasks, tmp_path / "off", small_config(cache_dir="", suite="paper", paper_tokens=False)
    )
    res_off = off["backbones"][0]["results"]
    # raw tokens carry the scene: the paper suite's depth and normal probes beat noise-fed probes clearly
    assert res["depth"]["abs_rel"] < 0.7 * res_off["depth"]["abs_rel"]
    assert res["normals"]["mean_deg"] < res_off["normals"]["mean_deg"] - 5
    assert res["depth"]["abs_rel"] < 0.7 * fast["depth"]["abs_rel"]
    # segmentation reads the final (noise) tokens in both suites: no better than with paper_tokens off
    assert res["segmentation"]["miou"] == pytest.approx(res_off["segmentation"]["miou"], abs=1e-9)


def test_depth_flip_averages_with_the_mirrored_prediction_of_the_mirrored_image(scenes, tmp_path):
    """depth_flip's prediction = (prediction + mirror(prediction of the mirrored image)) / 2, checked
    against a run on held-out views mirrored by hand (same train views, so the same probe)."""
    import dataclasses

    import numpy as np

    from splatdistill.data.scene import Scene, ViewRecord

    def mirrored(record):
        def load():
            v = record.load()
            return dataclasses.replace(
                v,
                image=v.image[:, ::-1].copy(),
                depth=v.depth[:, ::-1].copy(),
                normals=None,
                semantic=None,
                instance=None,
            )

        return ViewRecord(record.name, record.K, record.cam_to_world, record.width, record.height, load)

    flipped_scenes = [
        s if s.split == "train" else Scene(s.name, [mirrored(r) for r in s.views], s.split, s.class_names)
        for s in scenes
    ]
    entry = [BackboneEntry("colour", "toy:colour", ColourBackbone(patch_size=8, embed_dim=24))]

    def depth_preds(data, **kw):
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        doc = evaluate(entry, data, "depth", out, small_config(cache_dir="", save_predictions=True, **kw))
        saved = np.load(out / "predictions" / "colour.npz")
        return doc, [saved[f"depth/{i}"] for i in range(doc["data"]["eval_views"])]

    _, plain = depth_preds(scenes)
    _, of_mirrored = depth_preds(flipped_scenes)
    doc, averaged = depth_preds(scenes, depth_flip=True)
    for p, m, a in zip(plain, of_mirrored, averaged):
        np.testing.assert_allclose(a, 0.5 * (p + m[:, ::-1]), rtol=1e-5, atol=1e-6)
    assert max(np.abs(p - m[:, ::-1]).max() for p, m in zip(plain, of_mirrored)) > 1e-3  # the flip changes something
    assert doc["config"]["depth_flip"]
