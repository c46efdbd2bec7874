"""The probe sets of FiT3D's evaluation data (``eval_data/`` of the FiT3D and Splat-and-Distill releases),
where the paper's ScanNet and ScanNet++ depth and segmentation numbers come from::

    scannetpp_probe/                                      ScanNet++ (format ``scannetpp_probe``)
        scannetpp_train.txt, scannetpp_val.txt            depth: '<image> <depth PNG or None>' per line
        images/{training,validation}/*                    segmentation images ...
        annotations/{training,validation}/*.png           ... and labels: 0 = ignore, 1..100
        objectInfo100.csv                                 optional class names (Idx, ..., Name)
    scannet_probe/                                        ScanNet (format ``scannet_probe``)
        train_index.txt, test_index.txt                   depth, as above
        {train,test}/color/*.jpg, {train,test}/label/*.png   segmentation: 0 = ignore, 1..40

Paths in the lists are relative to the root (a leading '/' is ignored), depth PNGs are 16-bit
millimetres, ``None`` depth lines are skipped, as the reference's loaders do. Either half (depth or
segmentation) may be absent. Train lists and folders form the train split, val/test ones the test split.
ScanNet++ depth frames (image and depth) are resized to 584x876, the size the reference scores them at
(it resizes its ground truth there, bilinearly); ScanNet frames keep their stored size. The reference's
own NYUv2 and KITTI folders are read by :mod:`.nyuv2` / :mod:`.kitti`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from splatdistill.data.formats import register_format
from splatdistill.data.io import depth_list_lines, image_header, read_depth, read_rgb
from splatdistill.data.scene import Scene, ViewData, ViewRecord
from splatdistill.errors import UserError

from .ade20k import label_folder_scene, nominal_K


@dataclass(frozen=True)
class ProbeLayout:
    """One probe set: its depth lists, its segmentation folders, its classes and the depth frame size."""

    title: str
    depth_lists: tuple[tuple[str, str], ...]  # (list file, split)
    label_dirs: tuple[tuple[str, str, str], ...]  # (image folder, label folder, split)
    num_classes: int
    depth_size: tuple[int, int] | None = None  # (H, W) the depth frames are resized to, None = as stored
    depth_scale: float = 1000.0  # PNG units per metre


LAYOUTS: dict[str, ProbeLayout] = {
    "scannetpp_probe": ProbeLayout(
        "ScanNet++",
        (("scannetpp_train.txt", "train"), ("scannetpp_val.txt", "test")),
        (("images/training", "annotations/training", "train"), ("images/validation", "annotations/validation", "test")),
        100,
        (584, 876),
    ),
    "scannet_probe": ProbeLayout(
        "ScanNet",
        (("train_index.txt", "train"), ("test_index.txt", "test")),
        (("train/color", "train/label", "train"), ("test/color", "test/label", "test")),
        40,
    ),
}


def detect(path: Path) -> str | None:
    """The probe layout at ``path``, by its depth lists (or ScanNet's label folders), or None. ScanNet++'s
    label folders alone are ADE20K's layout: such a folder is read as ScanNet++ only when named
    (``--data scannetpp=PATH`` or ``format=scannetpp_probe``)."""
    path = Path(path)
    if not path.is_dir():
        return None
    for name, layout in LAYOUTS.items():
        if any((path / f).is_file() for f, _ in layout.depth_lists):
            return name
    if all((path / lab).is_dir() for _, lab, _ in LAYOUTS["scannet_probe"].label_dirs):
        return "scannet_probe"
    return None


def read_depth_list(list_file: Path, root: Path) -> list[tuple[Path, Path]]:
    """(image, depth) per line of a depth list, lines with depth ``None`` skipped, each bad line named."""
    out = []
    for n, parts in depth_list_lines(list_file):
        image, depth = root / parts[0].lstrip("/\\"), root / parts[1].lstrip("/\\")
        for p in (image, depth):
            if not p.is_file():
                raise UserError(f"line {n}: {p.relative_to(root)} not found", list_file)
        out.append((image, depth))
    return sorted(out)  # the reference sorts by file name ("make sure the same order")


def _resized(arr: np.ndarray, size: tuple[int, int] | None, resample) -> np.ndarray:
    if size is None or arr.shape[:2] == size:
        return arr
    return np.asarray(Image.fromarray(arr).resize((size[1], size[0]), resample), dtype=arr.dtype)


def _depth_loader(image: Path, depth: Path, layout: ProbeLayout, name: str):
    def load() -> ViewData:
        rgb = (read_rgb(image) * 255).round().astype(np.uint8)
        d = read_depth(depth, scale=layout.depth_scale)
        rgb = _resized(rgb, layout.depth_size, Image.BILINEAR).astype(np.float32) / 255.0
        d = _resized(d, layout.depth_size, Image.BILINEAR)
        if d.shape != rgb.shape[:2]:
            raise UserError(f"depth is {d.shape[1]}x{d.shape[0]}, its image {rgb.shape[1]}x{rgb.shape[0]}", depth)
        return ViewData(rgb, nominal_K(rgb.shape[1], rgb.shape[0]), np.eye(4), d.astype(np.float32), name=name)

    return load


def load_probe_set(path: str | Path, layout_name: str) -> list[Scene]:
    """The depth frames and the labelled images of one probe set, as train and test scenes."""
    root = Path(path)
    layout = LAYOUTS[layout_name]
    prefix = layout_name.replace("_probe", "")
    scenes: list[Scene] = []
    for fname, split in layout.depth_lists:
        f = root / fname
        if not f.is_file():
            continue
        views = []
        for image, depth in read_depth_list(f, root):
            w, h, _ = image_header(image)
            if layout.depth_size is not None:
                h, w = layout.depth_size
            name = str(image.relative_to(root).with_suffix(""))
            views.append(ViewRecord(name, nominal_K(w, h), np.eye(4), w, h, _depth_loader(image, depth, layout, name)))
        if views:
            scenes.append(Scene(f"{prefix}-depth-{split}", views, split=split, root=root))
    for img_dir, lab_dir, split in layout.label_dirs:
        scene = label_folder_scene(root, img_dir, lab_dir, split, layout.num_classes, f"{prefix}-seg-{split}")
        if scene is not None:
            scenes.append(scene)
    if not scenes:
        lists = " / ".join(f for f, _ in layout.depth_lists)
        dirs = " + ".join(d for d, _, _ in layout.label_dirs[:1]) + " + " + layout.label_dirs[0][1]
        raise UserError(f"no {layout.title} probe set here ({lists}, or {dirs}; see docs/evaluation.md)", root)
    return scenes


register_format(
    "scannetpp_probe",
    lambda path: detect(path) == "scannetpp_probe",
    lambda path, split, skip_bad: load_probe_set(path, "scannetpp_probe"),
    order=90,
    looks_for="FiT3D's scannetpp_probe / scannet_probe",
    benchmark=True,
)
register_format(
    "scannet_probe",
    lambda path: detect(path) == "scannet_probe",
    lambda path, split, skip_bad: load_probe_set(path, "scannet_probe"),
    order=91,
    benchmark=True,
)
