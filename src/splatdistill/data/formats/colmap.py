"""COLMAP sparse models (binary or text) through pycolmap.

COLMAP stores world-to-camera poses (``cam_from_world``) in OpenCV axes and puts the centre of the
top-left pixel at (0.5, 0.5), like we do, so K and the inverted pose are used as they are. Only
undistorted pinhole models are accepted (PINHOLE, SIMPLE_PINHOLE, or a model whose distortion
parameters are all zero); run COLMAP's ``image_undistorter`` first otherwise.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from splatdistill.data import io
from splatdistill.data.formats.base import register_format
from splatdistill.data.scene import Scene, ViewData, ViewRecord
from splatdistill.data.validate import Problem, intrinsics_problem, pose_problem, warn_skipped
from splatdistill.errors import UserError, require_extra

MODEL_FILES = ("cameras.bin", "cameras.txt")


def find_model_dir(path: Path) -> Path | None:
    """The folder holding cameras/images files: ``path``, ``path/sparse/0`` or ``path/sparse``."""
    for d in (path, path / "sparse" / "0", path / "sparse", path / "colmap" / "sparse" / "0"):
        if any((d / f).is_file() for f in MODEL_FILES):
            return d
    return None


def _find_image_dir(path: Path, model_dir: Path) -> Path:
    for d in (path / "images", model_dir.parent / "images", model_dir.parent.parent / "images", path):
        if d.is_dir():
            return d
    return path


def camera_matrix(camera) -> tuple[np.ndarray | None, str | None]:
    """Pinhole K of a pycolmap camera, or a problem when it is distorted or not a pinhole."""
    model = str(camera.model_name) if hasattr(camera, "model_name") else str(camera.model)
    model = model.split(".")[-1]
    p = np.asarray(camera.params, dtype=np.float64)
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = p
        K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])
    elif model == "PINHOLE":
        fx, fy, cx, cy = p
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    elif model in ("SIMPLE_RADIAL", "RADIAL") and np.all(p[3:] == 0):
        K = np.array([[p[0], 0, p[1]], [0, p[0], p[2]], [0, 0, 1.0]])
    elif model in ("OPENCV", "FULL_OPENCV", "OPENCV_FISHEYE") and np.all(p[4:] == 0):
        K = np.array([[p[0], 0, p[2]], [0, p[1], p[3]], [0, 0, 1.0]])
    else:
        return None, f"camera {camera.camera_id} is {model} with distortion {p.tolist()}; undistort the images first"
    return K, intrinsics_problem(K)


def image_has_pose(image) -> bool:
    """Whether a pycolmap image is registered (a property or a method, by pycolmap version)."""
    has_pose = getattr(image, "has_pose", False)
    return bool(has_pose() if callable(has_pose) else has_pose)


def cam_from_world_matrix(image) -> np.ndarray:
    """The 4x4 world-to-camera matrix of a registered pycolmap image."""
    cfw = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
    m = np.eye(4)
    m[:3] = np.asarray(cfw.matrix(), dtype=np.float64)
    return m


def _load_view(image: Path, K: np.ndarray, c2w: np.ndarray, name: str) -> ViewData:
    return ViewData(io.read_rgb(image), K, c2w, name=name)


def load_colmap(
    path: str | Path,
    skip_bad: bool = False,
    image_dir: str | Path | None = None,
    name: str | None = None,
    split: str = "train",
) -> Scene:
    """Load a COLMAP reconstruction's registered images as one scene (views sorted by image name)."""
    pycolmap = require_extra("pycolmap", "captures", "reading a COLMAP model")

    path = Path(path)
    model_dir = find_model_dir(path)
    if model_dir is None:
        raise UserError("no COLMAP model (cameras.bin/.txt) in it, sparse/0 or sparse", path)
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as exc:  # pycolmap raises plain exceptions for corrupt files
        raise UserError(f"cannot read COLMAP model ({exc})", model_dir) from None
    images_root = Path(image_dir) if image_dir is not None else _find_image_dir(path, model_dir)
    scene_name = name or (path.name if path.name not in ("0", "sparse") else path.parent.name)
    problems: list[Problem] = []
    views: list[ViewRecord] = []
    for img in sorted(rec.images.values(), key=lambda im: im.name):
        if not image_has_pose(img):
            continue
        cam = rec.cameras[img.camera_id]
        msgs: list[tuple[Path, str]] = []
        K, err = camera_matrix(cam)
        if err:
            msgs.append((model_dir, f"image {img.name}: {err}"))
        cfw = cam_from_world_matrix(img)
        err = pose_problem(cfw)
        c2w = np.linalg.inv(cfw) if err is None else cfw
        if err:
            msgs.append((model_dir, f"image {img.name}: {err}"))
        file = images_root / img.name
        try:
            w, h = io.image_size(file)
            if (w, h) != (cam.width, cam.height):
                msgs.append((file, f"image is {w}x{h} but camera {cam.camera_id} is {cam.width}x{cam.height}"))
        except UserError as exc:
            msgs.append((file, str(exc).removeprefix(f"{file}: ")))
        vname = Path(img.name).stem
        if msgs:
            for p, m in msgs:
                problems.append(Problem(p, m, scene_name, vname))
            if skip_bad:
                warn_skipped(problems[-1])
            continue
        views.append(
            ViewRecord(
                vname, K, c2w, int(cam.width), int(cam.height), functools.partial(_load_view, file, K, c2w, vname)
            )
        )
    if problems and not skip_bad:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}")
    if not views:
        raise UserError("COLMAP model has no usable registered images", model_dir)
    return Scene(name=scene_name, views=views, split=split, class_names=[], root=path)


