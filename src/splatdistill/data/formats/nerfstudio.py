"""nerfstudio ``transforms.json`` scenes (also the camera file of ScanNet++ DSLR captures).

``transform_matrix`` is a camera-to-world pose in nerfstudio's OpenGL axes (x right, y up, z back);
ours is OpenCV (x right, y down, z forward), so the camera axes y and z flip: ``T_cv = T_gl @
diag(1, -1, -1, 1)`` (exact in floating point, so poses round-trip bit for bit). Intrinsics
``fl_x, fl_y, cx, cy, w, h`` are read per frame when present, else from the top level; nerfstudio
puts pixel centres at +0.5 like we do, so K is used as is. Distorted camera models are refused
(undistort the images first, as ScanNet++'s toolkit and FiT3D do). Frames flagged ``is_bad`` are
left out, as ScanNet++ intends.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from splatdistill.data import io
from splatdistill.data.formats.base import register_format
from splatdistill.data.masks import NO_MASK_FOR_IMAGE, NO_MASKS_FOLDER, UNREADABLE_MASK
from splatdistill.data.scene import Scene, ViewData, ViewRecord
from splatdistill.data.validate import (
    Problem,
    depth_problems,
    intrinsics_problem,
    matrix_problem,
    pose_problem,
    warn_skipped,
)
from splatdistill.errors import UserError

GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
IMAGE_SUFFIXES = (".png", ".jpg", ".JPG", ".jpeg", ".PNG")


def read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError("file not found", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"invalid JSON ({exc})", path) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list):
        raise UserError("not a nerfstudio transforms file (no 'frames' list)", path)
    return doc


def _resolve_image(base: Path, file_path: str) -> Path:
    p = base / file_path
    if p.suffix or p.is_file():
        return p
    for s in IMAGE_SUFFIXES:  # Blender-style paths without an extension
        if p.with_suffix(s).is_file():
            return p.with_suffix(s)
    return p


def frame_intrinsics(doc: dict, frame: dict, image: Path | None) -> tuple[np.ndarray, int, int, str | None]:
    """(K, width, height, problem) for one frame, frame keys overriding the top level."""

    def get(key: str) -> Any:
        return frame.get(key, doc.get(key))

    w, h = get("w"), get("h")
    if (w is None or h is None) and image is not None and image.is_file():
        with contextlib.suppress(UserError):
            w, h = io.image_size(image)
    if w is None or h is None:
        return np.eye(3), 0, 0, "no image size (w, h) and the image cannot be read"
    w, h = int(w), int(h)
    fx, fy = get("fl_x"), get("fl_y")
    if fx is None and get("camera_angle_x") is not None:  # Blender/NeRF-synthetic style
        fx = 0.5 * w / math.tan(0.5 * float(get("camera_angle_x")))
        if get("camera_angle_y") is not None:
            fy = 0.5 * h / math.tan(0.5 * float(get("camera_angle_y")))
    if fx is None:
        return np.eye(3), w, h, "no focal length (fl_x or camera_angle_x)"
    fy = fx if fy is None else fy
    cx = get("cx") if get("cx") is not None else w / 2.0
    cy = get("cy") if get("cy") is not None else h / 2.0
    K = np.array([[float(fx), 0.0, float(cx)], [0.0, float(fy), float(cy)], [0.0, 0.0, 1.0]])
    model = str(get("camera_model") or "PINHOLE")
    dist = [float(get(k) or 0.0) for k in DISTORTION_KEYS]
    if any(abs(d) > 0 for d in dist):
        return (
            K,
            w,
            h,
            f"camera model {model} has distortion {dict(zip(DISTORTION_KEYS, dist))}; undistort the images first",
        )
    return K, w, h, intrinsics_problem(K)


def _load_view(
    image: Path,
    K: np.ndarray,
    c2w: np.ndarray,
    name: str,
    depth: Path | None,
    depth_scale: float,
    extra: dict[str, Path],
) -> ViewData:
    img = io.read_rgb(image)
    h, w = img.shape[:2]
    view = ViewData(img, K, c2w, name=name)
    if depth is not None:
        view.depth = io.read_depth(depth, scale=1.0 / depth_scale) if depth.suffix == ".png" else io.read_depth(depth)
        if probs := depth_problems(view.depth, h, w):  # the checks of the native format (shape, NaN/inf, < 0)
            raise UserError("; ".join(probs), depth)
    if "instance" in extra:
        try:
            view.instance = io.read_ids(extra["instance"])
        except UserError as exc:  # the run falls back to superpixels for this view, and says why (data.masks)
            view.instance_missing = (UNREADABLE_MASK, str(exc))
        if view.instance is not None and view.instance.shape != (h, w):
            raise UserError(
                f"instance map is {view.instance.shape[1]}x{view.instance.shape[0]}, the image is {w}x{h}",
                extra["instance"],
            )
    elif "no_instance" in extra:
        view.instance_missing = (NO_MASK_FOR_IMAGE, str(extra["no_instance"]))
    elif "no_instance_dir" in extra:
        view.instance_missing = (NO_MASKS_FOLDER, str(extra["no_instance_dir"]))
    return view


def load_nerfstudio(
    path: str | Path,
    skip_bad: bool = False,
    name: str | None = None,
    split: str = "train",
    frames_key: str = "frames",
    instance_dir: Path | None = None,
) -> Scene:
    """Load a nerfstudio scene from a folder with ``transforms.json`` or from the JSON file itself."""
    path = Path(path)
    tf = path if path.is_file() else path / "transforms.json"
    return scene_from_transforms(read_json(tf), tf, name, split, skip_bad, frames_key, instance_dir)


def _instance_file(instance_dir: Path, stem: str, file_name: str) -> dict[str, Path]:
    """The instance map of an image: ``<stem>.png`` (FiT3D's layout) or ``<file name>.png`` (ScanNet++'s official
    ``DSC01234.JPG.png``), or .npy; else why there is none (``no_instance``/``no_instance_dir``)."""
    if not instance_dir.is_dir():
        return {"no_instance_dir": instance_dir}
    cands = [instance_dir / f"{base}{s}" for s in (".png", ".npy") for base in dict.fromkeys((stem, file_name))]
    found = next((c for c in cands if c.is_file()), None)
    return {"instance": found} if found is not None else {"no_instance": cands[0].parent / f"{file_name}.png"}


def scene_from_transforms(
    doc: dict[str, Any],
    tf: Path,
    name: str | None = None,
    split: str = "train",
    skip_bad: bool = False,
    frames_key: str = "frames",
    instance_dir: Path | None = None,
) -> Scene:
    """Build a Scene from a parsed transforms document; ``tf`` (its file) anchors relative paths and errors."""
    base = tf.parent
    frames = doc.get(frames_key) or []
    depth_scale = float(doc.get("depth_unit_scale_factor", 1e-3))
    views: list[ViewRecord] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    scene_name = name or base.name
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            problems.append(Problem(tf, f"{frames_key}[{i}] needs file_path and transform_matrix", scene_name, str(i)))
            if skip_bad:
                warn_skipped(problems[-1])
            continue
        if fr.get("is_bad"):
            continue
        image = _resolve_image(base, str(fr["file_path"]))
        vname = Path(str(fr["file_path"])).stem
        msgs: list[tuple[Path, str]] = []
        tm = fr["transform_matrix"]
        if isinstance(tm, list) and len(tm) == 3:  # 3x4 camera-to-world: complete the last row
            tm = [*tm, [0.0, 0.0, 0.0, 1.0]]
        T, err = matrix_problem(tm, (4, 4), f"{frames_key}[{i}].transform_matrix")
        if err or (err := pose_problem(T)):
            msgs.append((tf, f"frame {fr['file_path']}: {err}"))
        K, w, h, err = frame_intrinsics(doc, fr, image)
        if err:
            msgs.append((tf, f"frame {fr['file_path']}: {err}"))
        try:
            iw, ih = io.image_size(image)
            if w and (iw, ih) != (w, h):
                msgs.append((image, f"image is {iw}x{ih} but {tf.name} says {w}x{h}"))
        except UserError as exc:
            msgs.append((image, str(exc).removeprefix(f"{image}: ")))
        if vname in seen:
            msgs.append((tf, f"duplicate frame {fr['file_path']}"))
        depth = base / fr["depth_file_path"] if fr.get("depth_file_path") else None
        if depth is not None and not depth.is_file():
            msgs.append((depth, "file not found"))
        extra: dict[str, Path] = {}
        if instance_dir is not None:
            extra.update(_instance_file(instance_dir, vname, Path(str(fr["file_path"])).name))
        if msgs:
            for p, m in msgs:
                problems.append(Problem(p, m, scene_name, vname))
            if skip_bad:
                warn_skipped(problems[-1])
            continue
        seen.add(vname)
        c2w = T @ GL_TO_CV
        loader = functools.partial(_load_view, image, K, c2w, vname, depth, depth_scale, extra)
        views.append(ViewRecord(vname, K, c2w, w, h, loader))
    if problems and not skip_bad:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}")
    if not views:
        raise UserError("no usable frames", tf)
    return Scene(name=scene_name, views=views, split=split, class_names=[], root=base)


def write_nerfstudio(
    scene: Scene,
    out: str | Path,
    transforms_name: str = "transforms.json",
    image_dir: str = "images",
    image_suffix: str = ".png",
    write_depth: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a scene as a nerfstudio folder (images + JSON); used for fixtures and exports."""
    out = Path(out)
    frames = []
    Ks = [v.K for v in scene.views]
    shared = all(np.array_equal(K, Ks[0]) for K in Ks) and len({(v.width, v.height) for v in scene.views}) == 1
    for rec in scene.views:
        view = rec.load()
        rel = f"{image_dir}/{rec.name}{image_suffix}"
        io.write_rgb(out / rel, view.image)
        fr: dict[str, Any] = {"file_path": rel, "transform_matrix": (rec.cam_to_world @ GL_TO_CV).tolist()}
        if not shared:
            fr.update(
                fl_x=float(rec.K[0, 0]),
                fl_y=float(rec.K[1, 1]),
                cx=float(rec.K[0, 2]),
                cy=float(rec.K[1, 2]),
                w=rec.width,
                h=rec.height,
            )
        if write_depth and view.depth is not None:
            fr["depth_file_path"] = f"depth/{rec.name}.png"
            io.write_depth(out / fr["depth_file_path"], view.depth, scale=1000.0)
        frames.append(fr)
    doc: dict[str, Any] = {"camera_model": "PINHOLE"}
    if shared:
        K = Ks[0]
        doc.update(
            fl_x=float(K[0, 0]),
            fl_y=float(K[1, 1]),
            cx=float(K[0, 2]),
            cy=float(K[1, 2]),
            w=scene.views[0].width,
            h=scene.views[0].height,
        )
    if write_depth:
        doc["depth_unit_scale_factor"] = 1e-3
    doc.update(extra or {})
    doc["frames"] = frames
    io.atomic_write_json(out / transforms_name, doc)
    return out / transforms_name


register_format(
    "nerfstudio",
    lambda path: path.suffix == ".json" if path.is_file() else (path / "transforms.json").is_file(),
    lambda path, split, skip_bad: [load_nerfstudio(path, skip_bad=skip_bad)],
    order=30,
    looks_for="transforms.json (nerfstudio)",
    file_hint="transforms.json",
)
