"""ScanNet++ DSLR scenes in the layout FiT3D's preprocessing produces (the one Splat-and-Distill trains on)::

    ROOT/metadata/nvs_sem_train.txt     optional: scene ids of the train split (one per line)
    ROOT/metadata/nvs_sem_val.txt       optional: scene ids of the val split
    ROOT/scenes/<scene_id>/images/*.JPG                undistorted, downscaled DSLR images
    ROOT/scenes/<scene_id>/transforms_train.json       nerfstudio-style poses + PINHOLE intrinsics
    ROOT/scenes/<scene_id>/instance_segmentation/<image name>.png   optional 16-bit instance ids (0 = none):
                                                       DSC01234.JPG.png (official) or DSC01234.png
    ROOT/scenes/<scene_id>/masks/*.png                 anonymisation masks (not used here)

``ROOT`` may also be the ``scenes`` folder or a single scene folder. ``file_path`` entries in
``transforms_train.json`` are image names (ScanNet++ style) resolved against ``images/``, or paths
relative to the scene folder. Scenes listed in neither split file are ``train``.
"""

from __future__ import annotations

from pathlib import Path

from splatdistill.data import io
from splatdistill.data.formats.base import register_format
from splatdistill.data.scene import Scene
from splatdistill.errors import UserError

from .nerfstudio import read_json, scene_from_transforms, write_nerfstudio

TRANSFORMS = "transforms_train.json"


def _scene_dirs(root: Path) -> list[Path]:
    if (root / TRANSFORMS).is_file():
        return [root]
    base = root / "scenes" if (root / "scenes").is_dir() else root
    return sorted(p.parent for p in base.glob(f"*/{TRANSFORMS}"))


def is_scannetpp(root: Path) -> bool:
    return bool(_scene_dirs(root))


def _split_lists(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for meta in (root / "metadata", root.parent / "metadata"):
        for split, fname in (("train", "nvs_sem_train.txt"), ("val", "nvs_sem_val.txt")):
            f = meta / fname
            if f.is_file():
                for line in f.read_text().split():
                    out.setdefault(line.strip(), split)
    return out


def load_scannetpp_scene(scene_dir: Path, split: str = "train", skip_bad: bool = False) -> Scene:
    tf = scene_dir / TRANSFORMS
    doc = read_json(tf)
    # ScanNet++ names images by file name only; point them into images/ when that is where they are.
    fixed = []
    for fr in doc["frames"]:
        if (
            isinstance(fr, dict)
            and "file_path" in fr
            and not (scene_dir / fr["file_path"]).exists()
            and (scene_dir / "images" / fr["file_path"]).exists()
        ):
            fr = {**fr, "file_path": f"images/{fr['file_path']}"}
        fixed.append(fr)
    doc["frames"] = fixed
    inst = scene_dir / "instance_segmentation"
    return scene_from_transforms(doc, tf, scene_dir.name, split, skip_bad, instance_dir=inst)


def load_scannetpp(root: str | Path, split: str | None = None, skip_bad: bool = False) -> list[Scene]:
    root = Path(root)
    dirs = _scene_dirs(root)
    if not dirs:
        raise UserError(f"no ScanNet++ scenes (*/{TRANSFORMS}) found", root)
    splits = _split_lists(root if (root / "scenes").is_dir() else root.parent)
    scenes = []
    for d in dirs:
        s = splits.get(d.name, "train")
        if split is not None and s != split:
            continue
        scenes.append(load_scannetpp_scene(d, s, skip_bad))
    return scenes


def write_scannetpp(scenes: list[Scene], root: str | Path) -> Path:
    """Write scenes in the FiT3D ScanNet++ layout (fixtures, exports). Instance maps go to instance_segmentation/."""

    root = Path(root)
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for scene in scenes:
        sd = root / "scenes" / scene.name
        write_nerfstudio(
            scene, sd, transforms_name=TRANSFORMS, image_dir="images", image_suffix=".JPG", write_depth=False
        )
        # ScanNet++ lists bare image names.
        doc = read_json(sd / TRANSFORMS)
        for fr in doc["frames"]:
            fr["file_path"] = Path(fr["file_path"]).name
        doc["k1"] = doc["k2"] = doc["k3"] = doc["k4"] = 0.0
        io.atomic_write_json(sd / TRANSFORMS, doc)
        for rec in scene.views:
            v = rec.load()
            if v.instance is not None:
                io.write_ids(sd / "instance_segmentation" / f"{rec.name}.png", v.instance)
        lists.setdefault(scene.split if scene.split in lists else "val", []).append(scene.name)
    for split, names in lists.items():
        io.atomic_write_bytes(root / "metadata" / f"nvs_sem_{split}.txt", ("\n".join(names) + "\n").encode())
    return root


register_format(
    "scannetpp",
    lambda path: path.is_dir() and is_scannetpp(path),
    lambda path, split, skip_bad: load_scannetpp(path, split=split, skip_bad=skip_bad),
    order=20,
    looks_for="scenes/*/transforms_train.json (ScanNet++/FiT3D)",
)
