"""ScanNet-1500: the test pairs of the matching literature, read from the pairs file and ScanNet's export::

    ROOT/scannet_test_pairs_with_gt.txt          one pair per line, 38 columns:
        path0 path1 rot0 rot1 K0 (9 values) K1 (9 values) T_0to1 (16 values, row-major 4x4)
    ROOT/scans_test/<scene>/color/<frame>.jpg      (as written by ScanNet's SensReader, 1296x968)
    ROOT/scans_test/<scene>/depth/<frame>.png      16-bit millimetres, 0 = none (640x480)

``path0``/``path1`` are relative to ``ROOT`` (the folder holding the pairs file; ``ROOT`` may also be
the pairs file). ``K0``/``K1`` are the colour intrinsics at the colour image's own size, ``T_0to1`` maps
camera-0 coordinates to camera-1 coordinates. ``rot0``/``rot1`` (EXIF rotations, 0 in this file) are
checked to be 0. Every pair becomes a two-view scene in the test split: view A at the origin, view B at
``inv(T_0to1)``, both resized to the standard 640x480 (intrinsics scaled to match). Depth is taken as
aligned with the resized colour image, as the matching literature does (ScanNet registers depth to
the colour camera's viewpoint, at its own intrinsics).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from splatdistill.errors import UserError

from .io import read_depth, read_rgb
from .scene import Scene, ViewData, ViewRecord

PAIRS_FILE = "scannet_test_pairs_with_gt.txt"
STANDARD_SIZE = (640, 480)  # (width, height) of the protocol
COLUMNS = 38


def find_pairs_file(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".txt":
        return path
    hit = path / PAIRS_FILE
    return hit if path.is_dir() and hit.is_file() else None


def is_scannet1500(path: Path) -> bool:
    return find_pairs_file(Path(path)) is not None


def parse_pairs(pairs_file: Path) -> list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]:
    """(path0, path1, K0, K1, T_0to1) per line, with each bad line named."""
    out = []
    for n, line in enumerate(pairs_file.read_text(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != COLUMNS:
            raise UserError(f"line {n} has {len(parts)} columns, expected {COLUMNS} "
                            "(path0 path1 rot0 rot1 K0[9] K1[9] T_0to1[16])", pairs_file)  # fmt: skip
        try:
            nums = np.array([float(x) for x in parts[2:]])
        except ValueError:
            raise UserError(f"line {n}: columns 3-38 must be numbers", pairs_file) from None
        if nums[0] != 0 or nums[1] != 0:
            raise UserError(f"line {n}: EXIF rotations {int(nums[0])}, {int(nums[1])} are not supported (expected 0 0)", pairs_file)
        K0, K1, T = nums[2:11].reshape(3, 3), nums[11:20].reshape(3, 3), nums[20:36].reshape(4, 4)
        if not np.allclose(T[3], [0, 0, 0, 1]) or abs(np.linalg.det(T[:3, :3]) - 1) > 1e-3:
            raise UserError(f"line {n}: T_0to1 is not a rigid transform", pairs_file)
        out.append((parts[0], parts[1], K0, K1, T))
    if not out:
        raise UserError("no pairs in the file", pairs_file)
    return out


def depth_path(color: Path) -> Path:
    """ScanNet's export: .../color/<frame>.jpg -> .../depth/<frame>.png."""
    return color.parent.parent / "depth" / f"{color.stem}.png"


def _view_loader(color: Path, K: np.ndarray, pose: np.ndarray, name: str):
    def load() -> ViewData:
        image = read_rgb(color)
        h, w = image.shape[:2]
        W, H = STANDARD_SIZE
        if (w, h) != (W, H):
            image = np.asarray(Image.fromarray((image * 255).round().astype(np.uint8)).resize((W, H), Image.BILINEAR),
                               dtype=np.float32) / 255.0  # fmt: skip
        depth = read_depth(depth_path(color), scale=1000.0)
        if depth.shape != (H, W):
            depth = np.asarray(Image.fromarray(depth).resize((W, H), Image.NEAREST), dtype=np.float32)
        return ViewData(image, scaled_K(K, w, h), pose, depth, name=name)
    return load


def scaled_K(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """An OpenCV-style K of a ``width x height`` image, for the standard size in pixel-centre coordinates."""
    sx, sy = STANDARD_SIZE[0] / width, STANDARD_SIZE[1] / height
    out = np.array(K, dtype=np.float64)
    out[0, 0] *= sx
    out[1, 1] *= sy
    out[0, 2] = (K[0, 2] + 0.5) * sx
    out[1, 2] = (K[1, 2] + 0.5) * sy
    return out


def load_scannet1500(path: str | Path, max_pairs: int | None = None) -> list[Scene]:
    """One two-view test scene per pair of the pairs file (the first ``max_pairs`` when given)."""
    path = Path(path)
    pairs_file = find_pairs_file(path)
    if pairs_file is None:
        raise UserError(f"no {PAIRS_FILE} here (ScanNet-1500; see docs/evaluation.md for the layout)", path)
    root = pairs_file.parent
    pairs = parse_pairs(pairs_file)[:max_pairs]
    scenes = []
    for k, (p0, p1, K0, K1, T) in enumerate(pairs):
        views = []
        for rel, K, pose in ((p0, K0, np.eye(4)), (p1, K1, np.linalg.inv(T))):
            color = root / rel
            for need in (color, depth_path(color)):
                if not need.is_file():
                    raise UserError(f"pair {k + 1}: {need.relative_to(root)} not found (ScanNet export: "
                                    "scans_test/<scene>/color/<frame>.jpg and depth/<frame>.png)", root)  # fmt: skip
            with Image.open(color) as im:
                w, h = im.size
            Ks = scaled_K(K, w, h)
            name = f"{Path(rel).parts[-3] if len(Path(rel).parts) >= 3 else ''}/{color.stem}"
            views.append(ViewRecord(name, Ks, pose, *STANDARD_SIZE, _view_loader(color, K, pose, name)))
        scenes.append(Scene(f"pair{k + 1:04d}", views, split="test", root=root))
    return scenes
