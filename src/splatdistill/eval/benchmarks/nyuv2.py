"""NYU Depth v2, the labelled set, read from the files its authors publish::

    ROOT/nyu_depth_v2_labeled.mat   MATLAB v7.3 (HDF5): images (N, 3, W, H) uint8, depths (N, W, H)
                                    float32 metres, labels (N, W, H) uint16 (894 classes, 0 = unlabelled)
    ROOT/splits.mat                 trainNdxs (795, 1), testNdxs (654, 1), 1-based: the official split
    ROOT/classMapping40.mat         mapClass (1, 894) -> 1..40, className (1, 40)   for classes=40
    ROOT/class13Mapping.mat         classMapping13.labels13 (40 -> 1..13) + names    for classes=13

    ROOT/all_normals.pklz           optional: Ladicky et al.'s surface normals of the 1449 frames, as FAIR's
                                    self-supervision benchmark ships them (nyuv2_surfacenormal_metadata.zip;
                                    also read from ROOT/surfacenormal_metadata/): a gzipped pickle holding
                                    ``all_normals`` (1449, 480, 640, 3)

MATLAB stores arrays column-major, so h5py sees every image transposed: (3, W, H) is read as (H, W, 3)
by reversing the axes. ``ROOT`` may also be the ``.mat`` file itself (the other files beside it).
The split becomes two scenes, ``nyu-train`` and ``nyu-test``; poses are identity (the labelled frames are
single views of 464 different scenes, used here for the probes only). Normals: Ladicky's when
``all_normals.pklz`` is there (the ground truth Probe3D and the paper evaluate on; valid where the raw
sensor depth is in (0, 10] m, as Probe3D masks them), else computed from the depth (central differences
of the back-projected points), which is not comparable with the paper (:func:`normals_source` says which).
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from splatdistill.data.checks.geometry import normals_from_depth
from splatdistill.data.formats import register_format
from splatdistill.data.scene import Scene, ViewData, ViewRecord
from splatdistill.errors import UserError, require_extra

LABELLED = "nyu_depth_v2_labeled.mat"
NORMALS = "all_normals.pklz"
NORMALS_MAX_DEPTH = 10.0  # Probe3D zeroes raw depth above 10 m and scores normals where raw depth > 0
SPLITS = "splits.mat"
MAPPING_40 = "classMapping40.mat"
MAPPING_13 = "class13Mapping.mat"
#: Kinect colour camera of the NYU toolbox (camera_params.m), shifted by +0.5 to pixel-centre coordinates.
K_NYU = np.array([[518.8579, 0, 325.5824 + 0.5], [0, 519.4696, 253.7362 + 0.5], [0, 0, 1.0]])
REQUIRED_KEYS = ("images", "depths", "labels")


def find_labelled(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".mat" and path.name != SPLITS:
        return path
    hit = path / LABELLED
    return hit if path.is_dir() and hit.is_file() else None


def is_nyuv2(path: Path) -> bool:
    return find_labelled(Path(path)) is not None


def _loadmat(path: Path, what: str) -> dict:
    if not path.is_file():
        raise UserError(f"{path.name} not found beside {LABELLED} ({what})", path.parent)
    try:
        return loadmat(str(path))
    except Exception as exc:
        raise UserError(f"cannot read as a MATLAB file ({type(exc).__name__}: {str(exc)[:100]})", path) from None


def official_split(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """0-based train and test indices of splits.mat (795 and 654 in the official file)."""
    m = _loadmat(root / SPLITS, "the official split: trainNdxs / testNdxs")
    missing = [k for k in ("trainNdxs", "testNdxs") if k not in m]
    if missing:
        raise UserError(f"has no {missing[0]} (expected trainNdxs and testNdxs)", root / SPLITS)
    return (
        np.asarray(m["trainNdxs"]).reshape(-1).astype(np.int64) - 1,
        np.asarray(m["testNdxs"]).reshape(-1).astype(np.int64) - 1,
    )


def find_normals(root: Path) -> Path | None:
    """Ladicky's normals beside the .mat (or in the ``surfacenormal_metadata`` folder of their zip)."""
    for f in (root / NORMALS, root / "surfacenormal_metadata" / NORMALS):
        if f.is_file():
            return f
    return None


