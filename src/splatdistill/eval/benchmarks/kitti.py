"""KITTI depth on the Eigen split, in the layout of the depth-estimation literature (BTS / Monodepth)::

    ROOT/kitti_eigen_train.txt, ROOT/kitti_eigen_test.txt     (or eigen_{train,test}_files_with_gt.txt,
                                                              or FiT3D's kitti_train.txt / kitti_val.txt)
        one line per frame: <image path> <depth path or None> <focal>
        e.g. 2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png
             2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377
    images under ROOT, ROOT/input or ROOT/raw; depth under ROOT, ROOT/gt_depth or
    ROOT/data_depth_annotated (with or without its train/ or val/ level); else by file name in the flat
    ROOT/images and ROOT/depth of FiT3D's eval_data/kitti
    depth PNGs: 16-bit, metres x 256, 0 = no measurement (sparse, projected LiDAR)

Frames with depth ``None`` are skipped (as the reference does). Every frame is cropped to the KB crop,
the bottom 352 rows and the central 1216 columns (the region with LiDAR), and the intrinsics follow.
The garg/eigen evaluation crops are applied by the evaluation (``depth_crop``), not here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from splatdistill.data.formats import register_format
from splatdistill.data.io import depth_list_lines, image_header, read_depth, read_rgb
from splatdistill.data.scene import Scene, ViewData, ViewRecord
from splatdistill.errors import UserError

SPLIT_FILES = {
    "train": ("kitti_eigen_train.txt", "eigen_train_files_with_gt.txt", "kitti_train.txt"),
    "test": ("kitti_eigen_test.txt", "eigen_test_files_with_gt.txt", "kitti_val.txt"),
}
KB_CROP = (352, 1216)
DEPTH_SCALE = 256.0
#: rectified left colour camera (P_rect_02) per recording day
P_RECT_02 = {
    "2011_09_26": (721.5377, 609.5593, 172.8540),
    "2011_09_28": (707.0493, 604.0814, 180.5066),
    "2011_09_29": (718.3351, 600.3891, 181.5122),
    "2011_09_30": (707.0912, 601.8873, 183.1104),
    "2011_10_03": (718.8560, 607.1928, 185.2157),
}


def split_file(root: Path, split: str) -> Path | None:
    return next((root / n for n in SPLIT_FILES[split] if (root / n).is_file()), None)


def is_kitti(path: Path) -> bool:
    return Path(path).is_dir() and split_file(Path(path), "test") is not None


def _find(root: Path, rel: str, bases: tuple[str, ...], flat: str) -> Path | None:
    """``rel`` under one of ``bases`` (with or without a train/ or val/ level), else its file name in the
    flat folder ``flat`` (FiT3D's ``eval_data/kitti/{images,depth}``, looked up by file name as it does)."""
    for base in bases:
        for sub in ("", "train", "val"):
            p = root / base / sub / rel
            if p.is_file():
                return p
    p = root / flat / Path(rel).name
    return p if p.is_file() else None


def kb_crop_box(height: int, width: int) -> tuple[int, int]:
    """(top, left) of the KB crop of a ``height x width`` frame."""
    return max(height - KB_CROP[0], 0), max((width - KB_CROP[1]) // 2, 0)


def _loader(image: Path, depth: Path, K: np.ndarray, name: str):
    def load() -> ViewData:
        rgb = read_rgb(image)
        d = read_depth(depth, scale=DEPTH_SCALE)
        if d.shape != rgb.shape[:2]:
            raise UserError(f"depth is {d.shape[1]}x{d.shape[0]}, its image {rgb.shape[1]}x{rgb.shape[0]}", depth)
        top, left = kb_crop_box(*d.shape)
        h, w = min(KB_CROP[0], d.shape[0]), min(KB_CROP[1], d.shape[1])
        return ViewData(
            np.ascontiguousarray(rgb[top : top + h, left : left + w]),
            K,
            np.eye(4),
            np.ascontiguousarray(d[top : top + h, left : left + w]),
            name=name,
        )

    return load


def _focal(text: str, line: int, list_file: Path) -> float:
    try:
        focal = float(text)
    except ValueError:
        raise UserError(f"line {line}: the focal length {text!r} is not a number", list_file) from None
    if not (np.isfinite(focal) and focal > 0):
        raise UserError(f"line {line}: the focal length must be a number > 0, got {text!r}", list_file)
    return focal


def load_kitti(path: str | Path, split: str | None = None) -> list[Scene]:
    root = Path(path)
    if not is_kitti(root):
        raise UserError(f"no Eigen split file here ({' or '.join(SPLIT_FILES['test'])}; see docs/evaluation.md)", root)
    scenes = []
    for sp in ("train", "test"):
        f = split_file(root, sp)
        if f is None or (split is not None and sp != split):
            continue
        views = []
        for n, parts in depth_list_lines(f):
            image = _find(root, parts[0], ("", "input", "raw"), "images")
            depth = _find(root, parts[1], ("", "gt_depth", "data_depth_annotated"), "depth")
            for what, p, rel in (("image", image, parts[0]), ("depth", depth, parts[1])):
                if p is None:
                    raise UserError(
                        f"line {n}: {what} {rel} not found under ROOT, ROOT/input|raw|images or "
                        "ROOT/gt_depth|data_depth_annotated|depth",
                        f,
                    )
            w, h, _ = image_header(image)
            top, left = kb_crop_box(h, w)
            day = parts[0].split("/")[0]
            focal = _focal(parts[2], n, f) if len(parts) > 2 else 721.5377
            fx, cx, cy = P_RECT_02.get(day, (focal, w / 2 - 0.5, h / 2 - 0.5))
            K = np.array([[fx, 0, cx + 0.5 - left], [0, fx, cy + 0.5 - top], [0, 0, 1.0]])
            name = f"{Path(parts[0]).parts[1] if len(Path(parts[0]).parts) > 1 else ''}/{Path(parts[0]).stem}"
            views.append(
                ViewRecord(name, K, np.eye(4), min(w, KB_CROP[1]), min(h, KB_CROP[0]), _loader(image, depth, K, name))
            )
        if views:
            scenes.append(Scene(f"kitti-eigen-{sp}", views, split=sp, root=root))
    if not scenes:
        raise UserError("the Eigen split files list no frame with depth", root)
    return scenes


register_format(
    "kitti",
    is_kitti,
    lambda path, split, skip_bad: load_kitti(path),
    order=110,
    looks_for="KITTI Eigen split files",
    benchmark=True,
)
