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
from PIL import Image

from _benchmark_fixtures import (
    LOFTR_K,
    NYU_TEST,
    PLANE_Z,
    SCANNET_K,
    SHIFT_M,
    SNPP_DEPTH_MM,
    kitti_depth,
    nyu_normals,
    scannet_depth,
    scannet_label,
    write_ade20k,
    write_kitti,
    write_nyu,
    write_scannet1500,
    write_scannet1500_loftr,
    write_scannet_probe,
    write_scannetpp_probe,
)
from splatdistill.data import detect_format, load_dataset
from splatdistill.errors import UserError
from splatdistill.eval import metrics
from splatdistill.eval.benchmarks.kitti import load_kitti
from splatdistill.eval.benchmarks.nyuv2 import load_nyuv2, normals_source
from splatdistill.eval.benchmarks.scannet1500 import load_scannet1500
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
    # 13 classes: 40-class 3 -> 5 (index 4), 1 -> 12 (index 11)
    v13 = load_nyuv2(nyu, classes=13)[1].load_view(0)
    np.testing.assert_array_equal(v13.semantic, np.select([raw_lab.T == 1, raw_lab.T == 7], [4, 11], -1))
    # Ladicky's normals from all_normals.pklz, kept where the raw sensor depth is in (0, 10] m
    with h5py.File(nyu / "nyu_depth_v2_labeled.mat", "r") as f:
        raw_depth = f["rawDepths"][1].T
    keep = (raw_depth > 0) & (raw_depth <= 10) & (np.linalg.norm(nyu_normals(1), axis=-1) > 0)
    # (held as float16: the file is ~5 GB of float32 for the 1449 frames)
    np.testing.assert_array_equal(view.normals, np.where(keep[..., None], nyu_normals(1).astype(np.float16), 0))
    assert 0 < (~keep).sum() < keep.size and "Ladicky" in normals_source(nyu)


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
    (partial / "classMapping40.mat").symlink_to(nyu / "classMapping40.mat")
    with pytest.raises(UserError, match="class13Mapping.mat not found"):
        load_nyuv2(partial, classes=13)
    assert "computed from depth" in normals_source(partial)  # no all_normals.pklz there
    (partial / "all_normals.pklz").write_bytes(b"not a gzip file")
    with pytest.raises(UserError, match="all_normals.pklz: cannot read as a gzipped pickle"):
        load_nyuv2(partial)[0].load_view(0)


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


def test_scannet1500_loftr_layout_gives_the_same_geometry(tmp_path):
    """LoFTR's scannet_test_1500 (what Probe3D reads): test.npz, intrinsics.npz, camera-to-world pose files."""
    root = write_scannet1500_loftr(tmp_path / "loftr")
    assert detect_format(root) == "scannet1500"
    s_same, s_moved = load_scannet1500(root)
    a, b = s_moved.load_view(0), s_moved.load_view(1)
    np.testing.assert_allclose(a.K, LOFTR_K + np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]]))  # pixel centres at +0.5
    geo = gt_correspondences(a, b, step=8)
    vis = geo.visible
    assert vis.mean() > 0.9
    shift = -LOFTR_K[0, 0] * SHIFT_M / PLANE_Z
    np.testing.assert_allclose(geo.xy_b[vis] - geo.xy_a[vis], np.tile([shift, 0.0], (vis.sum(), 1)), atol=1e-6)
    same = gt_correspondences(s_same.load_view(0), s_same.load_view(1), step=8)
    np.testing.assert_allclose(same.xy_b, same.xy_a, atol=1e-9)
    (root / "scene0707_00" / "pose" / "30.txt").write_text("-inf " * 16)
    with pytest.raises(UserError, match="pose is not finite"):
        load_scannet1500(root)
    (root / "scene0707_00" / "pose" / "30.txt").unlink()
    with pytest.raises(UserError, match="pair 2: scene0707_00/pose/30.txt not found"):
        load_scannet1500(root)


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
    np.testing.assert_allclose(v.depth, kitti_depth(3)[top : top + 352, left : left + 1216], atol=1 / 256)
    assert v.K[0, 2] == pytest.approx(609.5593 + 0.5 - left) and v.K[1, 2] == pytest.approx(172.8540 + 0.5 - top)


