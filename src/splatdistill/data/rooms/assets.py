"""The committed CC0 furniture subset and the room textures (see ``assets/SOURCES.md``).

Furniture comes from ``assets/furniture`` (converted by :mod:`.import_assets`). Floor, wall and
picture textures come from scikit-image's CC0/public-domain sample images, which ship with the pip
package, plus a few procedural patterns generated here from fixed seeds (so they are ours).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

ASSETS = Path(__file__).resolve().parents[2] / "assets"
FURNITURE_DIR = ASSETS / "furniture"


@dataclass(frozen=True)
class Material:
    """Diffuse colour (linear-ish RGB in [0, 1]) or a texture name; the texture wins when set."""

    diffuse: tuple[float, float, float]
    texture: str = ""


@dataclass
class FurnitureModel:
    """One mesh in the asset frame: metres, z up, front towards -y, base on z = 0."""

    key: str
    name: str
    category: str
    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64
    uv: np.ndarray  # (V, 2) float64
    face_material: np.ndarray  # (F,) int64
    materials: list[Material]

    @property
    def extent(self) -> np.ndarray:
        """Axis-aligned size (x, y, z) in metres."""
        return self.vertices.max(0) - self.vertices.min(0)


@lru_cache(maxsize=1)
def furniture_catalog() -> dict[str, dict]:
    """Metadata of every committed model (``catalog.json``), keyed by model key."""
    return json.loads((FURNITURE_DIR / "catalog.json").read_text())["models"]


@cache
def load_furniture(key: str) -> FurnitureModel:
    meta = furniture_catalog()[key]
    with np.load(FURNITURE_DIR / f"{key}.npz") as z:
        v = z["vertices"].astype(np.float64)
        f = z["faces"].astype(np.int64)
        uv = z["uv"].astype(np.float64)
        fm = z["face_material"].astype(np.int64)
    mats = [Material(tuple(m["diffuse"]), m["texture"]) for m in meta["materials"]]
    return FurnitureModel(key, meta["name"], meta["category"], v, f, uv, fm, mats)


def categories() -> list[str]:
    """Furniture categories present in the catalogue, in a fixed order."""
    order = ["chair", "sofa", "table", "bed", "cabinet", "bookshelf", "plant", "appliance", "other"]
    present = {m["category"] for m in furniture_catalog().values()}
    return [c for c in order if c in present] + sorted(present - set(order))


# ---------------------------------------------------------------------------------------------
# Textures: float32 RGB in [0, 1], square-ish, tileable enough for floors and walls.


@cache
def furniture_texture(name: str) -> np.ndarray:
    with Image.open(FURNITURE_DIR / "textures" / name) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def _gray3(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    a = a / 255.0 if a.max() > 1.5 else a
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]


def _smooth_noise(rng: np.random.Generator, size: int, scales: tuple[int, ...]) -> np.ndarray:
    """Tileable fractal noise in [0, 1]: sum of bilinearly upsampled periodic random grids."""
    out = np.zeros((size, size), np.float32)
    for i, s in enumerate(scales):
        g = rng.random((s, s)).astype(np.float32)
        # Periodic bilinear upsampling keeps the result tileable.
        x = (np.arange(size) + 0.5) * s / size - 0.5
        i0 = np.floor(x).astype(int)
        w = (x - i0).astype(np.float32)
        a, b = i0 % s, (i0 + 1) % s
        rows = g[a] * (1 - w)[:, None] + g[b] * w[:, None]
        up = rows[:, a] * (1 - w)[None] + rows[:, b] * w[None]
        out += up / (2**i)
    out -= out.min()
    return out / max(out.max(), 1e-6)


def _planks(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Wooden floor planks: 4 rows of staggered planks, per-plank tone, streaky grain."""
    grain = _smooth_noise(rng, size, (4, 16, 64))
    streak = np.repeat(_smooth_noise(rng, size, (8, 32, 128))[:1], size, axis=0).T  # along x
    rows = 8
    h = size // rows
    tone = np.ones((size, size), np.float32)
    for r in range(rows):
        offset = int(rng.integers(0, size))
        cut = [offset]
        seg = np.zeros(size, int)
        for c in sorted(cut):
            seg[c:] += 1
        shades = 0.8 + 0.35 * rng.random(2)
        tone[r * h : (r + 1) * h] = shades[seg % 2][None, :]
        tone[r * h, :] = 0.45  # gap between rows
        for c in cut:
            tone[r * h : (r + 1) * h, c] = 0.5
    val = tone * (0.75 + 0.15 * grain + 0.2 * streak)
    base = np.array([0.62, 0.42, 0.25], np.float32)
    return np.clip(val[..., None] * base, 0, 1)


