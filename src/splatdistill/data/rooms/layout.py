"""Procedural room composition: a box room with textured floor/walls/ceiling, furniture placed without
interpenetration, framed pictures and a ceiling light. Everything is drawn from a seeded Generator.

World frame: metres, z up, floor at z = 0, the room spans x in [-W/2, W/2] and y in [-D/2, D/2].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import assets

CLASS_NAMES: list[str] = [
    "floor",
    "wall",
    "ceiling",
    "chair",
    "sofa",
    "table",
    "bed",
    "cabinet",
    "bookshelf",
    "plant",
    "appliance",
    "other",
    "picture",
]
CLASS_INDEX = {c: i for i, c in enumerate(CLASS_NAMES)}
FLOOR_ID, CEILING_ID, FIRST_WALL_ID, FIRST_OBJECT_ID = 1, 2, 3, 7  # instance ids

GAP = 0.04  # minimum clearance between footprints (m)


@dataclass
class Placement:
    """A furniture model placed in the room: ``world = Rz(yaw) @ v + (x, y, z)``."""

    key: str
    category: str
    x: float
    y: float
    yaw: float
    z: float = 0.0
    size: tuple[float, float, float] = (0.0, 0.0, 0.0)  # model extent (x, y, z) before rotation

    def footprint(self, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray, float]:
        """(centre, half extents, yaw) of the oriented footprint rectangle."""
        return np.array([self.x, self.y]), np.array(self.size[:2]) / 2 + margin, self.yaw

    @property
    def z_range(self) -> tuple[float, float]:
        return self.z, self.z + self.size[2]

    def corners(self) -> np.ndarray:
        c, h, yaw = self.footprint()
        rot = _rot2(yaw)
        local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * h
        return local @ rot.T + c


@dataclass
class Picture:
    """A framed picture hung on wall ``wall`` (0: y=-D/2, 1: x=+W/2, 2: y=+D/2, 3: x=-W/2)."""

    name: str
    wall: int
    along: float  # position along the wall, from its left end (seen from inside), metres
    z: float  # centre height
    width: float
    height: float


@dataclass
class RoomSpec:
    """Everything needed to rebuild one room's geometry and look."""

    seed: int
    kind: str
    width: float
    depth: float
    height: float
    floor_texture: str
    floor_tint: tuple[float, float, float]
    floor_scale: float  # texture tiles per metre
    wall_texture: str
    wall_tint: tuple[float, float, float]
    wall_scale: float
    ceiling_tint: tuple[float, float, float]
    light: tuple[float, float, float]
    placements: list[Placement] = field(default_factory=list)
    pictures: list[Picture] = field(default_factory=list)


def _rot2(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s], [s, c]])


def rects_overlap(a: tuple[np.ndarray, np.ndarray, float], b: tuple[np.ndarray, np.ndarray, float]) -> bool:
    """Separating-axis test for two oriented rectangles (centre, half extents, yaw)."""
    ca, ha, ya = a
    cb, hb, yb = b
    ra, rb = _rot2(ya), _rot2(yb)
    d = cb - ca
    for axis in (ra[:, 0], ra[:, 1], rb[:, 0], rb[:, 1]):
        pa = ha[0] * abs(axis @ ra[:, 0]) + ha[1] * abs(axis @ ra[:, 1])
        pb = hb[0] * abs(axis @ rb[:, 0]) + hb[1] * abs(axis @ rb[:, 1])
        if abs(d @ axis) >= pa + pb:
            return False
    return True


def placements_intersect(a: Placement, b: Placement, margin: float = GAP / 2) -> bool:
    """True when the two objects' oriented bounding boxes (inflated by ``margin``) intersect."""
    (za0, za1), (zb0, zb1) = a.z_range, b.z_range
    if za1 <= zb0 + 1e-6 or zb1 <= za0 + 1e-6:
        return False
    return rects_overlap(a.footprint(margin), b.footprint(margin))


