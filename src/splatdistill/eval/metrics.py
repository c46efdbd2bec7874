"""Pure metric functions for the evaluation suite (numpy in, Python floats out).

Everything here is computed in float64 and pooled over pixels (or matches): the caller concatenates the
valid pixels of every evaluated view, or accumulates a confusion matrix, and calls the function once.
Keeping the maths free of torch and of the probes makes it checkable against hand-computed cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

#: Angular thresholds (degrees) of the surface-normal protocol.
NORMAL_THRESHOLDS_DEG: tuple[float, ...] = (11.25, 22.5, 30.0)
#: Reprojection-error thresholds (pixels at the 160x120 reference resolution) of the correspondence protocol.
CORRESPONDENCE_THRESHOLDS_PX: tuple[float, ...] = (5.0, 10.0, 20.0)
#: Relative-rotation bin edges (degrees) used to break correspondence recall down by viewpoint change.
ROTATION_BIN_EDGES_DEG: tuple[float, ...] = (0.0, 15.0, 30.0, 60.0, 180.0)
#: The reference resolution (width, height) at which correspondence thresholds are defined.
CORRESPONDENCE_REFERENCE_SIZE: tuple[int, int] = (160, 120)

#: Whether a larger value of a metric is better; drives the bold "best" cell in the report.
HIGHER_IS_BETTER: dict[str, bool] = {
    "abs_rel": False,
    "rmse": False,
    "delta1": True,
    "delta2": True,
    "delta3": True,
    "mean_deg": False,
    "median_deg": False,
    "rmse_deg": False,
    "pct_11_25": True,
    "pct_22_5": True,
    "pct_30": True,
    "miou": True,
    "pixel_acc": True,
    "recall_5": True,
    "recall_10": True,
    "recall_20": True,
    "positive_cos": True,
    "gap": True,
    "auc": True,
    "sq_rel": False,
    "rmse_log": False,
    "log10": False,
    "silog": False,
}
#: Evaluation crops of the depth benchmarks (``EvalConfig.depth_crop``), see :func:`crop_mask`.
DEPTH_CROPS: tuple[str, ...] = ("none", "nyu_eigen", "kitti_garg", "kitti_eigen")
#: Evaluation crops of the normal benchmarks (``EvalConfig.normals_crop``): ``center_square`` is Probe3D's
#: NYUv2 centre crop (columns 80:560 of 640), the central H x H square of any view.
NORMAL_CROPS: tuple[str, ...] = ("none", "center_square")


def _threshold_key(prefix: str, value: float) -> str:
    text = f"{value:g}".replace(".", "_")
    return f"{prefix}{text}"


def depth_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """AbsRel, RMSE and delta < 1.25^k (k = 1, 2, 3) over the valid pixels.

    ``valid`` defaults to ``gt > 0``. Predictions are clipped to a tiny positive value so a zero
    prediction counts as a large (finite) error instead of dividing by zero.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    mask = gt > 0 if valid is None else (np.asarray(valid, dtype=bool) & (gt > 0))
    p = np.maximum(pred[mask], 1e-6)
    g = gt[mask]
    if g.size == 0:
        raise ValueError("no valid ground-truth depth pixels")
    ratio = np.maximum(p / g, g / p)
    out = {"abs_rel": float(np.mean(np.abs(p - g) / g)), "rmse": float(np.sqrt(np.mean((p - g) ** 2)))}
    for k in (1, 2, 3):
        out[f"delta{k}"] = float(np.mean(ratio < 1.25**k))
    out["n_pixels"] = int(g.size)
    return out


