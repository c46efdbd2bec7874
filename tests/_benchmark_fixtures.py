"""Tiny copies of the paper's benchmarks written in their exact native formats (key names, array
orientation, column layout, units), with ground truth simple enough to check metrics by hand."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

NYU_TRAIN = (1, 3, 4, 6)  # 1-based, as splits.mat stores them
NYU_TEST = (2, 5)


def nyu_depth(i: int, h: int = 480, w: int = 640) -> np.ndarray:
    """A ramp from 1 m to ~3 m down the image, 5 m outside the Eigen crop (so the crop changes every
    metric), a few invalid (0) and a few over-range (12 m) pixels."""
    rows = np.arange(h, dtype=np.float32)[:, None]
    d = np.broadcast_to(1.0 + rows / h * 2.0 + 0.1 * i, (h, w)).copy()
    d[:45] = d[471:] = 5.0
    d[:, :41] = d[:, 601:] = 5.0
    d[100:110, 100:120] = 0.0
    d[200:205, 300:340] = 12.0
    return d.astype(np.float32)


def nyu_labels(i: int, h: int = 480, w: int = 640) -> np.ndarray:
    """Raw 894-class labels: left half 1 (-> class 3), right half 7 (-> 1), a void (0) band."""
    lab = np.ones((h, w), np.uint16)
    lab[:, w // 2 :] = 7
    lab[:20] = 0
    return lab


def nyu_image(i: int, h: int = 480, w: int = 640) -> np.ndarray:
    """(H, W, 3) uint8, different along x and y (so a transposed read is caught), textured."""
    rng = np.random.default_rng(i)
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    noise = rng.integers(0, 60, (h, w))
    return np.stack([x, y, noise + 100], -1).clip(0, 255).astype(np.uint8)


def write_nyu(root: Path, n: int = 6) -> Path:
    """nyu_depth_v2_labeled.mat (HDF5, MATLAB's column-major axes), splits.mat, classMapping40.mat."""
    import h5py
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w", userblock_size=512) as f:
        # MATLAB writes (H, W, 3, N) column-major, which HDF5 readers see as (N, 3, W, H).
        f["images"] = np.stack([nyu_image(i).transpose(2, 1, 0) for i in range(n)])
        f["depths"] = np.stack([nyu_depth(i).T for i in range(n)])
        f["labels"] = np.stack([nyu_labels(i).T for i in range(n)])
        refs = f.create_group("#refs#")
        names = [f"name{k}" for k in range(1, 895)]
        ref_list = []
        for k, name in enumerate(names):
            refs[f"n{k}"] = np.array([[ord(c)] for c in name], dtype=np.uint16)
            ref_list.append(refs[f"n{k}"].ref)
        f.create_dataset("names", data=np.array([ref_list], dtype=h5py.ref_dtype))
        f["rawDepths"] = np.stack([nyu_raw_depth(i).T for i in range(n)])
    savemat(
        root / "splits.mat",
        {"trainNdxs": np.array(NYU_TRAIN, float)[:, None], "testNdxs": np.array(NYU_TEST, float)[:, None]},
    )
    mapping = np.zeros((1, 894))
    mapping[0, 0] = 3  # raw 1 -> class 3
    mapping[0, 6] = 1  # raw 7 -> class 1
    names40 = np.empty((1, 40), dtype=object)
    for k in range(40):
        names40[0, k] = f"c40_{k + 1}"
    savemat(root / "classMapping40.mat", {"mapClass": mapping, "className": names40})
    labels13 = np.zeros((1, 40))
    labels13[0, 2], labels13[0, 0] = NYU_40_TO_13[3], NYU_40_TO_13[1]
    names13 = np.empty((1, 13), dtype=object)
    for k in range(13):
        names13[0, k] = f"c13_{k + 1}"
    savemat(root / "class13Mapping.mat", {"classMapping13": {"labels13": labels13, "className": names13}})
    with gzip.open(root / "all_normals.pklz", "wb") as fh:  # FAIR's file: a gzipped pickle of (N, H, W, 3)
        pickle.dump({"all_normals": np.stack([nyu_normals(i) for i in range(n)])}, fh, protocol=2)
    return root


NYU_40_TO_13 = {3: 5, 1: 12}  # the two 40-classes the fixture uses -> 13-classes (1-based)


def nyu_normals(i: int, h: int = 480, w: int = 640) -> np.ndarray:
    """Ladicky-style normals: a different unit vector per quadrant, 0 (unknown) in a corner block."""
    n = np.zeros((h, w, 3), np.float32)
    dirs = [(0, 0, -1), (0.6, 0, -0.8), (0, -0.6, -0.8), (0.48, 0.6, -0.64)]
    for q, (r, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        n[r * h // 2 : (r + 1) * h // 2, c * w // 2 : (c + 1) * w // 2] = dirs[(q + i) % 4]
    n[:30, :30] = 0
    return n


def nyu_raw_depth(i: int, h: int = 480, w: int = 640) -> np.ndarray:
    """The sensor's depth: the filled depth with holes (0) and a far patch (11 m), where Probe3D scores no normal."""
    d = nyu_depth(i, h, w)
    d[300:340, 400:480] = 0.0
    d[50:60, 50:90] = 11.0
    return d


# ------------------------------------------------------------------------------------------ ScanNet-1500

SCANNET_K = np.array([[1165.7, 0, 649.0], [0, 1165.7, 484.8], [0, 0, 1.0]])  # colour camera at 1296x968
PLANE_Z = 2.0
SHIFT_M = 0.10  # camera 1 of the translated pair sits 10 cm to the right


def _texture(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """A rich, non-repeating texture of plane coordinates (metres)."""
    rng = np.random.default_rng(7)
    out = np.zeros(X.shape + (3,))
    for c in range(3):
        for _ in range(12):
            kx, ky, ph = rng.uniform(5, 60), rng.uniform(5, 60), rng.uniform(0, 6.3)
            out[..., c] += np.sin(kx * X + ky * Y + ph)
    return (127 + 40 * out / 3).clip(0, 255).astype(np.uint8)


def _render(tx: float, w: int = 1296, h: int = 968) -> np.ndarray:
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    K = SCANNET_K
    X = ((u - 0.5) - K[0, 2]) / K[0, 0] * PLANE_Z + tx
    Y = ((v - 0.5) - K[1, 2]) / K[1, 1] * PLANE_Z
    return _texture(X, Y)


def write_scannet1500(root: Path) -> Path:
    """Two pairs: a frame with itself (T = I), and the plane seen from 10 cm to the right (T = -t)."""
    scene = root / "scans_test" / "scene0707_00"
    for sub in ("color", "depth"):
        (scene / sub).mkdir(parents=True, exist_ok=True)
    for frame, tx in ((15, 0.0), (30, SHIFT_M)):
        Image.fromarray(_render(tx)).save(scene / "color" / f"{frame}.jpg", quality=98)
        Image.fromarray(np.full((480, 640), int(PLANE_Z * 1000), np.uint16)).save(scene / "depth" / f"{frame}.png")
    k = " ".join(f"{x:g}" for x in SCANNET_K.ravel())
    same = " ".join(f"{x:g}" for x in np.eye(4).ravel())
    T = np.eye(4)
    T[0, 3] = -SHIFT_M  # a point at x in camera 0 is at x - 0.1 in camera 1
    moved = " ".join(f"{x:g}" for x in T.ravel())
    lines = [
        f"scans_test/scene0707_00/color/15.jpg scans_test/scene0707_00/color/15.jpg 0 0 {k} {k} {same}",
        f"scans_test/scene0707_00/color/15.jpg scans_test/scene0707_00/color/30.jpg 0 0 {k} {k} {moved}",
    ]
    (root / "scannet_test_pairs_with_gt.txt").write_text("\n".join(lines) + "\n")
    return root


LOFTR_K = np.array([[577.6, 0, 318.9], [0, 577.6, 238.9], [0, 0, 1.0]])  # a colour camera at 640x480


def write_scannet1500_loftr(root: Path) -> Path:
    """The same two pairs in LoFTR's scannet_test_1500 layout (test.npz, intrinsics.npz, pose files)."""
    scene = root / "scene0707_00"
    for sub in ("color", "depth", "pose"):
        (scene / sub).mkdir(parents=True, exist_ok=True)
    for frame, tx in ((15, 0.0), (30, SHIFT_M)):
        u, v = np.meshgrid(np.arange(640) + 0.5, np.arange(480) + 0.5)
        X = ((u - 0.5) - LOFTR_K[0, 2]) / LOFTR_K[0, 0] * PLANE_Z + tx
        Y = ((v - 0.5) - LOFTR_K[1, 2]) / LOFTR_K[1, 1] * PLANE_Z
        Image.fromarray(_texture(X, Y)).save(scene / "color" / f"{frame}.jpg", quality=98)
        Image.fromarray(np.full((480, 640), int(PLANE_Z * 1000), np.uint16)).save(scene / "depth" / f"{frame}.png")
        pose = np.eye(4)
        pose[0, 3] = tx  # camera-to-world: camera 30 sits 10 cm to the right of camera 15
        np.savetxt(scene / "pose" / f"{frame}.txt", pose)
    np.savez(root / "test.npz", name=np.array([[707, 0, 15, 15], [707, 0, 15, 30]]))
    np.savez(root / "intrinsics.npz", scene0707_00=LOFTR_K)
    return root


# ------------------------------------------------------------------------------------------------ ADE20K


def ade_label(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    lab = np.full((h, w), 2, np.uint8)  # wall-ish class 2 -> 1
    lab[h // 2 :] = 4  # floor-ish class 4 -> 3
    lab[:, : 8 + i] = 0  # "other": ignored
    return lab


def write_ade20k(parent: Path, n_train: int = 4, n_val: int = 2) -> Path:
    root = parent / "ADEChallengeData2016"
    for folder, n, prefix in (("training", n_train, "ADE_train"), ("validation", n_val, "ADE_val")):
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            lab = ade_label(i)
            rgb = np.zeros(lab.shape + (3,), np.uint8)
            rgb[lab == 2] = (200, 60, 60)
            rgb[lab == 4] = (60, 200, 60)
            rgb[lab == 0] = (60, 60, 200)
            rgb = (rgb + np.random.default_rng(i).integers(0, 20, rgb.shape)).astype(np.uint8)
            Image.fromarray(rgb).save(root / "images" / folder / f"{prefix}_{i + 1:08d}.jpg", quality=95)
            Image.fromarray(lab).save(root / "annotations" / folder / f"{prefix}_{i + 1:08d}.png")
    (root / "objectInfo150.csv").write_text(
        "Idx,Ratio,Train,Val,Name\n1,0.15,1,1,wall\n2,0.1,1,1,building;edifice\n"
        "3,0.09,1,1,sky\n4,0.08,1,1,floor;flooring\n"
    )
    return parent


# ------------------------------------------------------------------------------------------------- KITTI

KITTI_SIZE = (375, 1242)  # (H, W) of a 2011_09_26 frame


def kitti_depth(i: int) -> np.ndarray:
    """Sparse projected LiDAR: every 4th row, 8 m + a ramp, 0 elsewhere; 90 m (over the cap) in a band."""
    h, w = KITTI_SIZE
    d = np.zeros((h, w), np.float32)
    d[::4] = 8.0 + np.arange(w, dtype=np.float32)[None, :] / w * 20.0 + i
    d[::4, 600:640] = 90.0
    return d


def write_kitti(root: Path, n_train: int = 3, n_test: int = 2) -> Path:
    lines = {"train": [], "test": []}
    drive = "2011_09_26_drive_0002_sync"
    img_dir = root / "input" / "2011_09_26" / drive / "image_02" / "data"
    gt_dir = root / "gt_depth" / drive / "proj_depth" / "groundtruth" / "image_02"
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    for k in range(n_train + n_test):
        sp = "train" if k < n_train else "test"
        name = f"{k + 5:010d}.png"
        rng = np.random.default_rng(k)
        rgb = rng.integers(0, 255, KITTI_SIZE + (3,), dtype=np.uint8)
        Image.fromarray(rgb).save(img_dir / name)
        Image.fromarray((kitti_depth(k) * 256).round().astype(np.uint16)).save(gt_dir / name)
        lines[sp].append(
            f"2011_09_26/{drive}/image_02/data/{name} {drive}/proj_depth/groundtruth/image_02/{name} 721.5377"
        )
    lines["test"].append(
        f"2011_09_26/{drive}/image_02/data/missing.png None 721.5377"
    )  # skipped, as the reference does
    (root / "kitti_eigen_train.txt").write_text("\n".join(lines["train"]) + "\n")
    (root / "kitti_eigen_test.txt").write_text("\n".join(lines["test"]) + "\n")
    return root


# --------------------------------------------------------------------------------- ScanNet++ probe set

SNPP_DEPTH_MM = (1500, 2500, 1800, 3000)  # constant per frame: the 584x876 resize keeps it exact


def write_scannetpp_probe(root: Path) -> Path:
    """FiT3D's probe layout: depth split files (3 train, 1 val) and a 2 + 1 image segmentation part."""
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, mm in enumerate(SNPP_DEPTH_MM):
        rgb = np.random.default_rng(k).integers(0, 255, (96, 144, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / "rgb" / f"{k}.jpg")
        Image.fromarray(np.full((96, 144), mm, np.uint16)).save(root / "depth" / f"{k}.png")
        lines.append(f"/rgb/{k}.jpg /depth/{k}.png")
    (root / "scannetpp_train.txt").write_text("\n".join(lines[:3]) + "\n")
    (root / "scannetpp_val.txt").write_text(lines[3] + "\n")
    for folder, n in (("training", 2), ("validation", 1)):
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            lab = np.full((48, 64), 5, np.uint8)
            lab[:, 32:] = 100
            lab[:4] = 0
            Image.fromarray(np.random.default_rng(10 + i).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
                root / "images" / folder / f"f{i}.jpg"
            )
            Image.fromarray(lab).save(root / "annotations" / folder / f"f{i}.png")
    return root


# ----------------------------------------------------------------------------------- ScanNet probe set


def scannet_depth(k: int, h: int = 480, w: int = 640) -> np.ndarray:
    """Millimetres: a ramp inside the Eigen crop (rows 45:471, cols 41:601), 9 m outside it, a few holes."""
    d = np.full((h, w), 9000, np.uint16)
    d[45:471, 41:601] = (1000 + 4 * np.arange(45, 471)[:, None] + 300 * k).astype(np.uint16)
    d[200:210, 300:320] = 0
    return d


def scannet_label(i: int, h: int = 60, w: int = 80) -> np.ndarray:
    lab = np.full((h, w), 3, np.uint8)  # class 3 -> index 2
    lab[:, w // 2 :] = 40  # class 40 -> index 39
    lab[:5] = 0  # ignored
    lab[-3:] = 255  # mmsegmentation's ignore value, ignored too
    return lab


def write_scannet_probe(root: Path) -> Path:
    """FiT3D's scannet_probe: depth lists (3 train, 2 test frames, 640x480) and {train,test}/color|label."""
    for sub in ("scene0000_00/color", "scene0000_00/depth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lines = []
    for k in range(5):
        rgb = np.random.default_rng(20 + k).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / "scene0000_00" / "color" / f"{k}.jpg")
        Image.fromarray(scannet_depth(k)).save(root / "scene0000_00" / "depth" / f"{k}.png")
        lines.append(f"/scene0000_00/color/{k}.jpg /scene0000_00/depth/{k}.png")
    (root / "train_index.txt").write_text("\n".join(lines[:3] + ["/scene0000_00/color/9.jpg None"]) + "\n")
    (root / "test_index.txt").write_text("\n".join(lines[3:]) + "\n")
    for split, n in (("train", 2), ("test", 2)):
        (root / split / "color").mkdir(parents=True, exist_ok=True)
        (root / split / "label").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.random.default_rng(40 + i).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(
                root / split / "color" / f"{i}.jpg"
            )
            Image.fromarray(scannet_label(i)).save(root / split / "label" / f"{i}.png")
    return root