def _tiles(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Square tiles with grout; a marble-like speckle from the gravel texture."""
    from skimage import data

    gravel = _gray3(data.gravel())[::2, ::2][:size, :size, 0]
    val = 0.85 + 0.03 * (gravel - gravel.mean()) / (gravel.std() + 1e-6)
    n = 4
    t = size // n
    grout = np.zeros((size, size), bool)
    grout[::t, :] = grout[:, ::t] = True
    grout[1::t, :] = grout[:, 1::t] = True
    val = np.where(grout, 0.55, val)
    return np.clip(np.repeat(val[..., None], 3, axis=2), 0, 1).astype(np.float32)


def _plaster(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    n = _smooth_noise(rng, size, (8, 32, 128))
    return np.repeat((0.88 + 0.12 * n)[..., None], 3, axis=2).astype(np.float32)


def _stripes(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Wallpaper: vertical stripes with a faint diamond motif."""
    x = np.arange(size)[None, :] / size
    y = np.arange(size)[:, None] / size
    stripes = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * 4 * x))
    motif = (np.abs(((x * 8) % 1) - 0.5) + np.abs(((y * 8) % 1) - 0.5)) < 0.18
    val = 0.78 + 0.14 * stripes - 0.12 * motif + 0.04 * _smooth_noise(rng, size, (16, 64))
    return np.repeat(val[..., None], 3, axis=2).astype(np.float32)


@cache
def surface_texture(name: str) -> np.ndarray:
    """A named floor/wall/ceiling texture, float32 RGB in [0, 1], before the per-room tint."""
    from skimage import data

    rng = np.random.default_rng(sum(map(ord, name)))  # fixed per name: textures never change
    if name == "brick":
        return np.ascontiguousarray(_gray3(data.brick())[::2, ::2].transpose(1, 0, 2))  # courses horizontal
    if name == "carpet":  # scikit-image's grass at low contrast reads as carpet pile
        g = _gray3(data.grass())[::2, ::2]
        return (0.7 + 0.3 * (g - g.mean()) / (g.std() + 1e-6) * 0.35).clip(0, 1).astype(np.float32)
    if name == "concrete":
        g = _gray3(data.gravel())[::2, ::2]
        return (0.75 + 0.25 * (g - g.mean()) / (g.std() + 1e-6) * 0.35).clip(0, 1).astype(np.float32)
    if name == "planks":
        return _planks(rng)
    if name == "tiles":
        return _tiles(rng)
    if name == "plaster":
        return _plaster(rng)
    if name == "stripes":
        return _stripes(rng)
    raise KeyError(name)


FLOOR_TEXTURES = ("planks", "tiles", "carpet", "concrete")
WALL_TEXTURES = ("plaster", "brick", "stripes", "plaster")
PICTURES = ("coffee", "chelsea", "camera", "rocket", "hubble_deep_field")


@cache
def picture_texture(name: str) -> np.ndarray:
    """A framed picture for the walls, from scikit-image's CC0 / public-domain photographs."""
    from skimage import data

    img = getattr(data, name)()
    img = _gray3(img) if img.ndim == 2 else img[..., :3].astype(np.float32) / 255.0
    h, w = img.shape[:2]
    step = max(1, int(max(h, w) // 256))
    return np.ascontiguousarray(img[::step, ::step])


def texture(name: str) -> np.ndarray:
    """Any texture by its qualified name: ``furniture/<file>``, ``surface/<name>``, ``picture/<name>``."""
    kind, _, rest = name.partition("/")
    if kind == "furniture":
        return furniture_texture(rest)
    if kind == "surface":
        return surface_texture(rest)
    if kind == "picture":
        return picture_texture(rest)
    raise KeyError(name)
