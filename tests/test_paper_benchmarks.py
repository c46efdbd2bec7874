"""The paper's benchmarks: native-format loaders, the paper protocol's losses and metrics, released weights,
and ``splatdistill eval --suite paper`` end to end on fixtures, with metrics recomputed by hand from the
native files and the saved predictions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _benchmark_fixtures import (
    NYU_TEST,
    PLANE_Z,
    SCANNET_K,
    SHIFT_M,
    SNPP_DEPTH_MM,
    kitti_depth,
    write_ade20k,
    write_kitti,
    write_nyu,
    write_scannet1500,
    write_scannetpp_probe,
)
from PIL import Image

from splatdistill.data import detect_format, load_dataset
from splatdistill.data.kitti import load_kitti
from splatdistill.data.nyuv2 import load_nyuv2
from splatdistill.data.scannet1500 import load_scannet1500
from splatdistill.errors import UserError
from splatdistill.eval import metrics
from splatdistill.eval.correspondence import gt_correspondences
from splatdistill.eval.paper_probes import paper_gradient_loss, paper_sig_loss

BACKBONE = "random:vit_small_patch14_dinov2"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splatdistill", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def nyu(tmp_path_factory):
    return write_nyu(tmp_path_factory.mktemp("nyu"))


# ------------------------------------------------------------------------------------------- loaders


def test_nyu_reads_the_labelled_mat_in_matlab_orientation(nyu):
    assert detect_format(nyu) == "nyuv2" and detect_format(nyu / "nyu_depth_v2_labeled.mat") == "nyuv2"
    scenes = load_nyuv2(nyu)
    assert [(s.name, s.split, len(s)) for s in scenes] == [("nyu-train", "train", 4), ("nyu-test", "test", 2)]
    view = scenes[1].load_view(0)  # 1-based index 2 of splits.mat -> image 1 (0-based)
    with h5py.File(nyu / "nyu_depth_v2_labeled.mat", "r") as f:
        raw_img, raw_depth, raw_lab = f["images"][1], f["depths"][1], f["labels"][1]
    assert view.image.shape == (480, 640, 3)
    assert view.image[10, 600, 0] == pytest.approx(raw_img[0, 600, 10] / 255)  # x varies along MATLAB's 2nd axis
    assert view.image[400, 5, 1] == pytest.approx(raw_img[1, 5, 400] / 255)
    np.testing.assert_array_equal(view.depth, raw_depth.T)
    # 894 -> 40 by hand: raw 1 -> class 3 (index 2), raw 7 -> class 1 (index 0), void -> -1
    expect = np.select([raw_lab.T == 1, raw_lab.T == 7], [2, 0], -1)
    np.testing.assert_array_equal(view.semantic, expect)
    assert scenes[0].class_names[:3] == ["c40_1", "c40_2", "c40_3"]


def test_nyu_errors_name_what_is_missing(tmp_path, nyu):
    with pytest.raises(UserError, match="no nyu_depth_v2_labeled.mat"):
        load_nyuv2(tmp_path)
    bad = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(bad, "w") as f:
        f["images"] = np.zeros((1, 3, 4, 3), np.uint8)
    with pytest.raises(UserError, match="has no 'depths'"):
        load_nyuv2(tmp_path)
    partial = tmp_path / "p"
    partial.mkdir()
    (partial / "nyu_depth_v2_labeled.mat").symlink_to(nyu / "nyu_depth_v2_labeled.mat")
    with pytest.raises(UserError, match="splits.mat not found"):
        load_nyuv2(partial)
    (partial / "splits.mat").symlink_to(nyu / "splits.mat")
    with pytest.raises(UserError, match="classMapping40.mat not found"):
        load_nyuv2(partial)
    with pytest.raises(UserError, match="class13Mapping.mat not found"):
        load_nyuv2(nyu, classes=13)


def test_scannet1500_pairs_give_the_hand_computed_correspondences(tmp_path):
    root = write_scannet1500(tmp_path)
    assert detect_format(root) == "scannet1500"
    s_same, s_moved = load_scannet1500(root)
    a, b = s_moved.load_view(0), s_moved.load_view(1)
    assert a.image.shape == (480, 640, 3) and np.allclose(a.depth, PLANE_Z)
    geo = gt_correspondences(a, b, step=8)
    fx = SCANNET_K[0, 0] * 640 / 1296
    shift = -fx * SHIFT_M / PLANE_Z  # a fronto-parallel plane: every point moves by -f t / z
    vis = geo.visible
    assert vis.mean() > 0.9
    np.testing.assert_allclose(geo.xy_b[vis] - geo.xy_a[vis], np.tile([shift, 0.0], (vis.sum(), 1)), atol=1e-6)
    same = gt_correspondences(s_same.load_view(0), s_same.load_view(1), step=8)
    np.testing.assert_allclose(same.xy_b, same.xy_a, atol=1e-9)


def test_scannet1500_bad_lines_are_named(tmp_path):
    root = write_scannet1500(tmp_path)
    pairs = root / "scannet_test_pairs_with_gt.txt"
    pairs.write_text(pairs.read_text().splitlines()[0] + " 1\n")
    with pytest.raises(UserError, match="line 1 has 39 columns, expected 38"):
        load_scannet1500(root)
    pairs.write_text("scans_test/x/color/1.jpg scans_test/x/color/2.jpg 0 0 " + " ".join(["1"] * 34) + "\n")
    with pytest.raises(UserError, match="not a rigid transform"):
        load_scannet1500(root)


def test_ade20k_labels_shift_to_150_classes_with_zero_ignored(tmp_path):
    write_ade20k(tmp_path)
    scenes = load_dataset(tmp_path)
    assert [(s.split, len(s)) for s in scenes] == [("train", 4), ("test", 2)]
    assert scenes[0].class_names[:4] == ["wall", "building", "sky", "floor"] and len(scenes[0].class_names) == 150
    v = scenes[1].load_view(1)
    raw = np.asarray(Image.open(tmp_path / "ADEChallengeData2016/annotations/validation/ADE_val_00000002.png"))
    np.testing.assert_array_equal(v.semantic, raw.astype(np.int32) - 1)


def test_kitti_applies_the_kb_crop_and_reads_depth_over_256(tmp_path):
    write_kitti(tmp_path)
    scenes = load_kitti(tmp_path)
    assert [(s.split, len(s)) for s in scenes] == [("train", 3), ("test", 2)]  # the 'None' line is skipped
    v = scenes[1].load_view(0)
    assert v.depth.shape == (352, 1216)
    top, left = 375 - 352, (1242 - 1216) // 2  # 23, 13
    np.testing.assert_allclose(v.depth, kitti_depth(3)[top:top + 352, left:left + 1216], atol=1 / 256)
    assert v.K[0, 2] == pytest.approx(609.5593 + 0.5 - left) and v.K[1, 2] == pytest.approx(172.8540 + 0.5 - top)


# ------------------------------------------------------------------------------ protocol, by hand


def test_crops_match_the_reference_indices():
    m = metrics.crop_mask((480, 640), "nyu_eigen")
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (45, 471, 41, 601)
    g = metrics.crop_mask((352, 1216), "kitti_garg")
    rows, cols = np.flatnonzero(g.any(1)), np.flatnonzero(g.any(0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (int(0.40810811 * 352), int(0.99189189 * 352),
                                                              int(0.03594771 * 1216), int(0.96405229 * 1216))


def test_paper_depth_metrics_average_per_image():
    # image 1: pred 2 vs gt 1 -> abs_rel 1, rmse 1; image 2 (4 pixels): pred = gt -> 0; mean 0.5 (pixel pooling: 0.2)
    preds = [np.full((1, 1), 2.0), np.full((2, 2), 3.0)]
    gts = [np.full((1, 1), 1.0), np.full((2, 2), 3.0)]
    out = metrics.paper_depth_metrics(preds, gts, 1e-3, 10.0, "none")
    assert out["abs_rel"] == pytest.approx(0.5) and out["rmse"] == pytest.approx(0.5)
    assert out["delta1"] == pytest.approx(0.5) and out["silog"] == pytest.approx(0.0)
    # the open range: gt equal to max_depth is out
    out = metrics.paper_depth_metrics([np.array([[1.0, 5.0]])], [np.array([[10.0, 5.0]])], 1e-3, 10.0, "none")
    assert out["abs_rel"] == pytest.approx(0.0) and out["n_pixels"] == 1


def test_miou_counts_classes_with_a_non_empty_union():
    conf = np.array([[3, 1, 0], [0, 0, 0], [0, 2, 0]])  # rows = gt; class 1 only predicted, class 2 never right
    out = metrics.miou_mmseg(conf, ["a", "b", "c"])
    # IoU: a 3/4, b 0/3, c 0/2 -> mean of all three (b has a union through false positives)
    assert out["miou"] == pytest.approx((0.75 + 0 + 0) / 3) and out["classes_scored"] == 3
    assert metrics.segmentation_metrics(conf)["miou"] == pytest.approx((0.75 + 0) / 2)  # fast: gt-present only


def test_paper_losses_match_a_float64_hand_computation():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 13, 11, generator=g, dtype=torch.float64) * 3 + 0.5
    gt = torch.rand(2, 13, 11, generator=g, dtype=torch.float64) * 3 + 0.5
    valid = torch.rand(2, 13, 11, generator=g) > 0.2
    d = (np.log(pred.numpy() + 1e-3) - np.log(gt.numpy() + 1e-3))[valid.numpy()]
    want = np.sqrt(np.var(d, ddof=1) + 0.15 * np.mean(d) ** 2)
    assert float(paper_sig_loss(pred, gt, valid, warm_up=False)) == pytest.approx(want, rel=1e-9)
    assert float(paper_sig_loss(pred, gt, valid, warm_up=True)) == pytest.approx(np.sqrt(0.15 * np.mean(d) ** 2), rel=1e-6)
    # gradient loss by loops: strides 1, 2, 4, 6, differences two samples apart, both ends valid
    total = 0.0
    for b in range(2):
        for s in (1, 2, 4, 6):
            p, t, m = pred[b, ::s, ::s].numpy(), gt[b, ::s, ::s].numpy(), valid[b, ::s, ::s].numpy()
            r = np.log(p + 1e-3) - np.log(t + 1e-3)
            acc = 0.0
            for y in range(p.shape[0]):
                for x in range(p.shape[1]):
                    if y + 2 < p.shape[0] and m[y, x] and m[y + 2, x]:
                        acc += abs(r[y, x] - r[y + 2, x])
                    if x + 2 < p.shape[1] and m[y, x] and m[y, x + 2]:
                        acc += abs(r[y, x] - r[y, x + 2])
            total += acc / m.sum()
    assert float(paper_gradient_loss(pred, gt, valid)) == pytest.approx(total / 2, rel=1e-9)


# ----------------------------------------------------------------------------------- end to end


def _eval_paper(tmp_path: Path, data: str, *extra: str) -> dict:
    out = tmp_path / "out"
    r = _cli("eval", "--suite", "paper", "-b", f"rnd={BACKBONE}", "--data", data, "--out", str(out), "-q",
             "--no-figures", "--save-predictions", "--probe-steps", "15", "--probe-batch", "4", *extra)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "report.md").is_file()
    return json.loads((out / "results.json").read_text())


def test_nyu_end_to_end_metrics_match_a_hand_computation(tmp_path, nyu):
    doc = _eval_paper(tmp_path, f"nyu={nyu}", "--resolution", "42")
    res = doc["datasets"]["nyu"]["results"]["backbones"][0]["results"]
    saved = np.load(tmp_path / "out" / "nyu" / "predictions" / "rnd.npz")
    with h5py.File(nyu / "nyu_depth_v2_labeled.mat", "r") as f:
        gts = [np.asarray(f["depths"][i - 1]).T.astype(np.float64) for i in NYU_TEST]
        labs = [np.asarray(f["labels"][i - 1]).T for i in NYU_TEST]
    rows = []
    for k, gt in enumerate(gts):
        pred = saved[f"depth/{k}"].astype(np.float64)
        crop = np.zeros_like(gt, bool)
        crop[45:471, 41:601] = True  # the Eigen crop, written out
        m = (gt > 1e-3) & (gt < 10) & crop
        p, g = pred[m], gt[m]
        rows.append((np.mean(np.abs(p - g) / g), np.sqrt(np.mean((p - g) ** 2)), np.mean(np.maximum(p / g, g / p) < 1.25)))
    want = np.mean(rows, axis=0)
    assert res["depth"]["abs_rel"] == pytest.approx(want[0], rel=1e-5)
    assert res["depth"]["rmse"] == pytest.approx(want[1], rel=1e-5)
    assert res["depth"]["delta1"] == pytest.approx(want[2], rel=1e-5)
    uncropped = np.mean([np.mean(np.abs(saved[f"depth/{k}"][(g > 1e-3) & (g < 10)] - g[(g > 1e-3) & (g < 10)]) /
                                 g[(g > 1e-3) & (g < 10)]) for k, g in enumerate(gts)])  # fmt: skip
    assert abs(uncropped - want[0]) > 1e-3  # the crop matters on this fixture: a missing crop would fail above
    # segmentation: 40-class mapping by hand (raw 1 -> 2, raw 7 -> 0, void ignored), mmseg mIoU
    conf = np.zeros((40, 40), np.int64)
    for k, lab in enumerate(labs):
        gt40 = np.select([lab == 1, lab == 7], [2, 0], -1)
        pred = saved[f"segmentation/{k}"].astype(np.int64)
        keep = gt40 >= 0
        np.add.at(conf, (gt40[keep], pred[keep]), 1)
    inter = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - inter
    assert res["segmentation"]["miou"] == pytest.approx(np.mean(inter[union > 0] / union[union > 0]), rel=1e-9)
    assert np.isfinite(res["normals"]["rmse_deg"]) and doc["datasets"]["nyu"]["results"]["config"]["depth_crop"] == "nyu_eigen"


def test_scannet1500_end_to_end_recall_of_a_frame_with_itself_is_one(tmp_path):
    root = write_scannet1500(tmp_path / "sn")
    pairs = root / "scannet_test_pairs_with_gt.txt"
    both = pairs.read_text()
    pairs.write_text(both.splitlines()[0] + "\n")  # the frame paired with itself, T = I
    doc = _eval_paper(tmp_path / "same", f"scannet1500={root}", "--resolution", "112")
    corr = doc["datasets"]["scannet1500"]["results"]["backbones"][0]["results"]["correspondence"]["scannet1500"]
    # By hand: every query's ground truth is its own pixel, B's grid is A's grid and the descriptors are
    # identical there, so each nearest neighbour is the query itself: error 0, recall 1 at 5, 10 and 20 px.
    assert corr["pairs"] == 1 and corr["recall_5"] == 1.0 and corr["recall_20"] == 1.0
    pairs.write_text(both)
    doc = _eval_paper(tmp_path / "both", f"scannet1500={root}", "--resolution", "112")
    corr = doc["datasets"]["scannet1500"]["results"]["backbones"][0]["results"]["correspondence"]["scannet1500"]
    assert corr["pairs"] == 2 and corr["recall_10_by_rotation"]["0-15"]["pairs"] == 2  # no rotation in either pair
    assert 0.5 <= corr["recall_5"] <= corr["recall_10"] <= corr["recall_20"] <= 1.0


def test_scannetpp_probe_set_end_to_end(tmp_path):
    root = write_scannetpp_probe(tmp_path / "snpp")
    assert detect_format(root) == "scannetpp_probe"
    doc = _eval_paper(tmp_path, f"scannetpp={root}", "--resolution", "42")
    res = doc["datasets"]["scannetpp"]["results"]
    assert res["config"]["max_depth"] == 20.0
    saved = np.load(tmp_path / "out" / "scannetpp" / "predictions" / "rnd.npz")
    names = list(saved["view_names"])
    k = next(i for i, n in enumerate(names) if n.startswith("scannetpp-depth"))
    pred = saved[f"depth/{k}"].astype(np.float64)
    assert pred.shape == (584, 876)
    gt = SNPP_DEPTH_MM[3] / 1000  # the held-out frame: constant 3 m, so the resized ground truth is too
    depth = res["backbones"][0]["results"]["depth"]
    assert depth["abs_rel"] == pytest.approx(np.mean(np.abs(pred - gt) / gt), rel=1e-5)
    assert depth["n_images"] == 1
    assert res["backbones"][0]["results"]["segmentation"]["classes_scored"] >= 2


def test_ade20k_and_kitti_end_to_end(tmp_path):
    ade = write_ade20k(tmp_path / "ade")
    kit = write_kitti(tmp_path / "kitti")
    doc = _eval_paper(tmp_path, f"ade20k={ade}", "--data", f"kitti={kit}", "--resolution", "42")
    seg = doc["datasets"]["ade20k"]["results"]["backbones"][0]["results"]["segmentation"]
    saved = np.load(tmp_path / "out" / "ade20k" / "predictions" / "rnd.npz")
    conf = np.zeros((150, 150), np.int64)
    for k in range(2):
        raw = np.asarray(Image.open(ade / f"ADEChallengeData2016/annotations/validation/ADE_val_{k + 1:08d}.png")).astype(np.int64) - 1
        keep = raw >= 0
        np.add.at(conf, (raw[keep], saved[f"segmentation/{k}"].astype(np.int64)[keep]), 1)
    inter = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - inter
    assert seg["miou"] == pytest.approx(np.mean(inter[union > 0] / union[union > 0]), rel=1e-9)
    depth = doc["datasets"]["kitti"]["results"]["backbones"][0]["results"]["depth"]
    saved = np.load(tmp_path / "out" / "kitti" / "predictions" / "rnd.npz")
    rows = []
    for k in range(2):
        gt = kitti_depth(3 + k)[23:23 + 352, 13:13 + 1216].astype(np.float64)
        gt = np.round(gt * 256) / 256
        m = np.zeros_like(gt, bool)
        m[int(0.40810811 * 352):int(0.99189189 * 352), int(0.03594771 * 1216):int(0.96405229 * 1216)] = True
        m &= (gt > 1e-3) & (gt < 80)
        p = saved[f"depth/{k}"][m]
        rows.append(np.mean(np.abs(p - gt[m]) / gt[m]))
    assert depth["abs_rel"] == pytest.approx(np.mean(rows), rel=1e-5)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Headline metrics" in report and "ADE20K mIoU" in report and "KITTI AbsRel" in report


def test_paper_suite_errors_are_one_line(tmp_path):
    r = _cli("eval", "--suite", "paper", "-b", BACKBONE, "--data", f"nyu={tmp_path}", "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "no nyu_depth_v2_labeled.mat" in r.stderr and "Traceback" not in r.stderr
    r = _cli("eval", "-b", BACKBONE, "--data", "rooms", "--data", "rooms", "--out", str(tmp_path / "o2"))
    assert r.returncode != 0 and "several --data need --suite paper" in r.stderr


# --------------------------------------------------------------------------------- released weights


def test_released_weights_load_by_name_and_refuse_another_model(tmp_path, dinov2, monkeypatch):
    import timm

    from splatdistill.backbones import load_backbone
    from splatdistill.backbones.vit import ViTBackbone

    # The reference saves the official DINOv2 hub model's state dict: timm keys + mask_token.
    state = {k: v.clone() for k, v in dinov2.model.state_dict().items()}
    state["mask_token"] = torch.zeros(1, 384)
    torch.save(state, tmp_path / "dinov2_small_snd.pth")
    monkeypatch.setenv("SPLATDISTILL_WEIGHTS", str(tmp_path))
    bb = load_backbone("snd_vits14")
    ref = ViTBackbone(dinov2.model, name="ref", pos_interp="dinov2")
    x = torch.rand(1, 3, 70, 98)
    with torch.no_grad():
        assert torch.equal(bb.patch_features(x), ref.patch_features(x))
    assert bb.name == "snd_vits14"
    base = timm.create_model("vit_base_patch14_dinov2", pretrained=False, img_size=518).state_dict()
    base["mask_token"] = torch.zeros(1, 768)
    torch.save(base, tmp_path / "base.pth")
    with pytest.raises(UserError, match="holds ViT-B/14: dim 768, 12 blocks, patch 14; use snd_vitb14:"):
        load_backbone(f"snd_vits14:{tmp_path / 'base.pth'}")
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "cnn.pth")
    with pytest.raises(UserError, match="this file is not a ViT state dict"):
        load_backbone(f"snd_vits14_noblend:{tmp_path / 'cnn.pth'}")
    with pytest.raises(UserError, match="snd_vitb14 .* is not on this machine.*dinov2_base_snd.pth"):
        load_backbone("snd_vitb14")
