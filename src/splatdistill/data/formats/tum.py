"""TUM RGB-D sequences (the benchmark's own layout)::

    SEQ/rgb.txt            '# comments', then 'timestamp rgb/<timestamp>.png' per line
    SEQ/depth.txt          'timestamp depth/<timestamp>.png' (16-bit PNG, 5000 units per metre, 0 = none)
    SEQ/groundtruth.txt    'timestamp tx ty tz qx qy qz qw': the colour camera's pose in the world
                           (optional: without it, 'data from-rgbd' estimates poses)
    SEQ/calibration.txt    optional: 'fx fy cx cy' of the colour camera (OpenCV convention)

Depth is already registered to the colour camera by the sensor driver. Each colour image takes the
depth image nearest in time, and its pose is interpolated (linear + slerp) between the two nearest
ground-truth samples; frames more than ``max_dt`` seconds from either are left out. Without a
calibration file the intrinsics are the ones published for the sequence's sensor (freiburg1/2/3 in
the folder name) or, failing that, the dataset's default 525/525/319.5/239.5. The published
freiburg1/2 intrinsics come with lens distortion the images still have; it is not modelled here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from splatdistill.data.formats.base import register_format
from splatdistill.errors import UserError

from .rgbd import RGBDFrame, RGBDSequence, intrinsics_matrix, parse_intrinsics, sequence_scene

DEPTH_SCALE = 1.0 / 5000.0
#: published colour intrinsics (fx, fy, cx, cy), OpenCV convention
SENSORS = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
    "default": (525.0, 525.0, 319.5, 239.5),
}


def is_tum(path: Path) -> bool:
    return (path / "rgb.txt").is_file() and (path / "depth.txt").is_file()


def read_list(path: Path, columns: int) -> list[tuple[float, list[str]]]:
    """Rows of a TUM list file as (timestamp, other columns); comments and blank lines skipped."""
    if not path.is_file():
        raise UserError("file not found", path)
    rows = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != columns:
            raise UserError(f"line {n}: expected {columns} columns, found {len(parts)}: {line[:60]!r}", path)
        try:
            t = float(parts[0])
        except ValueError:
            raise UserError(f"line {n}: the timestamp {parts[0]!r} is not a number", path) from None
        rows.append((t, parts[1:]))
    if not rows:
        raise UserError("no entries", path)
    return rows


def sensor_intrinsics(path: Path) -> np.ndarray:
    cal = path / "calibration.txt"
    if cal.is_file():
        return parse_intrinsics(str(cal))
    name = path.resolve().name.lower()
    key = next((k for k in SENSORS if k in name), "default")
    return intrinsics_matrix(*SENSORS[key])


def _poses(rows: list[tuple[float, list[str]]], file: Path) -> tuple[np.ndarray, np.ndarray, Rotation]:
    t = np.array([r[0] for r in rows])
    try:
        vals = np.array([[float(x) for x in r[1]] for r in rows])
    except ValueError:
        raise UserError("pose values must be numbers", file) from None
    q = vals[:, 3:7]
    if np.any(np.abs(np.linalg.norm(q, axis=1) - 1) > 1e-2):
        bad = int(np.argmax(np.abs(np.linalg.norm(q, axis=1) - 1)))
        raise UserError(f"the quaternion at timestamp {t[bad]:.6f} is not of unit length", file)
    order = np.argsort(t)
    return t[order], vals[order, :3], Rotation.from_quat(q[order])  # scipy's order is x, y, z, w like TUM's


def load_tum_sequence(path: str | Path, max_dt: float = 0.02, require_poses: bool = True) -> RGBDSequence:
    path = Path(path)
    rgb = read_list(path / "rgb.txt", 2)
    depth = read_list(path / "depth.txt", 2)
    gt_file = path / "groundtruth.txt"
    has_gt = gt_file.is_file()
    if require_poses and not has_gt:
        raise UserError(
            f"no groundtruth.txt; estimate poses with 'splatdistill data from-rgbd {path} --out DATASET'", path
        )
    dt_ = np.array([t for t, _ in depth])
    if has_gt:
        gt_t, gt_xyz, gt_rot = _poses(read_list(gt_file, 8), gt_file)
        slerp = Slerp(gt_t, gt_rot)
    frames = []
    for t, (file,) in rgb:
        j = int(np.argmin(np.abs(dt_ - t)))
        if abs(dt_[j] - t) > max_dt:
            continue
        c2w = None
        if has_gt:
            k = int(np.searchsorted(gt_t, t))
            if k == 0 or k == len(gt_t) or min(t - gt_t[k - 1], gt_t[k] - t) > max_dt:
                continue
            w = (t - gt_t[k - 1]) / (gt_t[k] - gt_t[k - 1])
            c2w = np.eye(4)
            c2w[:3, :3] = slerp([t]).as_matrix()[0]
            c2w[:3, 3] = (1 - w) * gt_xyz[k - 1] + w * gt_xyz[k]
        frames.append(RGBDFrame(f"{t:.6f}", path / file, path / depth[j][1][0], c2w))
    if not frames:
        raise UserError(
            f"no colour image has a depth image{' and a ground-truth pose' if has_gt else ''} within {max_dt} s", path
        )
    for f in (frames[0], frames[-1]):
        for p in (f.color, f.depth):
            if not p.is_file():
                raise UserError("file listed in rgb.txt/depth.txt not found", p)
    K = sensor_intrinsics(path)
    return RGBDSequence(path.resolve().name, frames, K, K, depth_scale=DEPTH_SCALE, root=path)


register_format(
    "tum",
    lambda path: path.is_dir() and is_tum(path),
    lambda path, split, skip_bad: [sequence_scene(load_tum_sequence(path))],
    order=50,
    looks_for="a TUM RGB-D sequence (rgb.txt, depth.txt)",
)
