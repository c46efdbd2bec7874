"""ScanNet-1500: the test pairs of the matching literature, in either of its two published layouts.

SuperGlue's pairs file with ScanNet's export::

    ROOT/scannet_test_pairs_with_gt.txt          one pair per line, 38 columns:
        path0 path1 rot0 rot1 K0 (9 values) K1 (9 values) T_0to1 (16 values, row-major 4x4)
    ROOT/scans_test/<scene>/color/<frame>.jpg      (as written by ScanNet's SensReader, 1296x968)
    ROOT/scans_test/<scene>/depth/<frame>.png      16-bit millimetres, 0 = none (640x480)

LoFTR's ``scannet_test_1500`` folder, the one Probe3D (the paper's correspondence code) reads::

    ROOT/test.npz                                 'name': (1500, 4) rows of scene number, sequence, frame 0, frame 1
    ROOT/intrinsics.npz                           'scene0707_00' -> 3x3 colour intrinsics, one per scene
    ROOT/scene0707_00/color/<frame>.jpg, depth/<frame>.png (mm), pose/<frame>.txt (4x4 camera-to-world)

``path0``/``path1`` are relative to ``ROOT`` (the folder holding the pairs file; ``ROOT`` may also be
the pairs file). ``K0``/``K1`` (and LoFTR's per-scene K) are the colour intrinsics at the colour image's
own size, ``T_0to1`` maps camera-0 coordinates to camera-1 coordinates (LoFTR's layout gives the two
poses instead; Probe3D takes ``inv(pose1) @ pose0``, the same transform). ``rot0``/``rot1`` (EXIF
rotations, 0 in this file) are checked to be 0. Every pair becomes a two-view scene in the test split:
view A at the origin, view B at ``inv(T_0to1)``, both resized to the standard 640x480 (intrinsics
scaled to match). Depth is taken as aligned with the resized colour
image, as the matching literature does (ScanNet registers depth to the colour camera's viewpoint).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from splatdistill.data.formats import register_format
from splatdistill.data.io import image_header, read_depth, read_rgb
from splatdistill.data.scene import Scene, ViewData, ViewRecord
from splatdistill.errors import UserError

PAIRS_FILE = "scannet_test_pairs_with_gt.txt"
STANDARD_SIZE = (640, 480)  # (width, height) of the protocol
COLUMNS = 38


LOFTR_FILES = ("test.npz", "intrinsics.npz")


def find_pairs_file(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".txt":
        return path
    hit = path / PAIRS_FILE
    return hit if path.is_dir() and hit.is_file() else None


def is_loftr_layout(path: Path) -> bool:
    return Path(path).is_dir() and all((Path(path) / f).is_file() for f in LOFTR_FILES)


def is_scannet1500(path: Path) -> bool:
    return find_pairs_file(Path(path)) is not None or is_loftr_layout(Path(path))


def parse_pairs(pairs_file: Path) -> list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]:
    """(path0, path1, K0, K1, T_0to1) per line, with each bad line named."""
    out = []
    for n, line in enumerate(pairs_file.read_text(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != COLUMNS:
            raise UserError(
                f"line {n} has {len(parts)} columns, expected {COLUMNS} (path0 path1 rot0 rot1 K0[9] K1[9] T_0to1[16])",
                pairs_file,
            )
        try:
            nums = np.array([float(x) for x in parts[2:]])
        except ValueError:
            raise UserError(f"line {n}: columns 3-38 must be numbers", pairs_file) from None
        if nums[0] != 0 or nums[1] != 0:
            raise UserError(
                f"line {n}: EXIF rotations {int(nums[0])}, {int(nums[1])} are not supported (expected 0 0)", pairs_file
            )
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
            image = (
                np.asarray(
                    Image.fromarray((image * 255).round().astype(np.uint8)).resize((W, H), Image.BILINEAR),
                    dtype=np.float32,
                )
                / 255.0
            )
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


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise UserError(
            f"cannot read as .npz, truncated or damaged ({type(exc).__name__}: {str(exc)[:100]})", path
        ) from None


def _read_pose(path: Path) -> np.ndarray:
    try:
        pose = np.loadtxt(path, dtype=np.float64).reshape(4, 4)
    except (OSError, ValueError):
        raise UserError("expected a 4x4 camera-to-world matrix (16 numbers)", path) from None
    if not np.all(np.isfinite(pose)):  # ScanNet marks frames without tracking with -inf poses
        raise UserError("pose is not finite (a frame ScanNet could not track)", path)
    return pose


def parse_loftr(root: Path) -> list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]:
    """(path0, path1, K0, K1, T_0to1) of LoFTR's test.npz + intrinsics.npz, poses read from pose/*.txt."""
    names = _read_npz(root / "test.npz")
    if "name" not in names or names["name"].ndim != 2 or names["name"].shape[1] != 4:
        raise UserError(
            "expected an array 'name' of (pairs, 4) rows: scene, sequence, frame 0, frame 1", root / "test.npz"
        )
    intr = _read_npz(root / "intrinsics.npz")
    out = []
    for k, (room, seq, f0, f1) in enumerate(names["name"].astype(np.int64)):
        scene = f"scene{room:04d}_{seq:02d}"
        if scene not in intr:
            raise UserError(f"pair {k + 1}: no intrinsics for {scene}", root / "intrinsics.npz")
        K = np.asarray(intr[scene], dtype=np.float64).reshape(3, 3)
        poses = []
        for f in (f0, f1):
            pose_file = root / scene / "pose" / f"{f}.txt"
            if not pose_file.is_file():
                raise UserError(f"pair {k + 1}: {pose_file.relative_to(root)} not found", root)
            poses.append(_read_pose(pose_file))
        out.append((f"{scene}/color/{f0}.jpg", f"{scene}/color/{f1}.jpg", K, K, np.linalg.inv(poses[1]) @ poses[0]))
    if not out:
        raise UserError("no pairs in the file", root / "test.npz")
    return out


