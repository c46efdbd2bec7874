"""``data from-rgbd``: an RGB-D sequence without poses becomes a posed dataset (native format).

Input layouts: a TUM sequence (``rgb.txt``/``depth.txt``, its ``groundtruth.txt`` ignored), a 7-Scenes
``seq-NN`` folder, or a plain folder of colour images and depth files paired by frame number
(16-bit PNG, ViSP ``.bin`` or ``.npy``; depth files have ``depth`` in their name). Depth is
registered to the colour camera when the calibration says the cameras differ, then poses come from
RGB-D odometry (:mod:`splatdistill.captures.odometry`). Output: ``OUT/<sequence>/scene.json`` with
``rgb/`` and ``depth/`` (in the colour camera), ``from_rgbd.json`` (what was estimated and the
self-check) and ``registration.png`` (depth over the image, before and after registration).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from tqdm import tqdm

from splatdistill.data import io
from splatdistill.data.checks.geometry import reprojection_error
from splatdistill.data.formats import sevenscenes, tum
from splatdistill.data.formats.native import write_scene, write_view_files
from splatdistill.data.formats.rgbd import (
    RGBDSequence,
    check_depth_scale,
    check_principal_point,
    color_depth,
    pair_files,
    parse_intrinsics,
    parse_transform,
    read_metric_depth,
)
from splatdistill.data.scene import ViewData
from splatdistill.errors import UserError

from .odometry import OdometryOptions, estimate_poses


@dataclass
class Calibration:
    """What the user tells about the cameras; None keeps the layout's own value."""

    color_intrinsics: str | None = None
    depth_intrinsics: str | None = None
    color_to_depth: str | None = None
    depth_scale: float | None = None


def read_sequence(path: Path, cal: Calibration, every: int = 1) -> RGBDSequence:
    """The sequence at ``path`` in any supported layout, with the user's calibration applied."""
    path = Path(path)
    if not path.is_dir():
        raise UserError("no such folder (expected an RGB-D sequence)", path)
    if tum.is_tum(path):
        seq = tum.load_tum_sequence(path, require_poses=False)
    elif sevenscenes.is_sevenscenes(path):
        dirs = sevenscenes.sequence_dirs(path)
        if len(dirs) > 1:
            raise UserError(
                f"holds {len(dirs)} 7-Scenes sequences; run from-rgbd on one of them (e.g. {dirs[0]})", path
            )
        seq = sevenscenes.load_sevenscenes_sequence(dirs[0], every=1, require_poses=False)
    else:
        if cal.color_intrinsics is None:
            raise UserError("a plain folder of frames needs --color-intrinsics (fx,fy,cx,cy or a file)", path)
        seq = RGBDSequence(path.resolve().name, pair_files(path), np.eye(3), np.eye(3), root=path)
    if cal.color_intrinsics is not None:
        seq.K_color = parse_intrinsics(cal.color_intrinsics)
        seq.K_depth = seq.K_color.copy()
    if cal.depth_intrinsics is not None:
        seq.K_depth = parse_intrinsics(cal.depth_intrinsics)
    if cal.color_to_depth is not None:
        seq.color_to_depth = parse_transform(cal.color_to_depth)
    if cal.depth_scale is not None:
        if not (np.isfinite(cal.depth_scale) and cal.depth_scale > 0):
            raise UserError(f"--depth-scale must be a number > 0 (metres per stored unit), got {cal.depth_scale}")
        seq.depth_scale = cal.depth_scale
    seq.frames = seq.frames[:: max(every, 1)]
    for f in seq.frames:
        f.cam_to_world = None
    if len(seq.frames) < 2:
        raise UserError(f"an RGB-D sequence needs at least 2 frames, found {len(seq.frames)}", path)
    check_calibration(seq, cal, plain=not (tum.is_tum(path) or sevenscenes.is_sevenscenes(path)))
    return seq


def check_calibration(seq: RGBDSequence, cal: Calibration, plain: bool) -> None:
    """The user's intrinsics fit the first frame's images, and the depth scale (the user's, or a plain
    folder's default) gives depths a camera can see. A layout's own calibration is its authors'."""
    first = seq.frames[0]
    if cal.color_intrinsics is not None:
        check_principal_point(seq.K_color, *io.image_size(first.color), "colour intrinsics", first.color)
    if cal.depth_scale is None and not plain and cal.depth_intrinsics is None:
        return
    depth = read_metric_depth(seq, first)
    if cal.depth_intrinsics is not None or cal.color_intrinsics is not None:
        check_principal_point(seq.K_depth, depth.shape[1], depth.shape[0], "depth intrinsics", first.depth)
    if cal.depth_scale is not None or plain:
        check_depth_scale(depth, seq.depth_scale, first.depth)


