"""Metric functions against hand-computed cases (float64, no shared code with the implementation)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from splatdistill.eval import metrics as m
from splatdistill.eval.consistency import auc
from splatdistill.geometry.cameras import rotation_angle_deg


def test_depth_perfect_prediction():
    gt = np.array([[1.0, 2.0], [0.0, 7.5]])  # one invalid pixel
    out = m.depth_metrics(gt.copy(), gt)
    assert out["abs_rel"] == 0 and out["rmse"] == 0
    assert out["delta1"] == out["delta2"] == out["delta3"] == 1.0
    assert out["n_pixels"] == 3


def test_depth_hand_computed():
    gt = np.array([1.0, 2.0, 4.0, 0.0])
    pred = np.array([1.1, 2.0, 2.0, 5.0])  # the last pixel has no ground truth and must be ignored
    out = m.depth_metrics(pred, gt)
    assert out["abs_rel"] == pytest.approx((0.1 / 1 + 0 + 2 / 4) / 3)
    assert out["rmse"] == pytest.approx(math.sqrt((0.01 + 0 + 4) / 3))
    # ratios max(p/g, g/p) = 1.1, 1.0, 2.0: under 1.25 and 1.5625 two of three; 2.0 > 1.953125 too
    assert out["delta1"] == pytest.approx(2 / 3)
    assert out["delta2"] == pytest.approx(2 / 3)
    assert out["delta3"] == pytest.approx(2 / 3)
    # 1.25^3 = 1.953125 < 2.1: a ratio of 1.9 is inside delta3 only
    out = m.depth_metrics(np.array([1.9]), np.array([1.0]))
    assert (out["delta1"], out["delta2"], out["delta3"]) == (0.0, 0.0, 1.0)


def _rotate_about_x(v: np.ndarray, deg: float) -> np.ndarray:
    a = math.radians(deg)
    R = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    return R @ v


def test_normals_perfect_and_scale_free():
    gt = np.array([[0, 0, -1.0], [0, 1.0, 0], [0.6, 0, -0.8]])
    out = m.normal_metrics(gt * 3.0, gt)  # length of the prediction must not matter
    assert out["mean_deg"] == pytest.approx(0, abs=1e-6)
    assert out["median_deg"] == pytest.approx(0, abs=1e-6)
    assert out["pct_11_25"] == 100.0


def test_normals_known_angles():
    angles = [0.0, 10.0, 20.0, 25.0, 40.0]
    gt = np.tile(np.array([0.0, 0.0, -1.0]), (len(angles), 1))
    pred = np.stack([_rotate_about_x(g, a) for g, a in zip(gt, angles)])
    out = m.normal_metrics(pred, gt)
    assert out["mean_deg"] == pytest.approx(19.0, abs=1e-6)
    assert out["median_deg"] == pytest.approx(20.0, abs=1e-6)
    assert out["rmse_deg"] == pytest.approx(math.sqrt((0 + 100 + 400 + 625 + 1600) / 5), abs=1e-6)
    assert out["pct_11_25"] == pytest.approx(40.0)
    assert out["pct_22_5"] == pytest.approx(60.0)
    assert out["pct_30"] == pytest.approx(80.0)


def test_normals_invalid_ground_truth_is_ignored():
    gt = np.array([[0, 0, -1.0], [0, 0, 0]])
    pred = np.array([[0, 0, -1.0], [1.0, 0, 0]])
    assert m.normal_metrics(pred, gt)["n_pixels"] == 1


def test_confusion_matrix_and_miou_by_hand():
    gt = np.array([0, 0, 0, 1, 1, 2, 2, 2, -1])
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 0, 2])
    conf = m.confusion_matrix(pred, gt, 3)
    assert conf.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    out = m.segmentation_metrics(conf, ["a", "b", "c"])
    # IoU_a = 2/(3+3-2), IoU_b = 1/(2+2-1), IoU_c = 2/(3+3-2)
    assert out["per_class_iou"] == pytest.approx({"a": 0.5, "b": 1 / 3, "c": 0.5})
    assert out["miou"] == pytest.approx((0.5 + 1 / 3 + 0.5) / 3)
    assert out["pixel_acc"] == pytest.approx(5 / 8)


def test_miou_counts_only_classes_present_in_ground_truth():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 3, 1, 1])  # class 3 never occurs in the ground truth
    out = m.segmentation_metrics(m.confusion_matrix(pred, gt, 4))
    # class 0: TP 1, FN 1 -> 1/2; class 1: 2/2; class 3 (absent) is not averaged in
    assert out["miou"] == pytest.approx(0.75)
    assert out["n_classes"] == 2


def test_perfect_segmentation():
    gt = np.random.default_rng(0).integers(-1, 5, size=(20, 20))
    out = m.segmentation_metrics(m.confusion_matrix(np.maximum(gt, 0), gt, 5))
    assert out["miou"] == 1.0 and out["pixel_acc"] == 1.0


def test_recall_thresholds_and_scale():
    errors = np.array([1.0, 4.0, 6.0, 9.0, 25.0, np.nan])
    out = m.recall_at_thresholds(errors)
    assert out == pytest.approx({"recall_5": 2 / 6, "recall_10": 4 / 6, "recall_20": 4 / 6})
    # At twice the reference resolution, thresholds double: 9 < 10 but 25 > 20 still fails at 5 -> 10 px
    assert m.correspondence_threshold_scale(160, 120) == pytest.approx(1.0)
    assert m.correspondence_threshold_scale(320, 240) == pytest.approx(2.0)
    out = m.recall_at_thresholds(errors, scale=2.0)
    assert out == pytest.approx({"recall_5": 4 / 6, "recall_10": 4 / 6, "recall_20": 5 / 6})
    assert m.recall_at_thresholds(np.zeros(7)) == {"recall_5": 1.0, "recall_10": 1.0, "recall_20": 1.0}


def test_rotation_angle_and_bins():
    a = math.radians(37.0)
    Rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    R0 = _rotate_about_x(np.eye(3), 20.0)
    assert rotation_angle_deg(R0, R0 @ Rz) == pytest.approx(37.0)
    assert m.rotation_bin_label(0.0) == "0-15"
    assert m.rotation_bin_label(15.0) == "15-30"
    assert m.rotation_bin_label(59.9) == "30-60"
    assert m.rotation_bin_label(180.0) == "60-180"
    assert m.rotation_bin_labels() == ["0-15", "15-30", "30-60", "60-180"]


def test_auc_by_hand():
    # pairs: 0.9>0.4, 0.9>0.5, 0.5>0.4, 0.5=0.5 (half) -> 3.5 / 4
    assert auc(np.array([0.9, 0.5]), np.array([0.4, 0.5])) == pytest.approx(0.875)
    assert auc(np.ones(5), np.ones(3)) == pytest.approx(0.5)