def load_scannet1500(path: str | Path, max_pairs: int | None = None) -> list[Scene]:
    """One two-view test scene per pair (the first ``max_pairs`` when given), from either layout."""
    path = Path(path)
    pairs_file = find_pairs_file(path)
    if pairs_file is not None:
        root, pairs = pairs_file.parent, parse_pairs(pairs_file)[:max_pairs]
        layout = "ScanNet export: scans_test/<scene>/color/<frame>.jpg and depth/<frame>.png"
    elif is_loftr_layout(path):
        root, pairs = path, parse_loftr(path)[:max_pairs]
        layout = "LoFTR's scannet_test_1500: <scene>/color/<frame>.jpg and depth/<frame>.png"
    else:
        raise UserError(
            f"no {PAIRS_FILE} or {' + '.join(LOFTR_FILES)} here (ScanNet-1500; see docs/evaluation.md for the layouts)",
            path,
        )
    scenes = []
    for k, (p0, p1, K0, K1, T) in enumerate(pairs):
        views = []
        for rel, K, pose in ((p0, K0, np.eye(4)), (p1, K1, np.linalg.inv(T))):
            color = root / rel
            for need in (color, depth_path(color)):
                if not need.is_file():
                    raise UserError(f"pair {k + 1}: {need.relative_to(root)} not found ({layout})", root)
            w, h, _ = image_header(color)
            Ks = scaled_K(K, w, h)
            name = f"{Path(rel).parts[-3] if len(Path(rel).parts) >= 3 else ''}/{color.stem}"
            views.append(ViewRecord(name, Ks, pose, *STANDARD_SIZE, _view_loader(color, K, pose, name)))
        scenes.append(Scene(f"pair{k + 1:04d}", views, split="test", root=root))
    return scenes


register_format(
    "scannet1500",
    lambda path: path.suffix == ".txt" if path.is_file() else is_scannet1500(path),
    lambda path, split, skip_bad: load_scannet1500(path),
    order=80,
    looks_for="scannet_test_pairs_with_gt.txt",
    file_hint="ScanNet-1500 pairs file",
    benchmark=True,
)