def normals_source(path: str | Path) -> str:
    """Which normals :func:`load_nyuv2` gives for ``path``: Ladicky's file or normals from depth."""
    mat = find_labelled(Path(path))
    hit = None if mat is None else find_normals(mat.parent)
    return (
        f"Ladicky et al.'s ({hit.name})" if hit else f"computed from depth (no {NORMALS}: not the paper's ground truth)"
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only: a pickle can run code, this one cannot."""

    # what NumPy's arrays pickle to under protocols 2-5 (_codecs.encode is how protocol 2 stores bytes)
    ALLOWED = {
        (m, name) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")
    }
    ALLOWED |= {
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


_NORMALS_CACHE: dict[Path, np.ndarray] = {}


def read_normals(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """``all_normals`` as float16 (N, H, W, 3), read once per process (the file is one pickle of ~5 GB
    of float32; float16 halves what stays in memory)."""
    key = path.resolve()
    if key not in _NORMALS_CACHE:
        try:
            with gzip.open(path, "rb") as fh:
                data = _ArrayUnpickler(fh, encoding="latin1").load()
        except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
            raise UserError(
                f"cannot read as a gzipped pickle of arrays ({type(exc).__name__}: {str(exc)[:100]})", path
            ) from None
        arr = data.get("all_normals") if isinstance(data, dict) else None
        if not isinstance(arr, np.ndarray):
            raise UserError("has no 'all_normals' array (expected FAIR's NYUv2 surface-normal metadata)", path)
        n, h, w = shape
        if arr.ndim != 4 or arr.shape[0] < n or arr.shape[1:] != (h, w, 3):
            raise UserError(f"all_normals is {arr.shape}, expected ({n}, {h}, {w}, 3) for the labelled set", path)
        _NORMALS_CACHE[key] = arr.astype(np.float16)
    return _NORMALS_CACHE[key]


def _names(cell) -> list[str]:
    return [str(np.asarray(c).reshape(-1)[0]) for c in np.asarray(cell).reshape(-1)]


def class_mapping(root: Path, classes: int, raw_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """(lookup from the 894 raw labels to 0..K-1 with -1 = ignore, K class names) for 894, 40 or 13 classes."""
    if classes == 894:
        return np.arange(-1, len(raw_names), dtype=np.int64), raw_names
    if classes not in (40, 13):
        raise UserError(f"NYUv2 classes must be 13, 40 or 894, got {classes}")
    m40 = _loadmat(root / MAPPING_40, "the 894 -> 40 class mapping, key mapClass")
    if "mapClass" not in m40:
        raise UserError("has no mapClass (the 894 -> 40 mapping)", root / MAPPING_40)
    to40 = np.concatenate([[0], np.asarray(m40["mapClass"]).reshape(-1)]).astype(np.int64)  # raw 0 -> void
    names = _names(m40["className"]) if "className" in m40 else [f"class{i}" for i in range(1, 41)]
    lookup = to40
    if classes == 13:
        m13 = _loadmat(root / MAPPING_13, "the 40 -> 13 class mapping, struct classMapping13")
        try:
            struct = m13["classMapping13"][0, 0]
            to13 = np.concatenate([[0], np.asarray(struct["labels13"]).reshape(-1)]).astype(np.int64)
            names = _names(struct[struct.dtype.names[1]])
        except (KeyError, IndexError, ValueError, TypeError):
            raise UserError("has no classMapping13.labels13 (the 40 -> 13 mapping)", root / MAPPING_13) from None
        lookup = to13[to40]
    return lookup - 1, names  # 1-based classes -> 0-based, void -> -1


def _raw_names(f) -> list[str]:
    """The 894 class names (a MATLAB cell of char arrays); generic names when the file has none."""
    try:
        return [
            "".join(chr(int(c)) for c in np.asarray(f[ref]).reshape(-1)) for ref in np.asarray(f["names"]).reshape(-1)
        ]
    except Exception:  # no 'names' cell, or one written differently: the labels still index 1..894
        return [f"label{k}" for k in range(1, 895)]


def load_nyuv2(path: str | Path, classes: int = 40, split: str | None = None) -> list[Scene]:
    """The labelled set as two scenes (``nyu-train``, ``nyu-test``) of the official split."""
    h5py = require_extra("h5py", "paper-eval", "the NYUv2 labelled set (MATLAB v7.3)")
    path = Path(path)
    mat = find_labelled(path)
    if mat is None:
        raise UserError(f"no {LABELLED} here (the NYUv2 labelled set; see docs/evaluation.md for the layout)", path)
    root = mat.parent
    try:
        with h5py.File(mat, "r") as f:
            missing = [k for k in REQUIRED_KEYS if k not in f]
            if missing:
                raise UserError(
                    f"has no '{missing[0]}' dataset: not the NYUv2 labelled set (expected {', '.join(REQUIRED_KEYS)})",
                    mat,
                )
            shape = f["images"].shape
            if len(shape) != 4 or shape[1] != 3 or f["depths"].shape != (shape[0], shape[2], shape[3]):
                raise UserError(f"images {shape} / depths {f['depths'].shape} are not (N, 3, W, H) / (N, W, H)", mat)
            raw_names = _raw_names(f)
    except OSError as exc:
        raise UserError(f"cannot read as HDF5 (MATLAB v7.3) ({str(exc)[:100]})", mat) from None
    n, _, width, height = shape
    train_idx, test_idx = official_split(root)
    bad = [i for i in np.concatenate([train_idx, test_idx]) if not 0 <= i < n]
    if bad:
        raise UserError(f"index {bad[0] + 1} is outside the {n} images of {LABELLED}", root / SPLITS)
    lookup, names = class_mapping(root, classes, raw_names)

    normals_file = find_normals(root)

    def loader(i: int):
        def load() -> ViewData:
            with h5py.File(mat, "r") as f:
                image = np.transpose(np.asarray(f["images"][i]), (2, 1, 0)).astype(np.float32) / 255.0
                depth = np.asarray(f["depths"][i]).T.astype(np.float32)
                raw = np.asarray(f["labels"][i]).T.astype(np.int64)
                sensor = np.asarray(f["rawDepths"][i]).T.astype(np.float32) if "rawDepths" in f else depth
            depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
            sem = np.where((raw >= 0) & (raw < lookup.size), lookup[np.clip(raw, 0, lookup.size - 1)], -1)
            if normals_file is not None:
                normals = read_normals(normals_file, (n, height, width))[i].astype(np.float32)
                measured = np.isfinite(sensor) & (sensor > 0) & (sensor <= NORMALS_MAX_DEPTH)
                normals = np.where((measured & (np.linalg.norm(normals, axis=-1) > 0.5))[..., None], normals, 0)
            else:
                normals = normals_from_depth(depth, K_NYU)
            return ViewData(
                image,
                K_NYU.copy(),
                np.eye(4),
                depth,
                normals.astype(np.float32),
                None,
                sem.astype(np.int32),
                name=f"{i + 1:04d}",
            )

        return load

    scenes = []
    for name, sp, idx in (("nyu-train", "train", train_idx), ("nyu-test", "test", test_idx)):
        if split is not None and sp != split:
            continue
        views = [ViewRecord(f"{i + 1:04d}", K_NYU.copy(), np.eye(4), width, height, loader(int(i))) for i in idx]
        scenes.append(Scene(name, views, split=sp, class_names=list(names), root=root))
    return scenes


register_format(
    "nyuv2",
    lambda path: path.suffix == ".mat" if path.is_file() else is_nyuv2(path),
    lambda path, split, skip_bad: load_nyuv2(path),
    order=70,
    looks_for="nyu_depth_v2_labeled.mat",
    file_hint="NYUv2 .mat",
    benchmark=True,
)
