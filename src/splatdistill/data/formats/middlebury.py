"""The Middlebury 2014 Motorcycle stereo pair (shipped by scikit-image) as a two-view scene with metric depth.

Calibration (from ``skimage.data.stereo_motorcycle``'s docstring, valid for its 741x500 images):
f = 994.978 px, cx = 311.193, cy = 254.877, doffs = 31.086 px (cx_right - cx_left), baseline
193.001 mm. The pair is rectified: the right camera is the left one moved by the baseline along
its x axis, so ``cam_to_world`` is the identity for the left view and a pure +x translation for the
right one. Depth: ``Z = baseline * f / (disparity + doffs)``; pixels without ground truth
(infinite disparity) get 0. Middlebury gives disparity for the left image only; the right view's
depth is the left depth forward-warped (``x_right = x_left - d``, nearest pixel, nearest surface
wins), so right pixels that the left camera does not see have depth 0.

The docstring gives cx in integer-centred pixel coordinates; ours put pixel centres at +0.5, so
0.5 is added. (Depth and the left<->right reprojection do not depend on this shift.)
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from splatdistill.data.scene import Scene, ViewData, ViewRecord

FOCAL = 994.978
CX, CY = 311.193, 254.877
DOFFS = 31.086
BASELINE_M = 0.193001


def _resize_rgb(img: np.ndarray, w: int, h: int) -> np.ndarray:
    if img.shape[1] == w and img.shape[0] == h:
        return img.astype(np.float32) / 255.0
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BOX), dtype=np.float32) / 255.0


def _resize_nearest(a: np.ndarray, w: int, h: int) -> np.ndarray:
    """Sample at the new pixel centres (no mixing of depths across edges)."""
    H, W = a.shape[:2]
    ys = np.minimum(((np.arange(h) + 0.5) * H / h).astype(int), H - 1)
    xs = np.minimum(((np.arange(w) + 0.5) * W / w).astype(int), W - 1)
    return a[ys][:, xs]


@functools.lru_cache(maxsize=4)
def _full_resolution() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from skimage import data

    left, right, disp = data.stereo_motorcycle()
    disp = np.asarray(disp, dtype=np.float64)
    if disp.ndim == 3:
        disp = disp[..., 0]
    valid = np.isfinite(disp)
    depth_l = np.where(valid, BASELINE_M * FOCAL / (np.where(valid, disp, 0) + DOFFS), 0.0)
    # Forward-warp to the right view, nearest surface wins.
    W = disp.shape[1]
    ys, xs = np.nonzero(valid)
    xr = np.floor(xs + 0.5 - disp[ys, xs]).astype(int)
    inside = (xr >= 0) & (xr < W)
    ys, xs, xr = ys[inside], xs[inside], xr[inside]
    z = depth_l[ys, xs]
    order = np.argsort(-z)  # far first, so near ones overwrite
    depth_r = np.zeros_like(depth_l)
    depth_r[ys[order], xr[order]] = z[order]
    return left, right, depth_l.astype(np.float32), depth_r.astype(np.float32)


def _view(which: int, width: int, height: int) -> ViewData:
    left, right, dl, dr = _full_resolution()
    img = (left, right)[which]
    depth = (dl, dr)[which]
    K, c2w = _camera(which, width, height, img.shape[1], img.shape[0])
    return ViewData(
        image=_resize_rgb(img, width, height),
        K=K,
        cam_to_world=c2w,
        depth=_resize_nearest(depth, width, height).astype(np.float32),
        name=("left", "right")[which],
    )


def _camera(which: int, width: int, height: int, W: int, H: int) -> tuple[np.ndarray, np.ndarray]:
    sx, sy = width / W, height / H
    cx = (CX + 0.5 + (DOFFS if which == 1 else 0.0)) * sx
    K = np.array([[FOCAL * sx, 0.0, cx], [0.0, FOCAL * sy, (CY + 0.5) * sy], [0.0, 0.0, 1.0]])
    c2w = np.eye(4)
    c2w[0, 3] = BASELINE_M if which == 1 else 0.0
    return K, c2w


def load_middlebury(width: int | None = None) -> Scene:
    """The Motorcycle pair as a Scene (views ``left``, ``right``); ``width`` resizes (K scaled to match)."""
    W, H = 741, 500
    w = W if width is None else int(width)
    h = H if width is None else max(1, round(H * w / W))
    views = []
    for which in (0, 1):
        K, c2w = _camera(which, w, h, W, H)
        views.append(ViewRecord(("left", "right")[which], K, c2w, w, h, functools.partial(_view, which, w, h)))
    return Scene(name="middlebury_motorcycle", views=views, split="test", class_names=[], root=None)