# Room kinds: (category, mode, probability). Modes: wall, corner, free, face (free, facing the room
# centre), around (chairs around the last table), front (a chair at the last desk), beside (next to
# the last bed along its wall), on (on top of the last table or cabinet).
RECIPES: dict[str, list[tuple[str, str, float]]] = {
    "living": [
        ("sofa", "wall", 1.0),
        ("table", "free", 0.8),
        ("sofa", "face", 0.7),
        ("cabinet", "wall", 0.7),
        ("bookshelf", "wall", 0.6),
        ("plant", "corner", 0.8),
        ("plant", "on", 0.4),
        ("other", "wall", 0.4),
    ],
    "bedroom": [
        ("bed", "wall", 1.0),
        ("cabinet", "beside", 0.8),
        ("cabinet", "wall", 0.8),
        ("plant", "corner", 0.7),
        ("chair", "free", 0.5),
        ("bookshelf", "wall", 0.5),
        ("other", "wall", 0.3),
    ],
    "dining": [
        ("table", "free", 1.0),
        ("chair", "around", 1.0),
        ("chair", "around", 1.0),
        ("chair", "around", 0.7),
        ("chair", "around", 0.5),
        ("cabinet", "wall", 0.8),
        ("plant", "corner", 0.8),
        ("plant", "on", 0.4),
        ("bookshelf", "wall", 0.4),
    ],
    "office": [
        ("table", "wall", 1.0),
        ("chair", "front", 1.0),
        ("bookshelf", "wall", 0.9),
        ("plant", "corner", 0.8),
        ("cabinet", "wall", 0.6),
        ("sofa", "wall", 0.5),
        ("other", "free", 0.5),
        ("bookshelf", "wall", 0.4),
    ],
    "kitchen": [
        ("appliance", "wall", 1.0),
        ("cabinet", "wall", 1.0),
        ("table", "free", 0.9),
        ("chair", "around", 0.9),
        ("chair", "around", 0.7),
        ("plant", "corner", 0.6),
        ("other", "free", 0.5),
        ("cabinet", "wall", 0.5),
    ],
}
EXTRAS = [
    ("plant", "corner"),
    ("other", "free"),
    ("chair", "free"),
    ("bookshelf", "wall"),
    ("other", "wall"),
    ("cabinet", "wall"),
    ("sofa", "face"),
]

# Models that suit a mode (kept out of others): beds/desks go against walls, small ones on tables.
ON_TOP = {"littlePlant", "speaker3"}
BEDSIDE = {"bedsideTable2", "drawersCabinet"}
DESKS = {"lbDesk", "desk"}
NOT_FREE = {
    "bed2",
    "bed3",
    "cupboard",
    "wardrobeWithSlidingDoors",
    "refrigerator",
    "largeFridge",
    "bookcase",
    "verticalShelves",
    "televisionCabinet",
}


def _wall_pose(wall: int, along: float, depth_half: float, W: float, D: float) -> tuple[float, float, float]:
    """Centre and yaw for an object whose back touches ``wall``; ``along`` in [-L/2, L/2]."""
    off = depth_half + 0.01
    if wall == 0:  # y = -D/2, front towards +y
        return along, -D / 2 + off, math.pi
    if wall == 1:  # x = +W/2, front towards -x
        return W / 2 - off, along, -math.pi / 2
    if wall == 2:  # y = +D/2, front towards -y
        return -along, D / 2 - off, 0.0
    return -W / 2 + off, -along, math.pi / 2  # x = -W/2, front towards +x


def _front_dir(yaw: float) -> np.ndarray:
    """World direction of the model's front (-y in the asset frame)."""
    return _rot2(yaw) @ np.array([0.0, -1.0])


def _yaw_facing(direction: np.ndarray) -> float:
    return math.atan2(direction[0], -direction[1])