def test_kitti_reads_fit3ds_flat_layout(tmp_path):
    """FiT3D's eval_data/kitti: kitti_train.txt / kitti_val.txt, images/ and depth/ looked up by file name."""
    write_kitti(tmp_path / "src")
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    (flat / "depth").mkdir()
    for sp, new_name in (("train", "kitti_train.txt"), ("test", "kitti_val.txt")):
        text = (tmp_path / "src" / f"kitti_eigen_{sp}.txt").read_text()
        (flat / new_name).write_text(text)
        for line in text.splitlines():
            img, dep = line.split()[:2]
            if dep != "None":
                (flat / "images" / Path(img).name).symlink_to(tmp_path / "src" / "input" / img)
                (flat / "depth" / Path(dep).name).symlink_to(tmp_path / "src" / "gt_depth" / dep)
    assert detect_format(flat) == "kitti"
    a, b = load_kitti(tmp_path / "src")[1].load_view(0), load_kitti(flat)[1].load_view(0)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.image, b.image)


# ------------------------------------------------------------------------------ protocol, by hand


def test_crops_match_the_reference_indices():
    m = metrics.crop_mask((480, 640), "nyu_eigen")
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (45, 471, 41, 601)
    g = metrics.crop_mask((352, 1216), "kitti_garg")
    rows, cols = np.flatnonzero(g.any(1)), np.flatnonzero(g.any(0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (
        int(0.40810811 * 352),
        int(0.99189189 * 352),
        int(0.03594771 * 1216),
        int(0.96405229 * 1216),
    )


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
    assert float(paper_sig_loss(pred, gt, valid, warm_up=True)) == pytest.approx(
        np.sqrt(0.15 * np.mean(d) ** 2), rel=1e-6
    )
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


def test_paper_depth_head_is_the_reference_formula():
    """Linear head, logits upsampled 4x, p = (relu + 0.1) / sum, depth = sum p * linspace(min, max, 256),
    then bilinear to the target: written out in float64 against the probe's memory-saving form."""
    import torch.nn.functional as F

    from splatdistill.eval.paper_probes import PaperDepthProbe, paper_bins
    from splatdistill.eval.probes import LinearHead, ProbeConfig, ProbeInputs

    torch.manual_seed(0)
    cfg = ProbeConfig(min_depth=1e-3, max_depth=10.0)
    head = LinearHead(8, 256, 8)
    x = ProbeInputs(torch.randn(2, 3 * 5, 8), torch.randn(2, 8), (3, 5))
    got = PaperDepthProbe(head, paper_bins(cfg), []).predict(x, (17, 23))
    with torch.no_grad():
        logits = (x.tokens @ head.proj.weight.T + head.proj.bias + (x.cls @ head.cls_proj.weight.T)[:, None]).double()
        logits = logits.transpose(1, 2).reshape(2, 256, 3, 5)
        up = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
        p = torch.relu(up) + 0.1
        p = p / p.sum(1, keepdim=True)
        bins = torch.linspace(1e-3, 10.0, 256, dtype=torch.float64)
        want = F.interpolate(
            (p * bins[:, None, None]).sum(1, keepdim=True), size=(17, 23), mode="bilinear", align_corners=False
        )[:, 0]
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert bins[0] == 1e-3 and bins[-1] == 10.0


# ----------------------------------------------------------------------------------- end to end


def _eval_paper(tmp_path: Path, data: str, *extra: str) -> dict:
    out = tmp_path / "out"
    r = _cli(
        "eval",
        "--suite",
        "paper",
        "-b",
        f"rnd={BACKBONE}",
        "--data",
        data,
        "--out",
        str(out),
        "-q",
        "--no-figures",
        "--save-predictions",
        "--probe-steps",
        "15",
        "--probe-batch",
        "4",
        *extra,
    )
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
        rows.append(
            (np.mean(np.abs(p - g) / g), np.sqrt(np.mean((p - g) ** 2)), np.mean(np.maximum(p / g, g / p) < 1.25))
        )
    want = np.mean(rows, axis=0)
    assert res["depth"]["abs_rel"] == pytest.approx(want[0], rel=1e-5)
    assert res["depth"]["rmse"] == pytest.approx(want[1], rel=1e-5)
    assert res["depth"]["delta1"] == pytest.approx(want[2], rel=1e-5)
    uncropped = np.mean(
        [
            np.mean(
                np.abs(saved[f"depth/{k}"][(g > 1e-3) & (g < 10)] - g[(g > 1e-3) & (g < 10)]) / g[(g > 1e-3) & (g < 10)]
            )
            for k, g in enumerate(gts)
        ]
    )
    assert abs(uncropped - want[0]) > 1e-3  # the crop matters on this fixture: a missing crop would fail above
    # segmentation: the paper's 13 classes by hand (raw 1 -> 40-class 3 -> index 4, raw 7 -> 1 -> index 11,
    # void ignored), mmseg mIoU
    conf = np.zeros((13, 13), np.int64)
    for k, lab in enumerate(labs):
        gt13 = np.select([lab == 1, lab == 7], [4, 11], -1)
        pred = saved[f"segmentation/{k}"].astype(np.int64)
        keep = gt13 >= 0
        np.add.at(conf, (gt13[keep], pred[keep]), 1)
    inter = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - inter
    assert res["segmentation"]["miou"] == pytest.approx(np.mean(inter[union > 0] / union[union > 0]), rel=1e-9)
    # normals, Probe3D's way by hand: Ladicky's normals where the raw depth is in (0, 10] m, the central
    # 480x480 crop, each image's RMSE / shares, then the mean over images
    rmse, share = [], []
    for k, i in enumerate(NYU_TEST):
        with h5py.File(nyu / "nyu_depth_v2_labeled.mat", "r") as f:
            raw = np.asarray(f["rawDepths"][i - 1]).T
        gt_n = nyu_normals(i - 1).astype(np.float16).astype(np.float64)  # as the loader holds them
        m = (raw > 0) & (raw <= 10) & (np.linalg.norm(gt_n, axis=-1) > 0.5)
        m[:, :80] = m[:, 560:] = False
        p = saved[f"normals/{k}"].astype(np.float64)
        cos = np.sum(p[m] * gt_n[m], -1) / np.linalg.norm(p[m], axis=-1) / np.linalg.norm(gt_n[m], axis=-1)
        err = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        rmse.append(np.sqrt(np.mean(err**2)))
        share.append(100 * np.mean(err < 11.25))
    assert res["normals"]["rmse_deg"] == pytest.approx(np.mean(rmse), rel=1e-4)
    assert res["normals"]["pct_11_25"] == pytest.approx(np.mean(share), abs=1e-3)
    assert res["normals"]["n_images"] == len(NYU_TEST)
    cfg = doc["datasets"]["nyu"]["results"]["config"]
    assert cfg["depth_crop"] == "nyu_eigen" and cfg["normals_crop"] == "center_square" and cfg["depth_flip"]
    assert "Ladicky" in doc["datasets"]["nyu"]["protocol"]


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
    # segmentation by hand: labels 5 -> index 4, 100 -> 99, 0 ignored; mmseg mIoU over 100 classes
    k = next(i for i, n in enumerate(names) if n.startswith("scannetpp-seg"))
    lab = np.asarray(Image.open(root / "annotations" / "validation" / "f0.png")).astype(np.int64) - 1
    assert res["backbones"][0]["results"]["segmentation"]["miou"] == pytest.approx(
        _mmseg_miou(saved[f"segmentation/{k}"], lab, 100), rel=1e-9
    )


def _mmseg_miou(pred: np.ndarray, gt: np.ndarray, k: int) -> float:
    conf = np.zeros((k, k), np.int64)
    keep = gt >= 0
    np.add.at(conf, (gt[keep], pred.astype(np.int64)[keep]), 1)
    inter = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - inter
    return float(np.mean(inter[union > 0] / union[union > 0]))


def test_scannet_probe_set_end_to_end(tmp_path):
    """FiT3D's scannet_probe: depth in the Eigen crop below 10 m, per image; 40 classes with 0 and 255 ignored."""
    root = write_scannet_probe(tmp_path / "sn")
    assert detect_format(root) == "scannet_probe"
    doc = _eval_paper(tmp_path, f"scannet={root}", "--resolution", "42")
    res = doc["datasets"]["scannet"]["results"]
    assert res["config"]["depth_crop"] == "nyu_eigen" and res["config"]["depth_flip"]
    saved = np.load(tmp_path / "out" / "scannet" / "predictions" / "rnd.npz")
    names = list(saved["view_names"])
    rows = []
    for k, frame in ((i, n) for i, n in enumerate(names) if n.startswith("scannet-depth")):
        gt = scannet_depth(int(frame[-1])).astype(np.float64) / 1000
        m = (gt > 1e-3) & (gt < 10)
        m[:45] = m[471:] = False
        m[:, :41] = m[:, 601:] = False
        p = saved[f"depth/{k}"].astype(np.float64)[m]
        rows.append(np.mean(np.abs(p - gt[m]) / gt[m]))
    assert len(rows) == 2
    got = res["backbones"][0]["results"]
    assert got["depth"]["abs_rel"] == pytest.approx(np.mean(rows), rel=1e-5)
    conf_views = [(i, n) for i, n in enumerate(names) if n.startswith("scannet-seg")]
    preds = np.concatenate([saved[f"segmentation/{i}"].ravel() for i, _ in conf_views])
    labs = np.concatenate([scannet_label(int(n[-1])).astype(np.int64).ravel() for _, n in conf_views])
    labs = np.where((labs == 0) | (labs == 255), -1, labs - 1)
    assert got["segmentation"]["miou"] == pytest.approx(_mmseg_miou(preds, labs, 40), rel=1e-9)


def test_ade20k_and_kitti_end_to_end(tmp_path):
    ade = write_ade20k(tmp_path / "ade")
    kit = write_kitti(tmp_path / "kitti")
    doc = _eval_paper(tmp_path, f"ade20k={ade}", "--data", f"kitti={kit}", "--resolution", "42")
    seg = doc["datasets"]["ade20k"]["results"]["backbones"][0]["results"]["segmentation"]
    saved = np.load(tmp_path / "out" / "ade20k" / "predictions" / "rnd.npz")
    conf = np.zeros((150, 150), np.int64)
    for k in range(2):
        raw = (
            np.asarray(Image.open(ade / f"ADEChallengeData2016/annotations/validation/ADE_val_{k + 1:08d}.png")).astype(
                np.int64
            )
            - 1
        )
        keep = raw >= 0
        np.add.at(conf, (raw[keep], saved[f"segmentation/{k}"].astype(np.int64)[keep]), 1)
    inter = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - inter
    assert seg["miou"] == pytest.approx(np.mean(inter[union > 0] / union[union > 0]), rel=1e-9)
    depth = doc["datasets"]["kitti"]["results"]["backbones"][0]["results"]["depth"]
    saved = np.load(tmp_path / "out" / "kitti" / "predictions" / "rnd.npz")
    rows = []
    for k in range(2):
        gt = kitti_depth(3 + k)[23 : 23 + 352, 13 : 13 + 1216].astype(np.float64)
        gt = np.round(gt * 256) / 256
        m = np.zeros_like(gt, bool)
        m[int(0.40810811 * 352) : int(0.99189189 * 352), int(0.03594771 * 1216) : int(0.96405229 * 1216)] = True
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


# ------------------------------------------------------------------- Probe3D's matcher, independently


def _probe3d_by_the_letter(feat0, feat1, depth0, depth1, K, Rt_01, num_corr):
    """Probe3D's ScanNet matching written out from its description, in float64 torch: depth to a quarter
    (nearest), K scaled, every pixel with depth back-projected, features at the projections, cosine kNN
    (k = 2), weight 1 - d1/d2, top num_corr, error of A's point moved into B against B's match."""
    import torch.nn.functional as F

    deps = F.interpolate(torch.stack([depth0, depth1])[:, None].float(), scale_factor=0.25)[:, 0].double()
    K = K.clone().double()
    K[:2, :] *= 0.25
    H, W = deps.shape[-2:]
    xs, ys = torch.linspace(0.5, W - 0.5, W, dtype=torch.float64), torch.linspace(0.5, H - 0.5, H, dtype=torch.float64)
    grid = torch.stack([xs[None].repeat(H, 1), ys[:, None].repeat(1, W), torch.ones(H, W, dtype=torch.float64)])

    def cloud(d):
        pts = (torch.linalg.inv(K) @ (d[None] * grid).reshape(3, -1)).T
        return pts[pts[:, 2] > 0]

    def project(pts):
        uvd = pts @ K.T
        return uvd[:, :2] / uvd[:, 2:3].clamp(min=1e-9)

    def sample(feat, pts):
        uv = project(pts)
        g = torch.stack([2 * uv[:, 0] / W - 1, 2 * uv[:, 1] / H - 1], -1).float()
        return F.grid_sample(feat[None].float(), g[None, None], align_corners=False)[0, :, 0].T.double()

    xyz0, xyz1 = cloud(deps[0]), cloud(deps[1])
    f0 = F.normalize(sample(feat0, xyz0), dim=1)
    f1 = F.normalize(sample(feat1, xyz1), dim=1)
    top, idx = (f0 @ f1.T).topk(2, dim=1)
    dist = (1 - top).clamp(min=1e-9)
    weight = 1 - dist[:, 0] / dist[:, 1]
    keep = weight.topk(num_corr).indices
    moved = xyz0[keep] @ Rt_01[:3, :3].T + Rt_01[:3, 3]
    return (project(moved) - project(xyz1[idx[keep, 0]])).norm(dim=1).numpy()


def test_probe3d_matcher_matches_an_independent_implementation():
    from splatdistill.data.scene import ViewData
    from splatdistill.eval.correspondence import probe3d_pair

    g = torch.Generator().manual_seed(0)
    H, W = 480, 640
    K = torch.tensor([[580.0, 0, 320.0], [0, 580.0, 240.0], [0, 0, 1]], dtype=torch.float64)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    depth0 = (2.0 + 0.5 * torch.sin(xx / 70.0) + 0.3 * torch.cos(yy / 50.0)).float()
    depth1 = (2.2 + 0.4 * torch.cos(xx / 60.0) + 0.2 * torch.sin(yy / 40.0)).float()
    depth0[100:140, 200:260] = 0  # holes: no point there
    ang = np.deg2rad(12.0)
    R = torch.tensor([[np.cos(ang), 0, np.sin(ang)], [0, 1, 0], [-np.sin(ang), 0, np.cos(ang)]], dtype=torch.float64)
    Rt_01 = torch.eye(4, dtype=torch.float64)
    Rt_01[:3, :3], Rt_01[:3, 3] = R, torch.tensor([0.15, -0.02, 0.05], dtype=torch.float64)
    # Descriptors that follow the surface: a random smooth function of the world point under each token
    # centre (camera 0 = world), so matches are often right and sometimes not.
    proj, phase = torch.randn(16, 3, generator=g, dtype=torch.float64) * 6, torch.rand(16, 1, dtype=torch.float64) * 6

    def token_features(depth, cam_to_world):
        rows = (torch.arange(35, dtype=torch.float64) + 0.5) * H / 35
        cols = (torch.arange(46, dtype=torch.float64) + 0.5) * W / 46
        d = depth[rows.long()][:, cols.long()].double()
        pix = torch.stack(
            [cols[None].repeat(35, 1), rows[:, None].repeat(1, 46), torch.ones(35, 46, dtype=torch.float64)]
        )
        cam = (torch.linalg.inv(K) @ pix.reshape(3, -1)) * d.reshape(1, -1)
        world = cam_to_world[:3, :3] @ cam + cam_to_world[:3, 3:]
        return torch.sin(proj @ world + phase).reshape(16, 35, 46).float()

    feat0 = token_features(depth0, torch.eye(4, dtype=torch.float64))
    feat1 = token_features(depth1, torch.linalg.inv(Rt_01))
    want = _probe3d_by_the_letter(feat0, feat1, depth0, depth1, K, Rt_01, 1000)
    # Ours: view A at the origin, view B at inv(Rt_01) (camera-0 points map into camera 1 by Rt_01)
    img = np.zeros((H, W, 3), np.float32)
    a = ViewData(img, K.numpy(), np.eye(4), depth0.numpy())
    b = ViewData(img, K.numpy(), np.linalg.inv(Rt_01.numpy()), depth1.numpy())
    got = probe3d_pair(feat0, feat1, a, b, keep=1000)
    assert got is not None and got.errors.shape == (1000,)
    assert got.rotation_deg == pytest.approx(12.0, abs=1e-6)
    np.testing.assert_allclose(np.sort(got.errors), np.sort(want), rtol=1e-4, atol=1e-4)
    for t in (5, 10, 20):
        assert got.recall[f"recall_{t}"] == pytest.approx(np.mean(want < t), abs=1e-12)
    assert 0.0 < got.recall["recall_10"] < 1.0  # neither trivial nor hopeless on this pair


def test_eval_help_names_every_benchmark():
    from splatdistill.eval.paper import BENCHMARKS

    r = _cli("eval", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for name in BENCHMARKS:
        assert name in text, name
