"""RGB-D sequences: frames of a colour and a depth camera, their calibration, depth registration.

An :class:`RGBDSequence` is what every RGB-D layout (TUM, 7-Scenes, a plain folder of colour and
depth files) reads into; :func:`sequence_scene` turns one into a :class:`Scene` whose views carry
the depth *in the colour camera* (registered by :func:`register_depth` when the two cameras differ).

Calibration conventions: intrinsics given by users and by the capture tools (OpenCV, ViSP, TUM,
Open3D) put the centre of the first pixel at (0, 0); ours put it at (0.5, 0.5), so their principal
point is shifted by +0.5 on reading (:func:`intrinsics_matrix`). ``color_to_depth`` maps points in
the colour camera frame into the depth camera frame (ViSP's ``depth_M_color``).
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splatdistill.data import io
from splatdistill.data.sampler import frame_number
from splatdistill.data.scene import Scene, ViewData, ViewRecord
from splatdistill.errors import UserError
from splatdistill.geometry.warp import pixel_centres, warp_pixels_np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pgm", ".ppm")
DEPTH_SUFFIXES = (".png", ".bin", ".npy")


@dataclass
class RGBDFrame:
    """One time step: a colour image file and a depth file (the pose, when the layout has one)."""

    name: str
    color: Path
    depth: Path
    cam_to_world: np.ndarray | None = None  # colour camera, OpenCV axes


@dataclass
class RGBDSequence:
    """Frames plus the calibration needed to put each depth map into its colour camera."""

    name: str
    frames: list[RGBDFrame]
    K_color: np.ndarray  # our convention (pixel centres at +0.5)
    K_depth: np.ndarray
    color_to_depth: np.ndarray = field(default_factory=lambda: np.eye(4))
    depth_scale: float = 0.001  # metres per stored unit
    depth_invalid: int | None = None  # a raw value meaning "no depth" besides 0 (7-Scenes: 65535)
    split: str = "train"
    root: Path | None = None

    @property
    def registered(self) -> bool:
        """True when depth pixels already line up with colour pixels (same camera)."""
        return bool(np.allclose(self.K_color, self.K_depth) and np.allclose(self.color_to_depth, np.eye(4)))

    @property
    def has_poses(self) -> bool:
        return all(f.cam_to_world is not None for f in self.frames)


# -- calibration ---------------------------------------------------------------------------------


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """K in our convention from OpenCV-convention values (first pixel centre at 0, 0)."""
    return np.array([[fx, 0.0, cx + 0.5], [0.0, fy, cy + 0.5], [0.0, 0.0, 1.0]])


#: how far the principal point may lie outside the image, as a share of its width/height (a crop of a
#: larger sensor moves it; farther out, the numbers are not this camera's)
PRINCIPAL_POINT_MARGIN = 0.5
#: the median depth (metres) of a first frame that a depth scale can give; outside it the scale is wrong
PLAUSIBLE_DEPTH_M = (0.01, 1000.0)


def parse_intrinsics(spec: str) -> np.ndarray:
    """``fx,fy,cx,cy`` (OpenCV convention), or a file: ViSP XML (``<camera><px>...``), a 3x3 matrix, or 4 numbers.
    Refuses non-finite numbers and focal lengths that are not > 0."""
    K = _parse_intrinsics(spec)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2] - 0.5, K[1, 2] - 0.5
    shown = f"fx={fx:g}, fy={fy:g}, cx={cx:g}, cy={cy:g}"
    if not np.all(np.isfinite(K)):
        raise UserError(f"intrinsics {spec!r}: every number must be finite, got {shown}")
    if fx <= 0 or fy <= 0:
        raise UserError(f"intrinsics {spec!r}: the focal lengths fx, fy must be > 0 pixels, got {shown}")
    return K


def check_principal_point(K: np.ndarray, width: int, height: int, what: str, path: Path) -> None:
    """The principal point must lie in the ``width`` x ``height`` image or within the stated margin of it."""
    m = PRINCIPAL_POINT_MARGIN
    cx, cy = K[0, 2], K[1, 2]
    if not (-m * width <= cx <= (1 + m) * width and -m * height <= cy <= (1 + m) * height):
        raise UserError(
            f"{what}: principal point ({cx - 0.5:g}, {cy - 0.5:g}) is far outside the {width}x{height} "
            f"image (allowed: within {m:.0%} of its size beyond the edges); are fx,fy,cx,cy in pixels "
            "of this image, in that order?",
            path,
        )


def check_depth_scale(depth_m: np.ndarray, scale: float, path: Path) -> None:
    """A first frame's median depth far outside :data:`PLAUSIBLE_DEPTH_M` means the scale is wrong."""
    valid = depth_m[depth_m > 0]
    lo, hi = PLAUSIBLE_DEPTH_M
    if valid.size and not lo <= float(np.median(valid)) <= hi:
        raise UserError(
            f"with a depth scale of {scale:g} metres per stored unit the median depth is "
            f"{float(np.median(valid)):.4g} m, outside {lo:g}-{hi:g} m; give --depth-scale "
            "(0.001 for millimetres, 0.0002 for 5000 units per metre, 1 for float metres)",
            path,
        )


