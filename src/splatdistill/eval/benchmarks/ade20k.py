"""ADE20K scene parsing, the 150-class benchmark release (``ADEChallengeData2016``)::

    ROOT/images/training/ADE_train_00000001.jpg       20210 training images
    ROOT/images/validation/ADE_val_00000001.jpg       2000 validation images
    ROOT/annotations/training/ADE_train_00000001.png  8-bit labels: 0 = other (ignored), 1..150 classes
    ROOT/annotations/validation/ADE_val_00000001.png
    ROOT/objectInfo150.csv                            optional: Idx, Ratio, Train, Val, Name

``ROOT`` may also be the folder that holds ``ADEChallengeData2016``. Training images form the train
scene, validation images the test scene (the benchmark's test labels are not public). Labels are
shifted to 0..149 with 0 ("other") ignored, as mmsegmentation's ``reduce_zero_label`` does. There are
no cameras: each view gets an identity pose and a nominal pinhole K (segmentation needs neither).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from splatdistill.data.formats import register_format
from splatdistill.data.io import image_header, read_ids, read_rgb
from splatdistill.data.scene import Scene, ViewData, ViewRecord
from splatdistill.errors import UserError

FOLDER = "ADEChallengeData2016"
NUM_CLASSES = 150
SPLITS = (("training", "train"), ("validation", "test"))
IGNORE_RAW = 255  # mmsegmentation's ignore index: a raw 255 stays ignored after reduce_zero_label


def find_root(path: Path) -> Path | None:
    for cand in (path, path / FOLDER):
        if (cand / "images").is_dir() and (cand / "annotations").is_dir() and (cand / "images" / "validation").is_dir():
            return cand
    return None


def is_ade20k(path: Path) -> bool:
    return Path(path).is_dir() and find_root(Path(path)) is not None


def class_names(root: Path, num_classes: int = NUM_CLASSES) -> list[str]:
    """The names of objectInfo150.csv (first name of each ';'-list), else class1..classK."""
    f = root / f"objectInfo{num_classes}.csv"
    names = [f"class{i}" for i in range(1, num_classes + 1)]
    if f.is_file():
        with f.open(newline="", errors="replace") as fh:
            for row in csv.DictReader(fh):
                try:
                    idx = int(row["Idx"])
                except (KeyError, ValueError, TypeError):
                    raise UserError("expected columns Idx, Ratio, Train, Val, Name", f) from None
                if 1 <= idx <= num_classes:
                    names[idx - 1] = (row.get("Name") or names[idx - 1]).split(";")[0].strip()
    return names


def nominal_K(width: int, height: int) -> np.ndarray:
    f = float(max(width, height))
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])


def _loader(image: Path, label: Path, K: np.ndarray, name: str, num_classes: int):
    def load() -> ViewData:
        rgb = read_rgb(image)
        raw = read_ids(label).astype(np.int64)
        if raw.shape != rgb.shape[:2]:
            raise UserError(f"label is {raw.shape[1]}x{raw.shape[0]}, its image {rgb.shape[1]}x{rgb.shape[0]}", label)
        raw[raw == IGNORE_RAW] = 0
        if raw.max(initial=0) > num_classes:
            raise UserError(f"label value {int(raw.max())} is outside 0..{num_classes} (or {IGNORE_RAW})", label)
        return ViewData(rgb, K, np.eye(4), semantic=(raw - 1).astype(np.int32), name=name)

    return load


def label_folder_scene(
    root: Path, image_dir: str, label_dir: str, split: str, num_classes: int, name: str
) -> Scene | None:
    """``root/image_dir/*.jpg|png`` with ``root/label_dir/<stem>.png`` (0 and 255 = ignore, 1..K) as one
    scene, labels shifted to 0..K-1 (mmsegmentation's ``reduce_zero_label``); None when the folder has no
    images. The layout of ADE20K and of FiT3D's probe sets; class names from ``objectInfo<K>.csv``."""
    folder = root / image_dir
    images = (
        sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) if folder.is_dir() else []
    )
    views = []
    for im in images:
        label = root / label_dir / f"{im.stem}.png"
        if not label.is_file():
            raise UserError(f"{im.name} has no {label_dir}/{label.name}", root)
        w, h, _ = image_header(im)
        K = nominal_K(w, h)
        views.append(ViewRecord(im.stem, K, np.eye(4), w, h, _loader(im, label, K, im.stem, num_classes)))
    if not views:
        return None
    return Scene(name, views, split=split, class_names=class_names(root, num_classes), root=root)


def load_ade20k(path: str | Path, split: str | None = None) -> list[Scene]:
    path = Path(path)
    root = find_root(path)
    if root is None:
        raise UserError(
            f"no {FOLDER} layout here (images/{{training,validation}}, annotations/{{training,validation}}; "
            "see docs/evaluation.md)",
            path,
        )
    scenes = []
    for folder, sp in SPLITS:
        if split is None or sp == split:
            scene = label_folder_scene(
                root, f"images/{folder}", f"annotations/{folder}", sp, NUM_CLASSES, f"ade20k-{folder}"
            )
            if scene is not None:
                scenes.append(scene)
    if not scenes:
        raise UserError("no images in images/training or images/validation", root)
    return scenes


register_format(
    "ade20k",
    is_ade20k,
    lambda path, split, skip_bad: load_ade20k(path),
    order=100,
    looks_for="ADEChallengeData2016",
    benchmark=True,
)