class _Composer:
    def __init__(self, rng: np.random.Generator, W: float, D: float):
        self.rng, self.W, self.D = rng, W, D
        self.placed: list[Placement] = []
        cat = assets.furniture_catalog()
        self.by_category: dict[str, list[str]] = {}
        for key, meta in cat.items():
            self.by_category.setdefault(meta["category"], []).append(key)

    def _size(self, key: str) -> tuple[float, float, float]:
        e = assets.load_furniture(key).extent
        return float(e[0]), float(e[1]), float(e[2])

    def _fits(self, p: Placement) -> bool:
        corners = p.corners()
        if np.any(np.abs(corners[:, 0]) > self.W / 2 - 0.005) or np.any(np.abs(corners[:, 1]) > self.D / 2 - 0.005):
            return False
        return not any(placements_intersect(p, q) for q in self.placed)

    def _candidates(self, category: str, mode: str) -> list[str]:
        keys = sorted(self.by_category.get(category, []))
        if mode == "on":
            return [k for k in keys if k in ON_TOP]
        keys = [k for k in keys if k not in ON_TOP or category != "plant"]
        if mode == "beside":
            return [k for k in keys if k in BEDSIDE]
        if mode in ("free", "face", "around", "front"):
            keys = [k for k in keys if k not in NOT_FREE]
        if category == "table" and mode == "free":
            keys = [k for k in keys if k not in DESKS]
        if category == "table" and mode == "wall":
            keys = [k for k in keys if k in DESKS] or keys
        return keys

    def _last(self, categories: tuple[str, ...]) -> Placement | None:
        for p in reversed(self.placed):
            if p.category in categories and p.z == 0.0:
                return p
        return None

    def try_place(self, category: str, mode: str, tries: int = 40) -> bool:
        keys = self._candidates(category, mode)
        if not keys:
            return False
        rng, W, D = self.rng, self.W, self.D
        key = keys[int(rng.integers(len(keys)))]
        if mode == "around":  # chairs around one table match
            key = self.around_key = getattr(self, "around_key", None) or key
        sx, sy, sz = self._size(key)
        for _ in range(tries):
            z = 0.0
            if mode in ("wall", "corner", "beside"):
                if mode == "beside":
                    bed = self._last(("bed",))
                    if bed is None:
                        return False
                    fwd = _front_dir(bed.yaw)
                    side = np.array([-fwd[1], fwd[0]]) * (1 if rng.random() < 0.5 else -1)
                    back = -fwd * (bed.size[1] / 2 - sy / 2 - 0.01)
                    c = np.array([bed.x, bed.y]) + back + side * (bed.size[0] / 2 + sx / 2 + 0.06)
                    x, y, yaw = c[0], c[1], bed.yaw
                else:
                    wall = int(rng.integers(4))
                    length = W if wall in (0, 2) else D
                    room = length / 2 - sx / 2 - 0.02
                    if room < 0:
                        continue
                    along = rng.uniform(-room, room) if mode == "wall" else room * (1 if rng.random() < 0.5 else -1)
                    x, y, yaw = _wall_pose(wall, along, sy / 2, W, D)
            elif mode in ("free", "face"):
                mx, my = W / 2 - 0.5, D / 2 - 0.5
                x, y = rng.uniform(-mx, mx), rng.uniform(-my, my)
                if mode == "face":
                    yaw = _yaw_facing(-np.array([x, y]) + rng.normal(0, 0.3, 2))
                else:
                    yaw = float(rng.integers(4)) * math.pi / 2 + rng.uniform(-0.3, 0.3)
            elif mode in ("around", "front"):
                anchor = self._last(("table",))
                if anchor is None:
                    return False
                side = int(rng.integers(4)) if mode == "around" else 0
                # Sides in the table's frame: 0 front (-y), 1 right, 2 back, 3 left.
                local_dir = [np.array([0, -1.0]), np.array([1.0, 0]), np.array([0, 1.0]), np.array([-1.0, 0])][side]
                half = anchor.size[1] / 2 if side in (0, 2) else anchor.size[0] / 2
                out = _rot2(anchor.yaw) @ local_dir
                dist = half + sy / 2 + rng.uniform(0.03, 0.2)
                tangent = np.array([-out[1], out[0]]) * rng.uniform(-0.25, 0.25)
                c = np.array([anchor.x, anchor.y]) + out * dist + tangent
                x, y = c[0], c[1]
                yaw = _yaw_facing(-out) + rng.uniform(-0.15, 0.15)
            elif mode == "on":
                supports = [
                    p
                    for p in self.placed
                    if p.category in ("table", "cabinet")
                    and p.z == 0.0
                    and p.size[2] < 1.3
                    and p.size[0] > sx + 0.1
                    and p.size[1] > sy + 0.1
                ]
                if not supports:
                    return False
                s = supports[int(rng.integers(len(supports)))]
                local = np.array(
                    [rng.uniform(-1, 1) * (s.size[0] - sx) / 2 * 0.8, rng.uniform(-1, 1) * (s.size[1] - sy) / 2 * 0.8]
                )
                c = np.array([s.x, s.y]) + _rot2(s.yaw) @ local
                x, y, yaw, z = c[0], c[1], rng.uniform(-math.pi, math.pi), s.size[2]
            else:
                raise ValueError(mode)
            p = Placement(key, category, float(x), float(y), float(yaw), float(z), (sx, sy, sz))
            if self._fits(p):
                self.placed.append(p)
                return True
        return False


