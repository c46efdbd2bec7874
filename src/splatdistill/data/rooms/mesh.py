"""Geometry assembly: a composed room (:class:`~.layout.RoomSpec`) as one textured triangle soup with per-face material, instance and semantic ids."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import assets
from .layout import (
    CEILING_ID,
    CLASS_INDEX,
    FIRST_OBJECT_ID,
    FIRST_WALL_ID,
    FLOOR_ID,
    Picture,
    Placement,
    RoomSpec,
    picture_placement,
    wall_frame,
)


@dataclass
class RoomMesh:
    """One triangle soup for the whole room with per-face material, instance and semantic ids."""

    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64
    uv: np.ndarray  # (V, 2) float64
    face_material: np.ndarray  # (F,) int64
    face_instance: np.ndarray  # (F,) int32
    face_semantic: np.ndarray  # (F,) int32
    materials: list[tuple[np.ndarray, str]]  # (rgb tint or diffuse colour, qualified texture name or "")
    instance_names: dict[int, str]  # instance id -> model key / structure name
    instance_boxes: list[Placement]  # furniture boxes (for camera placement)


class _MeshBuilder:
    def __init__(self) -> None:
        self.v: list[np.ndarray] = []
        self.f: list[np.ndarray] = []
        self.uv: list[np.ndarray] = []
        self.fm: list[np.ndarray] = []
        self.fi: list[np.ndarray] = []
        self.fs: list[np.ndarray] = []
        self.materials: list[tuple[np.ndarray, str]] = []
        self._mat_index: dict[tuple, int] = {}
        self.n = 0

    def material(self, rgb: tuple[float, float, float] | np.ndarray, texture: str = "") -> int:
        key = (tuple(round(float(c), 5) for c in rgb), texture)
        if key not in self._mat_index:
            self._mat_index[key] = len(self.materials)
            self.materials.append((np.array(key[0]), texture))
        return self._mat_index[key]

    def add(self, v, f, uv, fmat, instance: int, semantic: int) -> None:
        self.v.append(np.asarray(v, np.float64))
        self.f.append(np.asarray(f, np.int64) + self.n)
        self.uv.append(np.asarray(uv, np.float64))
        self.fm.append(np.broadcast_to(np.asarray(fmat, np.int64), (len(f),)).copy())
        self.fi.append(np.full(len(f), instance, np.int32))
        self.fs.append(np.full(len(f), semantic, np.int32))
        self.n += len(v)

    def quad(self, corners: np.ndarray, uvs: np.ndarray, mat: int, instance: int, semantic: int) -> None:
        self.add(corners, [[0, 1, 2], [0, 2, 3]], uvs, mat, instance, semantic)


def build_room_mesh(spec: RoomSpec) -> RoomMesh:
    """Triangulate the room: shell (slightly overlapping, so no ray slips through a seam), furniture, pictures."""
    b = _MeshBuilder()
    W, D, H = spec.width, spec.depth, spec.height
    e = 0.02  # overlap of shell planes
    floor_mat = b.material(spec.floor_tint, f"surface/{spec.floor_texture}")
    wall_mat = b.material(spec.wall_tint, f"surface/{spec.wall_texture}")
    ceil_mat = b.material(spec.ceiling_tint, "surface/plaster")
    fc = np.array(
        [[-W / 2 - e, -D / 2 - e, 0], [W / 2 + e, -D / 2 - e, 0], [W / 2 + e, D / 2 + e, 0], [-W / 2 - e, D / 2 + e, 0]]
    )
    b.quad(fc, fc[:, :2] * spec.floor_scale, floor_mat, FLOOR_ID, CLASS_INDEX["floor"])
    cc = fc.copy()
    cc[:, 2] = H
    b.quad(cc, cc[:, :2] * 0.3, ceil_mat, CEILING_ID, CLASS_INDEX["ceiling"])
    for wall in range(4):
        start, along_dir, _, length = wall_frame(wall, W, D)
        p0 = start - along_dir * e
        p1 = start + along_dir * (length + e)
        corners = np.array([[*p0, -e], [*p1, -e], [*p1, H + e], [*p0, H + e]])
        s = np.array([0.0, length + 2 * e, length + 2 * e, 0.0])
        uv = np.stack([s, corners[:, 2]], 1) * spec.wall_scale
        b.quad(corners, uv, wall_mat, FIRST_WALL_ID + wall, CLASS_INDEX["wall"])

    names = {FLOOR_ID: "floor", CEILING_ID: "ceiling"} | {FIRST_WALL_ID + w: f"wall{w}" for w in range(4)}
    iid = FIRST_OBJECT_ID
    for p in spec.placements:
        m = assets.load_furniture(p.key)
        c, s = math.cos(p.yaw), math.sin(p.yaw)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        v = m.vertices @ rot.T + np.array([p.x, p.y, p.z])
        # A texture replaces the diffuse colour (as in Sweet Home 3D; Blender exports often pair
        # textures with Kd 0.64 or even 0).
        mats = np.array(
            [
                b.material((1.0, 1.0, 1.0), f"furniture/{mt.texture}") if mt.texture else b.material(mt.diffuse)
                for mt in m.materials
            ]
        )
        b.add(v, m.faces, m.uv, mats[m.face_material], iid, CLASS_INDEX[p.category])
        names[iid] = p.key
        iid += 1
    frame_mat = b.material((0.12, 0.1, 0.09))
    for pic in spec.pictures:
        box = picture_placement(pic, spec)
        _add_picture(b, box, pic, frame_mat, b.material((1.0, 1.0, 1.0), f"picture/{pic.name}"), iid)
        names[iid] = f"picture:{pic.name}"
        iid += 1
    return RoomMesh(
        np.concatenate(b.v),
        np.concatenate(b.f),
        np.concatenate(b.uv),
        np.concatenate(b.fm),
        np.concatenate(b.fi),
        np.concatenate(b.fs),
        b.materials,
        names,
        list(spec.placements),
    )


def _add_picture(b: _MeshBuilder, box: Placement, pic: Picture, frame_mat: int, image_mat: int, iid: int) -> None:
    """A thin box: the front face shows the image inside a 4 cm frame, the rest is frame colour."""
    hx, hy, h = box.size[0] / 2, box.size[1] / 2, box.size[2]
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    centre = np.array([box.x, box.y, box.z])

    def world(pts: np.ndarray) -> np.ndarray:
        return np.asarray(pts, float) @ rot.T + centre

    sem = CLASS_INDEX["picture"]
    lo, hi = np.array([-hx, -hy, 0.0]), np.array([hx, hy, h])
    # Box faces except the front (-y), all frame-coloured.
    for axis in range(3):
        for side in (0, 1):
            if axis == 1 and side == 0:
                continue
            q = np.array([[0, 0], [1, 0], [1, 1], [0, 1]])
            others = [a for a in range(3) if a != axis]
            pts = np.zeros((4, 3))
            pts[:, axis] = (lo, hi)[side][axis]
            for k, a in enumerate(others):
                pts[:, a] = np.where(q[:, k] == 1, hi[a], lo[a])
            b.quad(world(pts), np.zeros((4, 2)), frame_mat, iid, sem)
    # Front: frame border + image inset.
    fw = 0.04
    y = -hy
    outer = np.array([[-hx, y, 0], [hx, y, 0], [hx, y, h], [-hx, y, h]])
    inner = np.array(
        [
            [-hx + fw, y - 0.001, fw],
            [hx - fw, y - 0.001, fw],
            [hx - fw, y - 0.001, h - fw],
            [-hx + fw, y - 0.001, h - fw],
        ]
    )
    b.quad(world(outer), np.zeros((4, 2)), frame_mat, iid, sem)
    b.quad(world(inner), np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float), image_mat, iid, sem)
