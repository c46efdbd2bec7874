"""The splatdistill scene format (see ``docs/data-format.md``): one folder per scene with ``scene.json``.

::

    ROOT/dataset.json                  optional: name, scene list, build parameters
    ROOT/<scene>/scene.json            name, split, class_names, depth_scale, views[...]
    ROOT/<scene>/rgb/<view>.png        8-bit RGB (PNG or JPEG)
    ROOT/<scene>/depth/<view>.png      16-bit, metres * depth_scale, 0 = invalid (or float32 .npy)
    ROOT/<scene>/normals/<view>.png    8-bit RGB, (n + 1) * 127.5, camera frame, 0 0 0 = invalid (or .npy)
    ROOT/<scene>/instance/<view>.png   16-bit ids, 0 = none (or int32 .npy)
    ROOT/<scene>/semantic/<view>.png   16-bit class index + 1, 0 = ignore (or int32 .npy, -1 = ignore)
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from splatdistill.data import io
from splatdistill.data.formats.base import register_format
from splatdistill.data.scene import Scene, ViewData, ViewRecord
from splatdistill.data.validate import (
    Problem,
    depth_problems,
    intrinsics_problem,
    map_problems,
    matrix_problem,
    normals_problems,
    pose_problem,
    warn_skipped,
)
from splatdistill.errors import UserError

FORMAT = "splatdistill.scene"
VERSION = 1
SPLITS = ("train", "val", "test")
MAP_KEYS = ("depth", "normals", "instance", "semantic")


def write_scene(
    scene_dir: Path,
    name: str,
    split: str,
    class_names: list[str],
    views: list[dict[str, Any]],
    meta: dict[str, Any] | None = None,
    depth_scale: float = io.DEPTH_SCALE,
) -> Path:
    """Write ``scene.json`` for views whose files are already on disk.

    Each view dict has ``name``, ``image``, ``K``, ``cam_to_world``, ``width``, ``height`` and
    optionally ``depth``, ``normals``, ``instance``, ``semantic`` (paths relative to ``scene_dir``).
    """
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "split": split,
        "class_names": list(class_names),
        "depth_scale": depth_scale,
        "views": [
            {**v, "K": np.asarray(v["K"]).tolist(), "cam_to_world": np.asarray(v["cam_to_world"]).tolist()}
            for v in views
        ],
        "meta": meta or {},
    }
    path = scene_dir / "scene.json"
    io.atomic_write_json(path, doc)
    return path


def write_view_files(scene_dir: Path, view: ViewData, name: str, depth_scale: float = io.DEPTH_SCALE) -> dict[str, Any]:
    """Write one view's maps in the default encodings; returns its ``scene.json`` entry."""
    entry: dict[str, Any] = {
        "name": name,
        "image": f"rgb/{name}.png",
        "width": view.width,
        "height": view.height,
        "K": view.K,
        "cam_to_world": view.cam_to_world,
    }
    io.write_rgb(scene_dir / entry["image"], view.image)
    if view.depth is not None:
        entry["depth"] = f"depth/{name}.png"
        io.write_depth(scene_dir / entry["depth"], view.depth, depth_scale)
    if view.normals is not None:
        entry["normals"] = f"normals/{name}.png"
        io.write_normals(scene_dir / entry["normals"], view.normals)
    if view.instance is not None:
        entry["instance"] = f"instance/{name}.png"
        io.write_ids(scene_dir / entry["instance"], view.instance)
    if view.semantic is not None:
        entry["semantic"] = f"semantic/{name}.png"
        io.write_ids(scene_dir / entry["semantic"], view.semantic, offset=1)
    return entry


def save_scene(scene: Scene, scene_dir: Path) -> Path:
    """Write any in-memory :class:`Scene` (e.g. loaded from another format) in this format."""

    names = [r.name for r in scene.views]
    keep = all(re.fullmatch(r"[\w.-]+", n) for n in names) and len(set(names)) == len(names)
    entries = [
        write_view_files(scene_dir, scene.load_view(i), names[i] if keep else f"{i:04d}") for i in range(len(scene))
    ]
    for e, rec in zip(entries, scene.views):
        e["source_name"] = rec.name
    return write_scene(scene_dir, scene.name, scene.split, scene.class_names, entries)


