"""ScanNet++ as FiT3D prepares it for its probes (``eval_data/scannetpp_probe`` in the reference)::

    ROOT/scannetpp_train.txt, ROOT/scannetpp_val.txt    depth: one '<image> <depth PNG or None>' per line,
                                                        paths relative to ROOT, depth in millimetres
    ROOT/images/{training,validation}/*                 segmentation: images ...
    ROOT/annotations/{training,validation}/*.png        ... and labels, 0 = ignore, 1..100 classes
    ROOT/objectInfo100.csv                              optional class names (Idx, ..., Name)

Either half may be absent. The depth frames are resized to 584x876 (the reference resizes its ground
truth to that size, bilinearly, before scoring). ``train`` lines / ``training`` form the train split,
``val`` / ``validation`` the test split. The trainer's own ScanNet++ layout (``scenes/<id>/...``) has
no depth or semantic labels; this is the probe set the paper's ScanNet++ numbers come from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from splatdistill.errors import UserError

from .ade20k import load_label_folders, nominal_K
from .io import read_depth, read_rgb
from .scene import Scene, ViewData, ViewRecord

SPLIT_FILES = (("scannetpp_train.txt", "train"), ("scannetpp_val.txt", "test"))
NUM_CLASSES = 100
DEPTH_SIZE = (584, 876)  # (H, W) the reference scores depth at


def is_scannetpp_probe(path: Path) -> bool:
    return Path(path).is_dir() and any((Path(path) / f).is_file() for f, _ in SPLIT_FILES)


def _depth_loader(image: Path, depth: Path, K: np.ndarray, name: str):
    def load() -> ViewData:
        h, w = DEPTH_SIZE
        rgb = np.asarray(Image.fromarray((read_rgb(image) * 255).round().astype(np.uint8)).resize((w, h), Image.BILINEAR),
                         dtype=np.float32) / 255.0  # fmt: skip
        d = np.asarray(Image.fromarray(read_depth(depth, scale=1000.0)).resize((w, h), Image.BILINEAR), dtype=np.float32)
        return ViewData(rgb, K, np.eye(4), d, name=name)
    return load


def load_scannetpp_probe(path: str | Path) -> list[Scene]:
    root = Path(path)
    scenes: list[Scene] = []
    for fname, split in SPLIT_FILES:
        f = root / fname
        if not f.is_file():
            continue
        views = []
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise UserError(f"line {n}: expected '<image> <depth or None>'", f)
            if parts[1] == "None":
                continue
            image, depth = root / parts[0].lstrip("/"), root / parts[1].lstrip("/")
            for p in (image, depth):
                if not p.is_file():
                    raise UserError(f"line {n}: {p.relative_to(root)} not found", f)
            K = nominal_K(DEPTH_SIZE[1], DEPTH_SIZE[0])
            views.append(ViewRecord(Path(parts[0]).stem, K, np.eye(4), DEPTH_SIZE[1], DEPTH_SIZE[0],
                                    _depth_loader(image, depth, K, Path(parts[0]).stem)))  # fmt: skip
        if views:
            scenes.append(Scene(f"scannetpp-depth-{split}", views, split=split, root=root))
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        scenes += load_label_folders(root, NUM_CLASSES, "scannetpp-seg")
    if not scenes:
        raise UserError("no ScanNet++ probe set here (scannetpp_train.txt / scannetpp_val.txt, or images/ + "
                        "annotations/; see docs/evaluation.md)", root)  # fmt: skip
    return scenes