def write_colmap(scene: Scene, out: str | Path, binary: bool = True) -> Path:
    """Write a scene as ``out/images`` + ``out/sparse/0`` (one PINHOLE camera per distinct K)."""
    pycolmap = require_extra("pycolmap", "captures", "writing a COLMAP model")

    out = Path(out)
    model_dir = out / "sparse" / "0"
    model_dir.mkdir(parents=True, exist_ok=True)
    rec = pycolmap.Reconstruction()
    cams: dict[tuple, int] = {}
    for i, v in enumerate(scene.views, start=1):
        key = (v.width, v.height, *v.K[[0, 1, 0, 1], [0, 1, 2, 2]].tolist())
        if key not in cams:
            cams[key] = len(cams) + 1
            K = v.K
            cam = pycolmap.Camera(
                model="PINHOLE",
                width=v.width,
                height=v.height,
                params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]],
                camera_id=cams[key],
            )
            rec.add_camera_with_trivial_rig(cam)
        fname = f"{v.name}.png"
        io.write_rgb(out / "images" / fname, v.load().image)
        w2c = np.linalg.inv(v.cam_to_world)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(w2c[:3, :3]), w2c[:3, 3])
        rec.add_image_with_trivial_frame(pycolmap.Image(name=fname, camera_id=cams[key], image_id=i), pose)
    (rec.write_binary if binary else rec.write_text)(str(model_dir))
    return out


def observed_points(path: str | Path) -> dict[str, np.ndarray]:
    """World points (N, 3) that each registered image of a COLMAP model observes, by image stem: the
    sparse depth structure from motion gives (a point triangulated from a view is visible in it)."""
    pycolmap = require_extra("pycolmap", "captures", "reading a COLMAP model")

    model_dir = find_model_dir(Path(path))
    if model_dir is None:
        raise UserError("no COLMAP model (cameras.bin/.txt) in it, sparse/0 or sparse", path)
    rec = pycolmap.Reconstruction(str(model_dir))
    out = {}
    for img in rec.images.values():
        if image_has_pose(img):
            ids = [p.point3D_id for p in img.points2D if p.has_point3D()]
            out[Path(img.name).stem] = np.array([rec.points3D[i].xyz for i in ids], dtype=np.float64).reshape(-1, 3)
    return out


register_format(
    "colmap",
    lambda path: path.is_dir() and find_model_dir(path) is not None,
    lambda path, split, skip_bad: [load_colmap(path, skip_bad=skip_bad)],
    order=40,
    looks_for="a COLMAP sparse model",
)
