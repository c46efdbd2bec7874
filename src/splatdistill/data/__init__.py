"""Posed multi-view scenes: the on-disk format, the embedded ``rooms`` dataset, loaders for user data.

``load_dataset(path)`` reads any supported layout (detected from the files present):

- ``splatdistill``: folders with ``scene.json`` (the format ``rooms`` is built in; docs/data-format.md)
- ``scannetpp``: ScanNet++ as preprocessed by FiT3D (``scenes/<id>/images``, ``transforms_train.json``,
  optional ``instance_segmentation/``)
- ``nerfstudio``: a folder with ``transforms.json``
- ``colmap``: a COLMAP sparse model (``sparse/0`` or a folder with ``cameras.bin``/``.txt``) plus images
  (what ``splatdistill data from-images`` writes)
- ``tum``: a TUM RGB-D sequence (``rgb.txt``, ``depth.txt``, ``groundtruth.txt``)
- ``7scenes``: Microsoft 7-Scenes (``seq-NN/frame-NNNNNN.color.png/.depth.png/.pose.txt``)

and the paper's benchmarks in their published layouts (for ``splatdistill eval``; docs/evaluation.md):

- ``nyuv2``: the NYU Depth v2 labelled set (``nyu_depth_v2_labeled.mat`` + ``splits.mat``)
- ``scannet1500``: the ScanNet-1500 test pairs (``scannet_test_pairs_with_gt.txt`` + ``scans_test/``)
- ``ade20k``: ``ADEChallengeData2016`` (150 classes)
- ``kitti``: KITTI depth on the Eigen split (split files + raw images + projected ground truth)
- ``scannetpp_probe``, ``scannet_probe``: FiT3D's ScanNet++ / ScanNet probe sets (depth lists, label folders)
"""

from __future__ import annotations

from pathlib import Path

from splatdistill.errors import UserError

from . import (
    ade20k,
    colmap,
    fit3d_probes,
    kitti,
    nyuv2,
    scannet1500,
    scannetpp,
    sevenscenes,
    tum,
)
from .colmap import load_colmap
from .native import load_native
from .nerfstudio import load_nerfstudio
from .rgbd import sequence_scene
from .rooms.build import ensure_rooms as _ensure
from .scannetpp import load_scannetpp
from .scene import Scene, ViewData, ViewRecord

FORMATS = ("auto", "splatdistill", "scannetpp", "nerfstudio", "colmap", "tum", "7scenes", "nyuv2", "scannet1500",
           "ade20k", "kitti", *fit3d_probes.LAYOUTS)
#: the name of the embedded dataset, accepted wherever a dataset path is
ROOMS = "rooms"

__all__ = ["FORMATS", "ROOMS", "Scene", "ViewData", "ViewRecord", "detect_format", "ensure_rooms", "load_dataset",
           "load_splits", "resolve_root"]


def resolve_root(data: str | Path, progress: bool = False) -> Path:
    """The folder behind a dataset argument: ``"rooms"`` is the embedded dataset (built on first use)."""
    if str(data) == ROOMS:
        return ensure_rooms(progress=progress)
    return Path(data).expanduser()


def detect_format(path: Path) -> str:
    """Name of the layout found at ``path`` (raises a UserError listing what was looked for)."""
    path = Path(path)
    if not path.exists():
        raise UserError("no such file or directory", path)
    if path.is_file():
        if path.name == "scene.json":
            return "splatdistill"
        if path.suffix == ".json":
            return "nerfstudio"
        if path.suffix == ".mat":
            return "nyuv2"
        if path.suffix == ".txt":
            return "scannet1500"
        raise UserError("expected a dataset folder (or a scene.json / transforms.json / NYUv2 .mat / ScanNet-1500 "
                        "pairs file)", path)
    if (path / "scene.json").is_file() or (path / "dataset.json").is_file() or any(path.glob("*/scene.json")):
        return "splatdistill"
    if scannetpp.is_scannetpp(path):
        return "scannetpp"
    if (path / "transforms.json").is_file():
        return "nerfstudio"
    if colmap.find_model_dir(path) is not None:
        return "colmap"
    if tum.is_tum(path):
        return "tum"
    if sevenscenes.is_sevenscenes(path):
        return "7scenes"
    for name, module in (("nyuv2", nyuv2), ("scannet1500", scannet1500)):
        if getattr(module, f"is_{name}")(path):
            return name
    probe_set = fit3d_probes.detect(path)
    if probe_set is not None:
        return probe_set
    for name, module in (("ade20k", ade20k), ("kitti", kitti)):
        if getattr(module, f"is_{name}")(path):
            return name
    hint = ""
    if any(p.suffix.lower() in (".jpg", ".jpeg", ".png") for p in path.iterdir() if p.is_file()):
        hint = f"; for a folder of photos run 'splatdistill data from-images {path} --out DATASET' first"
    raise UserError(
        "no dataset found: expected scene.json folders (splatdistill), scenes/*/transforms_train.json "
        "(ScanNet++/FiT3D), transforms.json (nerfstudio), a COLMAP sparse model, a TUM RGB-D sequence "
        "(rgb.txt, depth.txt), 7-Scenes sequences (seq-*/frame-*.color.png), or a benchmark: "
        f"nyu_depth_v2_labeled.mat, scannet_test_pairs_with_gt.txt, ADEChallengeData2016, KITTI Eigen split files, "
        f"FiT3D's scannetpp_probe / scannet_probe{hint}",
        path,
    )


