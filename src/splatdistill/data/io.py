"""Reading and writing the per-view maps (images, depth, normals, ids) with clear errors.

Every reader raises :class:`~splatdistill.errors.UserError` naming the file when it is missing or
cannot be decoded, so a broken file in a dataset is reported, not turned into a traceback.
Writers are atomic (temporary file + rename) so an interrupted build never leaves a half file.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from splatdistill.atomic import atomic_write_bytes
from splatdistill.errors import UserError

DEPTH_SCALE = 4000.0  # 16-bit depth PNG units per metre (0.25 mm steps, up to 16.38 m)
#: the largest image splatdistill decodes (a 61 MP photo fits); a header declaring more is refused before
#: decoding, since one 12000x12000 PNG alone needs ~4.5 GB to check (PIL's own bomb limit is 179 MP)
MAX_IMAGE_PIXELS = 1 << 26


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def _save_png(path: Path, img: Image.Image) -> None:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    atomic_write_bytes(path, buf.getvalue())


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


def image_header(path: Path) -> tuple[int, int, str]:
    """(width, height, PIL mode) from the header alone; refuses non-images and images over
    :data:`MAX_IMAGE_PIXELS` before any pixel is decoded."""
    if not path.is_file():
        raise UserError("file not found", path)
    try:
        with warnings.catch_warnings():  # PIL's bomb warning: the cap below says it in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h, mode = im.size[0], im.size[1], im.mode
    except Image.DecompressionBombError:
        w, h, mode = _declared_size(path)
    except UnidentifiedImageError:
        raise UserError("not an image (PIL does not recognise its format)", path) from None
    except Exception as exc:  # PIL raises many types for a file that is not an image
        raise UserError(
            f"broken image file, truncated or damaged ({type(exc).__name__}: {str(exc)[:80]})", path
        ) from None
    if w * h > MAX_IMAGE_PIXELS:
        raise UserError(
            f"image declares {w}x{h} pixels ({w * h / 1e6:.0f} MP), over splatdistill's limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP; downscale it",
            path,
        )
    return w, h, mode


def _declared_size(path: Path) -> tuple[int, int, str]:
    """The size of an image PIL refuses to open (its bomb limit), read with that limit lifted for the header."""
    old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as im:
            return im.size[0], im.size[1], im.mode
    finally:
        Image.MAX_IMAGE_PIXELS = old


def decoded_size(path: Path) -> tuple[int, int]:
    """(width, height) after decoding every pixel once: a truncated JPEG passes header checks and
    ``verify()``, and only fails here (or, later, deep inside another library)."""
    with _open(path) as im:
        return im.size


def image_mode(path: Path) -> str:
    return image_header(path)[2]


def _open(path: Path) -> Image.Image:
    image_header(path)
    try:
        im = Image.open(path)
        im.load()
        return im
    except Exception as exc:  # PIL raises many types for corrupt data
        raise UserError(f"cannot decode image ({exc})", path) from None


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError("file not found", path)
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                return z[z.files[0]]
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise UserError(f"cannot read array ({exc})", path) from None


# -- writers -----------------------------------------------------------------------------------


def write_rgb(path: Path, image: np.ndarray) -> None:
    """float [0, 1] or uint8 (H, W, 3) -> 8-bit PNG/JPEG by suffix."""
    arr = image if image.dtype == np.uint8 else (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=95)
        atomic_write_bytes(path, buf.getvalue())
    else:
        _save_png(path, Image.fromarray(arr))


def write_depth(path: Path, depth: np.ndarray, scale: float = DEPTH_SCALE) -> None:
    """Metric z-depth -> 16-bit PNG (``round(depth * scale)``, 0 invalid) or float32 ``.npy``."""
    if path.suffix == ".npy":
        _save_npy(path, depth.astype(np.float32))
        return
    d = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0) * scale
    if d.max(initial=0) > 65535:
        raise ValueError(f"depth up to {depth.max():.2f} m does not fit a 16-bit PNG at scale {scale}")
    _save_png(path, Image.fromarray(np.round(d).astype(np.uint16)))


def write_normals(path: Path, normals: np.ndarray) -> None:
    """Unit normals -> 8-bit RGB PNG ``(n + 1) / 2 * 255`` with (0, 0, 0) invalid, or ``.npy``."""
    if path.suffix == ".npy":
        _save_npy(path, normals.astype(np.float32))
        return
    valid = np.any(normals != 0, axis=-1, keepdims=True)
    enc = np.where(valid, np.clip(np.round((normals + 1) * 127.5), 1, 255), 0).astype(np.uint8)
    _save_png(path, Image.fromarray(enc))


def write_ids(path: Path, ids: np.ndarray, offset: int = 0) -> None:
    """Integer id map -> 16-bit PNG of ``ids + offset`` (semantic uses offset 1 so -1 is stored as 0)."""
    if path.suffix == ".npy":
        _save_npy(path, ids.astype(np.int32))
        return
    v = ids.astype(np.int64) + offset
    if v.min(initial=0) < 0 or v.max(initial=0) > 65535:
        raise ValueError(f"ids out of the 16-bit range after offset {offset}")
    _save_png(path, Image.fromarray(v.astype(np.uint16)))


# -- readers -----------------------------------------------------------------------------------


def read_rgb(path: Path) -> np.ndarray:
    im = _open(path)
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def read_depth(path: Path, scale: float = DEPTH_SCALE) -> np.ndarray:
    if path.suffix in (".npy", ".npz"):
        d = _load_npy(path).astype(np.float32)
        if d.ndim == 3 and d.shape[-1] == 1:
            d = d[..., 0]
        return d
    im = _open(path)
    arr = np.asarray(im)
    if arr.ndim != 2:
        raise UserError(f"depth PNG must be single-channel 16-bit, got mode {im.mode}", path)
    return (arr.astype(np.float64) / scale).astype(np.float32)


def read_normals(path: Path) -> np.ndarray:
    if path.suffix in (".npy", ".npz"):
        return _load_npy(path).astype(np.float32)
    im = _open(path)
    if im.mode != "RGB":
        raise UserError(f"normals PNG must be 8-bit RGB, got mode {im.mode}", path)
    enc = np.asarray(im).astype(np.float32)
    valid = np.any(enc != 0, axis=-1, keepdims=True)
    n = enc / 127.5 - 1.0
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-8)
    return np.where(valid, n, 0.0).astype(np.float32)


def read_ids(path: Path, offset: int = 0) -> np.ndarray:
    if path.suffix in (".npy", ".npz"):
        return _load_npy(path).astype(np.int32)
    im = _open(path)
    arr = np.asarray(im)
    if arr.ndim != 2:
        raise UserError(f"id map must be a single-channel PNG, got mode {im.mode}", path)
    return (arr.astype(np.int64) - offset).astype(np.int32)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header, after checking the whole file decodes structurally."""
    image_header(path)
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()  # checks chunk CRCs / truncation without decoding pixels
        return size
    except Exception as exc:
        raise UserError(f"broken image file ({exc})", path) from None


def map_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of a map file from its header only (PNG or .npy), None if unreadable."""
    try:
        if path.suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            return int(arr.shape[1]), int(arr.shape[0])
        if path.suffix == ".npz":
            with np.load(path) as z:
                a = z[z.files[0]]
            return int(a.shape[1]), int(a.shape[0])
        with Image.open(path) as im:
            return im.size
    except Exception:
        return None


def depth_list_lines(list_file: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, columns) of a depth split list (``<image> <depth or None> [focal]`` per line, the
    layout of the depth-estimation literature's NYUv2/KITTI/ScanNet lists): blank lines and frames with
    depth ``None`` skipped, as the reference loaders do; a line with fewer than two columns is named."""
    for n, line in enumerate(list_file.read_text(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise UserError(f"line {n}: expected '<image> <depth or None> [focal]'", list_file)
        if parts[1] != "None":
            yield n, parts