def read_scene_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError("scene.json not found", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"invalid JSON ({exc})", path) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("views"), list):
        raise UserError("not a splatdistill scene.json (no 'views' list)", path)
    return doc


def _load_view(scene_dir: Path, entry: dict[str, Any], depth_scale: float, n_classes: int) -> ViewData:
    """Read one view's files; any mismatch (size, NaN) raises a UserError naming the file."""
    img_path = scene_dir / entry["image"]
    image = io.read_rgb(img_path)
    h, w = image.shape[:2]
    if (w, h) != (int(entry["width"]), int(entry["height"])):
        raise UserError(f"image is {w}x{h} but scene.json says {entry['width']}x{entry['height']}", img_path)
    out = ViewData(
        image=image,
        K=np.asarray(entry["K"], np.float64),
        cam_to_world=np.asarray(entry["cam_to_world"], np.float64),
        name=entry["name"],
    )
    if entry.get("depth"):
        p = scene_dir / entry["depth"]
        out.depth = io.read_depth(p, depth_scale)
        if probs := depth_problems(out.depth, h, w):
            raise UserError("; ".join(probs), p)
    if entry.get("normals"):
        p = scene_dir / entry["normals"]
        out.normals = io.read_normals(p)
        if probs := normals_problems(out.normals, h, w):
            raise UserError("; ".join(probs), p)
    if entry.get("instance"):
        p = scene_dir / entry["instance"]
        out.instance = io.read_ids(p)
        if probs := map_problems("instance map", out.instance, h, w) + (
            ["negative instance ids"] if out.instance.min(initial=0) < 0 else []
        ):
            raise UserError("; ".join(probs), p)
    if entry.get("semantic"):
        p = scene_dir / entry["semantic"]
        out.semantic = io.read_ids(p, offset=0 if p.suffix in (".npy", ".npz") else 1)
        probs = map_problems("semantic map", out.semantic, h, w)
        if out.semantic.size and (out.semantic.min() < -1 or (n_classes and out.semantic.max() >= n_classes)):
            probs.append(f"semantic labels outside [-1, {n_classes - 1}]")
        if probs:
            raise UserError("; ".join(probs), p)
    return out


def view_metadata_problems(scene_dir: Path, entry: Any, index: int) -> tuple[list[str], list[Path]]:
    """Problems of one ``views[i]`` entry that can be seen without decoding pixels.

    Returns (messages, paths): the path of each message (scene.json for matrices, else the file).
    """
    msgs: list[str] = []
    paths: list[Path] = []
    sj = scene_dir / "scene.json"

    def add(msg: str, path: Path = sj) -> None:
        msgs.append(msg)
        paths.append(path)

    if not isinstance(entry, dict):
        add(f"views[{index}] is not an object")
        return msgs, paths
    for key in ("name", "image", "K", "cam_to_world", "width", "height"):
        if key not in entry:
            add(f"views[{index}] has no '{key}'")
    if msgs:
        return msgs, paths
    K, err = matrix_problem(entry["K"], (3, 3), f"views[{index}].K")
    if err or (err := intrinsics_problem(K)):
        add(f"view {entry['name']}: {err}")
    T, err = matrix_problem(entry["cam_to_world"], (4, 4), f"views[{index}].cam_to_world")
    if err or (err := pose_problem(T)):
        add(f"view {entry['name']}: {err}")
    img = scene_dir / str(entry["image"])
    try:
        w, h = io.image_size(img)
        if (w, h) != (int(entry["width"]), int(entry["height"])):
            add(f"image is {w}x{h} but scene.json says {entry['width']}x{entry['height']}", img)
    except UserError as exc:
        add(str(exc).removeprefix(f"{img}: "), img)
    for key in ("depth", "normals", "instance", "semantic"):
        if not entry.get(key):
            continue
        f = scene_dir / str(entry[key])
        size = io.map_size(f)
        if size is None:
            add("file not found" if not f.is_file() else "cannot read its header", f)
        elif size != (int(entry["width"]), int(entry["height"])):
            add(f"{key} is {size[0]}x{size[1]}, the image is {entry['width']}x{entry['height']}", f)
    return msgs, paths