def angular_errors_deg(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Angle in degrees between each predicted and ground-truth normal (last axis = xyz).

    Both are normalised first, so the prediction's length does not matter; a zero-length prediction
    gets 90 degrees (orthogonal to everything) rather than NaN.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 3)
    pn = np.linalg.norm(pred, axis=1, keepdims=True)
    gn = np.linalg.norm(gt, axis=1, keepdims=True)
    if np.any(gn <= 0):
        raise ValueError("ground-truth normals must be non-zero (mask invalid pixels first)")
    pred = np.divide(pred, pn, out=np.zeros_like(pred), where=pn > 0)
    cos = np.clip(np.sum(pred * (gt / gn), axis=1), -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def normal_metrics_from_errors(errors_deg: np.ndarray) -> dict[str, float]:
    """Mean, median and RMSE angular error, and the % of pixels under 11.25, 22.5 and 30 degrees."""
    e = np.asarray(errors_deg, dtype=np.float64).ravel()
    if e.size == 0:
        raise ValueError("no valid ground-truth normal pixels")
    out = {"mean_deg": float(np.mean(e)), "median_deg": float(np.median(e)), "rmse_deg": float(np.sqrt(np.mean(e**2)))}
    for t in NORMAL_THRESHOLDS_DEG:
        out[_threshold_key("pct_", t)] = float(100.0 * np.mean(e < t))
    out["n_pixels"] = int(e.size)
    return out


def normal_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Normal metrics over pixels where ``valid`` (default: non-zero ground truth) holds."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(f"expected matching (..., 3) arrays, got {pred.shape} and {gt.shape}")
    mask = np.linalg.norm(gt, axis=-1) > 0
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    return normal_metrics_from_errors(angular_errors_deg(pred[mask], gt[mask]))


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = -1) -> np.ndarray:
    """``num_classes x num_classes`` counts, rows = ground truth, columns = prediction.

    Pixels whose ground truth is ``ignore_index`` (or outside ``[0, num_classes)``) are dropped.
    """
    pred = np.asarray(pred, dtype=np.int64).ravel()
    gt = np.asarray(gt, dtype=np.int64).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction size {pred.size} != ground-truth size {gt.size}")
    keep = (gt != ignore_index) & (gt >= 0) & (gt < num_classes)
    if np.any((pred[keep] < 0) | (pred[keep] >= num_classes)):
        raise ValueError("predicted class index out of range")
    flat = gt[keep] * num_classes + pred[keep]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_metrics(conf: np.ndarray, class_names: Sequence[str] | None = None) -> dict:
    """mIoU and pixel accuracy from a confusion matrix (rows = ground truth).

    IoU_c = TP / (TP + FP + FN). The mean runs over the classes that occur in the ground truth of the
    evaluated split (row sum > 0): a class the split never shows cannot be scored fairly, while a class
    that is present but never predicted correctly counts with IoU 0. Classes absent from the ground
    truth still hurt the mean through the false positives they cause in present classes.
    """
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError("confusion matrix must be square")
    total = conf.sum()
    if total <= 0:
        raise ValueError("empty confusion matrix (no labelled pixels)")
    tp = np.diag(conf)
    gt_count = conf.sum(axis=1)
    pred_count = conf.sum(axis=0)
    union = gt_count + pred_count - tp
    present = gt_count > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(tp))]
    return {
        "miou": float(np.mean(iou[present])),
        "pixel_acc": float(tp.sum() / total),
        "per_class_iou": {names[i]: float(iou[i]) for i in range(len(tp)) if present[i]},
        "n_classes": int(present.sum()),
        "n_pixels": int(total),
    }


def correspondence_threshold_scale(width: int, height: int) -> float:
    """Factor turning reference-resolution pixel thresholds into pixels of a ``width x height`` image.

    The protocol's 5/10/20 px are defined at 160x120; an image of another size (or aspect) is compared
    through the ratio of image diagonals, so the thresholds cover the same fraction of the view.
    """
    rw, rh = CORRESPONDENCE_REFERENCE_SIZE
    return float(np.hypot(width, height) / np.hypot(rw, rh))


def recall_at_thresholds(
    errors_px: np.ndarray, thresholds_px: Iterable[float] = CORRESPONDENCE_THRESHOLDS_PX, scale: float = 1.0
) -> dict[str, float]:
    """Fraction of matches whose reprojection error is below each (scaled) threshold.

    NaN errors (a match whose ground truth is unknown) count as failures.
    """
    e = np.asarray(errors_px, dtype=np.float64).ravel()
    out = {}
    for t in thresholds_px:
        key = _threshold_key("recall_", t)
        out[key] = float(np.mean(np.nan_to_num(e, nan=np.inf) < t * scale)) if e.size else float("nan")
    return out


def rotation_bin_label(angle_deg: float, edges: Sequence[float] = ROTATION_BIN_EDGES_DEG) -> str:
    """Name of the bin (``"lo-hi"``) a relative rotation falls in; the last bin includes its top edge."""
    for lo, hi in zip(edges[:-1], edges[1:]):
        if lo <= angle_deg < hi or (hi == edges[-1] and angle_deg <= hi):
            return f"{lo:g}-{hi:g}"
    raise ValueError(f"angle {angle_deg} outside the rotation bins {tuple(edges)}")