def _tint(rng: np.random.Generator, base: tuple[float, float, float], spread: float) -> tuple[float, float, float]:
    c = np.clip(np.array(base) * (1 + rng.uniform(-spread, spread, 3)), 0.05, 1.0)
    return tuple(float(round(v, 4)) for v in c)


FLOOR_TINTS = {
    "planks": [(1.0, 1.0, 1.0), (0.8, 0.75, 0.7), (1.15, 1.1, 1.0)],
    "tiles": [(0.95, 0.93, 0.9), (0.75, 0.72, 0.7), (0.9, 0.85, 0.75)],
    "carpet": [(0.55, 0.45, 0.4), (0.4, 0.45, 0.55), (0.6, 0.55, 0.45), (0.45, 0.5, 0.4)],
    "concrete": [(0.7, 0.7, 0.7), (0.8, 0.76, 0.7)],
}
WALL_TINTS = {
    "plaster": [(0.95, 0.93, 0.88), (0.85, 0.9, 0.95), (0.95, 0.88, 0.8), (0.85, 0.92, 0.85)],
    "brick": [(1.25, 0.8, 0.65), (1.15, 1.1, 1.05), (1.1, 0.95, 0.85)],
    "stripes": [(0.95, 0.9, 0.8), (0.8, 0.88, 0.95), (0.92, 0.85, 0.9)],
}