def _gray(image: np.ndarray) -> np.ndarray:
    return (image @ np.array([0.299, 0.587, 0.114])).astype(np.float32)


def registration_figure(path: Path, image: np.ndarray, raw: np.ndarray, registered: np.ndarray) -> None:
    """Depth over the image, as the sensor gives it and registered to the colour camera."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    valid = registered[registered > 0]
    lo, hi = np.percentile(valid, [2, 98]) if valid.size else (0.0, 1.0)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, d, title in (
        (axes[0], raw, "depth as stored (depth camera)"),
        (axes[1], registered, "registered to the colour camera"),
    ):
        ax.imshow(_gray(image), cmap="gray")
        ax.imshow(np.ma.masked_where(d <= 0, d), cmap="turbo", alpha=0.45, vmin=lo, vmax=hi)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    io.atomic_write_bytes(path, buf.getvalue())


def self_check(first: ViewData, others: dict[int, ViewData]) -> dict[str, dict[str, float]]:
    """Median |depth difference| (mm) of frame k reprojected into frame 0, with the estimated poses and
    with all poses at the origin (what no motion estimate at all would give)."""
    out = {}
    for k, v in others.items():
        est = reprojection_error(v, first)
        zero = reprojection_error(*(ViewData(x.image, x.K, np.eye(4), depth=x.depth) for x in (v, first)))
        out[str(k)] = {
            "median_abs_mm": est.median_abs_error * 1000,
            "zero_motion_median_abs_mm": zero.median_abs_error * 1000,
            "visible_fraction": est.visible_fraction,
        }
    return out


def from_rgbd(seq: RGBDSequence, out: Path, opts: OdometryOptions | None = None, progress: bool = True) -> dict:
    """Register, estimate poses, write the scene; returns the summary also written to ``from_rgbd.json``.

    Frames stream through: each is read, registered, written and handed to the odometry, so a long
    sequence never sits in memory (only the previous frame and the keyframe do).
    """
    opts = opts or OdometryOptions()
    w, h = io.image_size(seq.frames[0].color)
    scene_dir = Path(out) / seq.name
    entries: list[dict] = []

    def frames():
        for f in seq.frames:
            img = io.read_rgb(f.color)
            if img.shape[:2] != (h, w):
                raise UserError(f"image is {img.shape[1]}x{img.shape[0]} but the first frame is {w}x{h}", f.color)
            d = color_depth(seq, f, w, h)
            if not np.any(d > 0):
                raise UserError(
                    "depth has no valid pixel in the colour camera (wrong --depth-scale or calibration?)", f.depth
                )
            entries.append(write_view_files(scene_dir, ViewData(img, seq.K_color, np.eye(4), depth=d), f.name))
            yield _gray(img), d

    bar = tqdm(
        total=len(seq.frames),
        desc="registering depth + RGB-D odometry",
        unit="frame",
        disable=not progress,
        dynamic_ncols=True,
    )
    res = estimate_poses(frames(), seq.K_color, w, h, opts, lambda i: bar.update(1))
    bar.close()
    for e, pose in zip(entries, res.poses):
        e["cam_to_world"] = pose
    write_scene(scene_dir, seq.name, "train", [], entries, meta={"source": str(seq.root), "poses": "RGB-D odometry"})

    def view(k: int) -> ViewData:
        return ViewData(
            io.read_rgb(scene_dir / entries[k]["image"]),
            seq.K_color,
            res.poses[k],
            depth=io.read_depth(scene_dir / entries[k]["depth"]),
        )

    first = view(0)
    registration_figure(scene_dir / "registration.png", first.image, read_metric_depth(seq, seq.frames[0]), first.depth)
    summary = {
        "source": str(seq.root),
        "frames": len(entries),
        "width": w,
        "height": h,
        "depth_registered_to_color": not seq.registered,
        "keyframes": res.keyframes,
        "failed_alignments": res.failed,
        "overlap": [round(x, 4) for x in res.overlap],
        "path_length_m": float(sum(np.linalg.norm(b[:3, 3] - a[:3, 3]) for a, b in zip(res.poses, res.poses[1:]))),
        "self_check": self_check(first, {k: view(k) for k in (10, 20) if k < len(entries)}),
        "options": asdict(opts),
    }
    io.atomic_write_json(scene_dir / "from_rgbd.json", summary)
    return summary