def rotation_bin_labels(edges: Sequence[float] = ROTATION_BIN_EDGES_DEG) -> list[str]:
    return [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:])]


# ------------------------------------------------------------ the paper's protocol (suite=paper)


def crop_mask(shape: tuple[int, int], crop: str) -> np.ndarray:
    """The evaluation crop of a dataset as a boolean mask of a ``shape`` ground-truth map.

    ``nyu_eigen`` is rows 45:471 and columns 41:601 of a 480x640 map (scaled to other sizes);
    ``kitti_garg`` / ``kitti_eigen`` are the fractions of the KB-cropped frame the reference uses.
    """
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    if crop == "none":
        mask[:] = True
    elif crop == "nyu_eigen":
        mask[
            int(round(45 * h / 480)) : int(round(471 * h / 480)), int(round(41 * w / 640)) : int(round(601 * w / 640))
        ] = True
    elif crop == "kitti_garg":
        mask[int(0.40810811 * h) : int(0.99189189 * h), int(0.03594771 * w) : int(0.96405229 * w)] = True
    elif crop == "kitti_eigen":
        mask[int(0.3324324 * h) : int(0.91351351 * h), int(0.0359477 * w) : int(0.96405229 * w)] = True
    elif crop == "center_square":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        mask[top : top + side, left : left + side] = True
    else:
        raise ValueError(f"unknown crop {crop!r} (choose from {', '.join(DEPTH_CROPS + NORMAL_CROPS[1:])})")
    return mask


def image_depth_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The reference's nine depth metrics of one image's valid pixels (float64 here)."""
    p = np.maximum(np.asarray(pred, np.float64), 1e-6)
    g = np.asarray(gt, np.float64)
    thresh = np.maximum(g / p, p / g)
    err = np.log(p) - np.log(g)
    return {
        "abs_rel": float(np.mean(np.abs(g - p) / g)),
        "sq_rel": float(np.mean((g - p) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((g - p) ** 2))),
        "rmse_log": float(np.sqrt(np.mean(err**2))),
        "log10": float(np.mean(np.abs(np.log10(g) - np.log10(p)))),
        "silog": float(np.sqrt(max(np.mean(err**2) - np.mean(err) ** 2, 0.0)) * 100),
        "delta1": float(np.mean(thresh < 1.25)),
        "delta2": float(np.mean(thresh < 1.25**2)),
        "delta3": float(np.mean(thresh < 1.25**3)),
    }


def paper_depth_metrics(
    preds: list[np.ndarray], gts: list[np.ndarray], min_depth: float, max_depth: float, crop: str
) -> dict[str, float]:
    """Per-image metrics on ``min_depth < gt < max_depth`` inside ``crop``, averaged over images (images
    without a valid pixel are left out, as the reference's nanmean does)."""
    rows = []
    pixels = 0
    for pred, gt in zip(preds, gts):
        valid = (gt > min_depth) & (gt < max_depth) & crop_mask(gt.shape, crop)
        if valid.any():
            rows.append(image_depth_metrics(pred[valid], gt[valid]))
            pixels += int(valid.sum())
    if not rows:
        raise ValueError("no valid ground-truth depth pixels")
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out["n_images"] = len(rows)
    out["n_pixels"] = pixels
    return out


def paper_normal_metrics(errors_per_image: list[np.ndarray]) -> dict[str, float]:
    """Probe3D's aggregation: every metric of each image's valid pixels (RMSE = sqrt of the image's mean
    squared angle), then the mean over images; images without a valid pixel are left out."""
    rows = [normal_metrics_from_errors(e) for e in errors_per_image if np.asarray(e).size]
    if not rows:
        raise ValueError("no valid ground-truth normal pixels")
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "n_pixels"}
    out["n_images"] = len(rows)
    out["n_pixels"] = int(sum(r["n_pixels"] for r in rows))
    return out


def miou_mmseg(conf: np.ndarray, class_names: list[str]) -> dict:
    """mIoU over the classes whose union (prediction or ground truth) is non-empty, and pixel accuracy."""
    conf = np.asarray(conf, dtype=np.float64)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
    scored = np.flatnonzero(union > 0)
    return {
        "miou": float(np.nanmean(iou)) if scored.size else float("nan"),
        "pixel_acc": float(inter.sum() / max(conf.sum(), 1)),
        "classes_scored": int(scored.size),
        "per_class_iou": {class_names[i] if i < len(class_names) else str(i): float(iou[i]) for i in scored},
    }