def load_dataset(path: str | Path, split: str | None = None, skip_bad: bool = False, format: str = "auto") -> list[Scene]:
    """Load every scene at ``path`` (``"rooms"``: the embedded dataset, built on first use; optionally one split).

    A bad view (missing or broken file, non-orthonormal rotation, singular K, ...) raises a
    :class:`UserError` naming the file; with ``skip_bad=True`` it is left out with a
    :class:`~splatdistill.data.validate.DatasetWarning` instead. Pixels are read lazily by
    ``Scene.load_view`` (which also raises a UserError naming a file that fails to decode).
    """
    path = resolve_root(path)
    if format not in FORMATS:
        raise UserError(f"unknown dataset format '{format}' (choose from {', '.join(FORMATS)})")
    fmt = detect_format(path) if format == "auto" else format
    if split is not None and split not in ("train", "val", "test"):
        raise UserError(f"unknown split '{split}' (choose from train, val, test)")
    if fmt == "splatdistill":
        scenes = load_native(path.parent if path.is_file() else path, split=split, skip_bad=skip_bad)
    elif fmt == "scannetpp":
        scenes = load_scannetpp(path, split=split, skip_bad=skip_bad)
    elif fmt == "nerfstudio":
        scenes = [load_nerfstudio(path, skip_bad=skip_bad)]
    elif fmt == "tum":
        scenes = [sequence_scene(tum.load_tum_sequence(path))]
    elif fmt == "7scenes":
        scenes = sevenscenes.load_sevenscenes(path)
    elif fmt == "nyuv2":
        scenes = nyuv2.load_nyuv2(path)
    elif fmt == "scannet1500":
        scenes = scannet1500.load_scannet1500(path)
    elif fmt == "ade20k":
        scenes = ade20k.load_ade20k(path)
    elif fmt == "kitti":
        scenes = kitti.load_kitti(path)
    elif fmt in fit3d_probes.LAYOUTS:
        scenes = fit3d_probes.load_probe_set(path, fmt)
    else:
        scenes = [load_colmap(path, skip_bad=skip_bad)]
    if split is not None:
        scenes = [s for s in scenes if s.split == split]
    if not scenes:
        raise UserError(f"no scenes{f' in split {split}' if split else ''}", path)
    return scenes


def load_splits(data: str | Path, splits: tuple[str, ...] | list[str]) -> tuple[Path, dict[str, list[Scene]]]:
    """(root, scenes by split) of a dataset; a split it does not have is empty (one capture has no
    held-out scenes), but a dataset without train scenes is refused."""
    root = resolve_root(data)
    scenes = load_dataset(root)
    by_split = {s: [sc for sc in scenes if sc.split == s] for s in splits}
    if "train" in by_split and not by_split["train"]:
        raise UserError(f"no scenes in split train (the dataset's splits: {', '.join(sorted({sc.split for sc in scenes}))})", root)
    return root, by_split


def ensure_rooms(root: str | Path | None = None, **params) -> Path:
    """Path of the built ``rooms`` dataset (built on first use); see :func:`splatdistill.data.rooms.ensure_rooms`."""

    return _ensure(root, **params)