def _parse_intrinsics(spec: str) -> np.ndarray:
    nums = re.split(r"[,\s]+", spec.strip())
    if len(nums) == 4 and not Path(spec).exists():
        try:
            return intrinsics_matrix(*(float(n) for n in nums))
        except ValueError:
            pass
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(
            "intrinsics must be 'fx,fy,cx,cy' or a file (ViSP XML, 3x3 matrix or 4 numbers); no such file", path
        )
    text = path.read_text(errors="replace")
    if text.lstrip().startswith("<"):
        try:
            cam = ET.fromstring(text).find(".//camera")
            vals = [float(cam.findtext(k)) for k in ("px", "py", "u0", "v0")]  # type: ignore[union-attr, arg-type]
        except (ET.ParseError, AttributeError, TypeError, ValueError):
            raise UserError("no <camera> with <px>, <py>, <u0>, <v0> in this XML file", path) from None
        return intrinsics_matrix(*vals)
    try:
        arr = np.array([float(t) for t in text.split()])
    except ValueError:
        raise UserError("intrinsics file must hold 4 numbers (fx fy cx cy) or a 3x3 matrix", path) from None
    if arr.size == 4:
        return intrinsics_matrix(*arr)
    if arr.size == 9:
        K = arr.reshape(3, 3)
        return intrinsics_matrix(K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    raise UserError(f"intrinsics file must hold 4 numbers (fx fy cx cy) or a 3x3 matrix, found {arr.size}", path)


def parse_transform(path: str | Path) -> np.ndarray:
    """A 4x4 (or 3x4) rigid transform from a text file of numbers."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError("no such file (expected a 4x4 transform)", path)
    try:
        arr = np.array([float(t) for t in path.read_text().split()])
    except ValueError:
        raise UserError("expected 12 or 16 numbers (a 3x4 or 4x4 transform)", path) from None
    if arr.size not in (12, 16):
        raise UserError(f"expected 12 or 16 numbers (a 3x4 or 4x4 transform), found {arr.size}", path)
    T = np.eye(4)
    T[:3] = arr.reshape(-1, 4)[:3]
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        raise UserError("the transform's rotation is not orthonormal", path)
    return T


# -- depth files ---------------------------------------------------------------------------------


def read_visp_depth(path: Path) -> np.ndarray:
    """ViSP's raw depth ``.bin``: uint32 height, uint32 width, then height*width uint16 (little endian)."""
    if not path.is_file():
        raise UserError("file not found", path)
    raw = path.read_bytes()
    if len(raw) < 8:
        raise UserError("depth .bin is shorter than its 8-byte header", path)
    h, w = (int(x) for x in np.frombuffer(raw[:8], "<u4"))
    if len(raw) != 8 + 2 * h * w:
        raise UserError(
            f"depth .bin header says {w}x{h} ({8 + 2 * h * w} bytes) but the file has {len(raw)} bytes", path
        )
    return np.frombuffer(raw[8:], "<u2").reshape(h, w)


def read_raw_depth(path: Path) -> np.ndarray:
    """The stored depth values (before scaling): 16-bit PNG, ViSP ``.bin`` or ``.npy``."""
    if path.suffix == ".bin":
        return read_visp_depth(path)
    if path.suffix == ".npy":
        return io.read_depth(path)
    mode = io.image_mode(path)
    if mode in ("1", "L", "P", "LA", "RGB", "RGBA"):
        raise UserError(
            f"depth PNG is 8-bit (mode {mode}): at most 255 depth steps, which is how depth "
            "visualisations are saved; use the sensor's 16-bit depth PNGs (or float .npy in metres)",
            path,
        )
    return io.read_depth(path, scale=1.0)


def read_metric_depth(seq: RGBDSequence, frame: RGBDFrame) -> np.ndarray:
    """The frame's depth in metres in the *depth* camera (0 = invalid)."""
    raw = read_raw_depth(frame.depth)
    d = raw.astype(np.float64) * seq.depth_scale
    bad = ~np.isfinite(d) | (raw == 0)
    if seq.depth_invalid is not None:
        bad |= raw == seq.depth_invalid
    return np.where(bad, 0.0, d).astype(np.float32)


def register_depth(
    depth: np.ndarray, K_depth: np.ndarray, K_color: np.ndarray, color_to_depth: np.ndarray, width: int, height: int
) -> np.ndarray:
    """Depth of the depth camera re-expressed as z-depth in the colour camera's pixels.

    Each valid depth pixel is lifted, moved into the colour frame and splatted with a z-buffer
    (the nearest surface wins) over a footprint as wide as the colour camera's magnification,
    so a colour camera with the longer focal length gets no pinholes between the samples.
    """
    rows, cols = pixel_centres(*depth.shape)
    d = depth[rows, cols].astype(np.float64)
    valid = d > 0
    uv_d = np.stack([cols[valid] + 0.5, rows[valid] + 0.5], 1)
    depth_to_color = np.linalg.inv(color_to_depth)
    # warp_pixels_np takes camera-to-world poses: put the colour camera at the origin.
    uv_c, z = warp_pixels_np(uv_d, d[valid], K_depth, depth_to_color, K_color, np.eye(4))
    ok = z > 1e-6
    uv_c, z = uv_c[ok], z[ok]
    mag = max(K_color[0, 0] / K_depth[0, 0], K_color[1, 1] / K_depth[1, 1], 1.0)
    # Each sample covers a square centred where it lands, as wide as the spacing of the samples in
    # the colour image plus a margin for the spread that perspective adds (surfaces at an angle).
    half = 0.5 * mag + 0.25
    out = np.full(height * width, np.inf)
    x0 = np.ceil(uv_c[:, 0] - half - 0.5).astype(np.int64)  # first pixel whose centre is in the square
    y0 = np.ceil(uv_c[:, 1] - half - 0.5).astype(np.int64)
    for dy in range(int(np.ceil(mag)) + 1):
        for dx in range(int(np.ceil(mag)) + 1):
            x, y = x0 + dx, y0 + dy
            keep = (
                (x + 0.5 <= uv_c[:, 0] + half)
                & (y + 0.5 <= uv_c[:, 1] + half)
                & (x >= 0)
                & (x < width)
                & (y >= 0)
                & (y < height)
            )
            np.minimum.at(out, y[keep] * width + x[keep], z[keep])
    out[~np.isfinite(out)] = 0.0
    return out.reshape(height, width).astype(np.float32)


def color_depth(seq: RGBDSequence, frame: RGBDFrame, width: int, height: int) -> np.ndarray:
    """The frame's metric depth in its colour camera (registered when the cameras differ)."""
    d = read_metric_depth(seq, frame)
    if seq.registered:
        if d.shape != (height, width):
            raise UserError(
                f"depth is {d.shape[1]}x{d.shape[0]} but the colour image is {width}x{height}; "
                "give the depth camera's intrinsics to register it",
                frame.depth,
            )
        return d
    return register_depth(d, seq.K_depth, seq.K_color, seq.color_to_depth, width, height)


# -- pairing files by frame number ---------------------------------------------------------------


def pair_files(folder: Path) -> list[RGBDFrame]:
    """Colour and depth files of a plain folder, paired by the last number in their names.

    Depth files are the ones with ``depth`` in the name; colour files are the other images.
    """
    files = sorted(p for p in folder.iterdir() if p.is_file())
    # frame_number gives -1 (the "position" passed) to a name without digits: those are left out
    depth = {
        frame_number(p.name, -1): p for p in files if "depth" in p.name.lower() and p.suffix.lower() in DEPTH_SUFFIXES
    }
    color = {
        frame_number(p.name, -1): p
        for p in files
        if "depth" not in p.name.lower() and p.suffix.lower() in IMAGE_SUFFIXES
    }
    depth.pop(-1, None)
    color.pop(-1, None)
    if not color or not depth:
        raise UserError(
            f"no RGB-D frames: found {len(color)} colour images and {len(depth)} depth files "
            "(depth files need 'depth' in their name; both need a frame number)",
            folder,
        )
    unpaired = sorted(set(color) ^ set(depth))
    if unpaired:
        first = unpaired[0]
        lone = color.get(first) or depth.get(first)
        raise UserError(
            f"{len(unpaired)} frame numbers have only a colour image or only a depth file, e.g. {lone.name}", folder
        )
    return [RGBDFrame(f"{n:06d}", color[n], depth[n]) for n in sorted(color)]


# -- to a Scene ----------------------------------------------------------------------------------


def _load_frame(seq: RGBDSequence, frame: RGBDFrame, c2w: np.ndarray) -> ViewData:
    image = io.read_rgb(frame.color)
    h, w = image.shape[:2]
    return ViewData(image, seq.K_color, c2w, depth=color_depth(seq, frame, w, h), name=frame.name)


def sequence_scene(
    seq: RGBDSequence,
    poses: list[np.ndarray] | None = None,
    loader: Callable[[RGBDSequence, RGBDFrame, np.ndarray], ViewData] = _load_frame,
) -> Scene:
    """A Scene of the sequence's frames, posed by ``poses`` or, without them, by the layout's own poses."""
    if poses is None:
        if not seq.has_poses:
            missing = next(f for f in seq.frames if f.cam_to_world is None)
            raise UserError(
                f"frame {missing.name} has no pose; estimate poses with "
                f"'splatdistill data from-rgbd {seq.root or seq.name} --out DATASET'",
                seq.root,
            )
        poses = [f.cam_to_world for f in seq.frames]  # type: ignore[misc]
    w, h = io.image_size(seq.frames[0].color)
    views = [
        ViewRecord(f.name, seq.K_color, c2w, w, h, functools.partial(loader, seq, f, c2w))
        for f, c2w in zip(seq.frames, poses)
    ]
    return Scene(seq.name, views, split=seq.split, class_names=[], root=seq.root)