def load_scene(scene_dir: Path, skip_bad: bool = False) -> Scene:
    """Load one scene folder; bad views raise (naming the file) or, with ``skip_bad``, warn and drop."""
    scene_dir = Path(scene_dir)
    sj = scene_dir / "scene.json"
    doc = read_scene_json(sj)
    name = str(doc.get("name") or scene_dir.name)
    split = str(doc.get("split", "train"))
    if split not in SPLITS:
        raise UserError(f"split '{split}' is not one of {', '.join(SPLITS)}", sj)
    class_names = [str(c) for c in doc.get("class_names", [])]
    depth_scale = float(doc.get("depth_scale", io.DEPTH_SCALE))
    views: list[ViewRecord] = []
    seen: set[str] = set()
    problems: list[Problem] = []
    for i, entry in enumerate(doc["views"]):
        msgs, paths = view_metadata_problems(scene_dir, entry, i)
        vname = str(entry.get("name", i)) if isinstance(entry, dict) else str(i)
        if not msgs and vname in seen:
            msgs, paths = [f"duplicate view name '{vname}'"], [sj]
        if msgs:
            for m, p in zip(msgs, paths):
                problems.append(Problem(p, m, name, vname))
            if skip_bad:
                warn_skipped(problems[-len(msgs)])
                continue
            continue
        seen.add(vname)
        loader = functools.partial(_load_view, scene_dir, entry, depth_scale, len(class_names))
        views.append(
            ViewRecord(
                vname,
                np.asarray(entry["K"], np.float64),
                np.asarray(entry["cam_to_world"], np.float64),
                int(entry["width"]),
                int(entry["height"]),
                loader,
            )
        )
    if problems and not skip_bad:
        more = (
            f" (and {len(problems) - 1} more problems; see `splatdistill data check {scene_dir}`)"
            if len(problems) > 1
            else ""
        )
        raise UserError(f"{problems[0]}{more}")
    if not views:
        raise UserError("scene has no usable views", sj)
    return Scene(name=name, views=views, split=split, class_names=class_names, root=scene_dir)


def find_scene_dirs(root: Path) -> list[Path]:
    """Scene folders under ``root`` (itself, the ones listed in dataset.json, or any child with scene.json)."""
    if (root / "scene.json").is_file():
        return [root]
    ds = root / "dataset.json"
    if ds.is_file():
        try:
            names = json.loads(ds.read_text()).get("scenes")
        except json.JSONDecodeError as exc:
            raise UserError(f"invalid JSON ({exc})", ds) from None
        if names:
            return [root / n for n in names]
    return sorted(p.parent for p in root.glob("*/scene.json"))


def load_native(root: Path, split: str | None = None, skip_bad: bool = False) -> list[Scene]:
    scenes = []
    for d in find_scene_dirs(root):
        if split is not None:  # cheap split filter before validating every view
            doc = read_scene_json(d / "scene.json")
            if doc.get("split", "train") != split:
                continue
        scenes.append(load_scene(d, skip_bad=skip_bad))
    return scenes


def _detect(path: Path) -> bool:
    if path.is_file():
        return path.name == "scene.json"
    return (path / "scene.json").is_file() or (path / "dataset.json").is_file() or any(path.glob("*/scene.json"))


register_format(
    "splatdistill",
    _detect,
    lambda path, split, skip_bad: load_native(path.parent if path.is_file() else path, split, skip_bad),
    order=10,
    looks_for="scene.json folders (splatdistill)",
    file_hint="scene.json",
)