def compose_room(seed: int, min_objects: int = 4, max_objects: int = 10) -> RoomSpec:
    """Draw one furnished room from ``seed`` (same seed -> same room)."""
    rng = np.random.default_rng(seed)
    for _attempt in range(50):
        kind = list(RECIPES)[int(rng.integers(len(RECIPES)))]
        W, D = float(rng.uniform(3.5, 5.6)), float(rng.uniform(3.5, 5.6))
        H = float(rng.uniform(2.5, 2.9))
        # Bigger rooms get more furniture, so no room looks empty.
        target = int(np.clip(round(W * D / 3.0) + rng.integers(-1, 2), min_objects, max_objects))
        comp = _Composer(rng, W, D)
        for category, mode, prob in RECIPES[kind]:
            if len(comp.placed) >= target:
                break
            if rng.random() < prob:
                comp.try_place(category, mode)
        for _ in range(30):
            if len(comp.placed) >= target:
                break
            category, mode = EXTRAS[int(rng.integers(len(EXTRAS)))]
            comp.try_place(category, mode)
        if len(comp.placed) >= min_objects:
            break
    else:  # pragma: no cover - the recipes always fit in rooms this size
        raise RuntimeError(f"could not furnish a room with seed {seed}")

    ftex = assets.FLOOR_TEXTURES[int(rng.integers(len(assets.FLOOR_TEXTURES)))]
    wtex = assets.WALL_TEXTURES[int(rng.integers(len(assets.WALL_TEXTURES)))]
    ftint = _tint(rng, FLOOR_TINTS[ftex][int(rng.integers(len(FLOOR_TINTS[ftex])))], 0.08)
    wtint = _tint(rng, WALL_TINTS[wtex][int(rng.integers(len(WALL_TINTS[wtex])))], 0.06)
    fscale = {"planks": 0.6, "tiles": 0.8, "carpet": 1.2, "concrete": 0.7}[ftex] * rng.uniform(0.85, 1.15)
    wscale = {"plaster": 0.35, "brick": 0.7, "stripes": 0.6}[wtex] * rng.uniform(0.85, 1.15)
    light = (float(rng.uniform(-W / 4, W / 4)), float(rng.uniform(-D / 4, D / 4)), H - 0.25)
    spec = RoomSpec(
        seed,
        kind,
        W,
        D,
        H,
        ftex,
        ftint,
        float(fscale),
        wtex,
        wtint,
        float(wscale),
        _tint(rng, (0.95, 0.95, 0.93), 0.03),
        light,
        comp.placed,
    )
    spec.pictures = _hang_pictures(rng, spec)
    return spec


def wall_frame(wall: int, W: float, D: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(left end, unit direction along the wall, inward normal, length) of wall ``wall`` seen from inside."""
    if wall == 0:
        return np.array([-W / 2, -D / 2]), np.array([1.0, 0]), np.array([0, 1.0]), W
    if wall == 1:
        return np.array([W / 2, -D / 2]), np.array([0, 1.0]), np.array([-1.0, 0]), D
    if wall == 2:
        return np.array([W / 2, D / 2]), np.array([-1.0, 0]), np.array([0, -1.0]), W
    return np.array([-W / 2, D / 2]), np.array([0, -1.0]), np.array([1.0, 0]), D


def _hang_pictures(rng: np.random.Generator, spec: RoomSpec) -> list[Picture]:
    out: list[Picture] = []
    for _ in range(int(rng.integers(2, 5))):
        name = assets.PICTURES[int(rng.integers(len(assets.PICTURES)))]
        img = assets.picture_texture(name)
        width = float(rng.uniform(0.45, 0.9))
        height = width * img.shape[0] / img.shape[1]
        for _try in range(20):
            wall = int(rng.integers(4))
            length = wall_frame(wall, spec.width, spec.depth)[3]
            if length < width + 0.4:
                continue
            along = float(rng.uniform(0.2 + width / 2, length - 0.2 - width / 2))
            z = float(rng.uniform(1.35, 1.65))
            pic = Picture(name, wall, along, z, width, height)
            box = picture_placement(pic, spec)
            if any(placements_intersect(box, q, 0.03) for q in spec.placements):
                continue
            if any(placements_intersect(box, picture_placement(o, spec), 0.05) for o in out):
                continue
            out.append(pic)
            break
    return out


PICTURE_DEPTH = 0.03


def picture_placement(pic: Picture, spec: RoomSpec) -> Placement:
    """The picture's frame as a box, for the same overlap test as furniture."""
    start, along_dir, inward, _ = wall_frame(pic.wall, spec.width, spec.depth)
    c = start + along_dir * pic.along + inward * (PICTURE_DEPTH / 2 + 0.002)
    yaw = _yaw_facing(inward)
    return Placement(
        "picture",
        "picture",
        float(c[0]),
        float(c[1]),
        yaw,
        pic.z - pic.height / 2,
        (pic.width, PICTURE_DEPTH, pic.height),
    )


# ---------------------------------------------------------------------------------------------
# Geometry assembly: see mesh.py
