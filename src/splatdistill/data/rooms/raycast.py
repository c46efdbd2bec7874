"""Headless CPU renderer for rooms: Embree ray casting (trimesh + embreex) with exact ground truth.

Per pixel centre (OpenCV camera, centre of pixel (u, v) at (u + 0.5, v + 0.5)) one ray gives the
ground truth: z-depth, the geometric face normal (camera frame, facing the camera), instance and
semantic ids. Colour averages four rays at (+-0.25, +-0.25) px, each shaded (in float32) with
mip-mapped texture lookups, an ambient term, a shadowed ceiling point light and a soft fill light.
Embree intersects in float32; the ground-truth hit distance is recomputed in float64 on the hit
triangle.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import assets
from .mesh import RoomMesh

SUPERSAMPLE_OFFSETS = np.array([[-0.25, -0.25], [0.25, -0.25], [-0.25, 0.25], [0.25, 0.25]])


@dataclass
class Rendered:
    image: np.ndarray  # (H, W, 3) float32 [0, 1]
    depth: np.ndarray  # (H, W) float32, 0 = no hit
    normals: np.ndarray  # (H, W, 3) float32 camera frame, 0 = no hit
    instance: np.ndarray  # (H, W) int32
    semantic: np.ndarray  # (H, W) int32, -1 = no hit


def _mip_pyramid(img: np.ndarray) -> list[np.ndarray]:
    levels = [np.ascontiguousarray(img, dtype=np.float32)]
    while min(levels[-1].shape[:2]) > 1:
        a = levels[-1]
        h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
        a = a[:h, :w]
        levels.append(0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]))
    return levels


def _bilinear_wrap(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample ``tex`` at UV (origin bottom-left, as in OBJ files), repeating outside [0, 1]."""
    h, w = tex.shape[:2]
    x = u * w - 0.5
    y = (1.0 - v) * h - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0 = x0.astype(np.int64) % w
    y0 = y0.astype(np.int64) % h
    x1, y1 = (x0 + 1) % w, (y0 + 1) % h
    return (
        tex[y0, x0] * (1 - fx) * (1 - fy)
        + tex[y0, x1] * fx * (1 - fy)
        + tex[y1, x0] * (1 - fx) * fy
        + tex[y1, x1] * fx * fy
    )


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty_like(a)
    out[:, 0] = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    out[:, 1] = a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2]
    out[:, 2] = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return out


@lru_cache(maxsize=8)
def _camera_rays(K_bytes: bytes, width: int, height: int, du_bytes: bytes, dv_bytes: bytes) -> np.ndarray:
    """Unit camera-frame ray directions for pixel centres + sub-pixel offsets (cached: K rarely changes)."""
    K = np.frombuffer(K_bytes).reshape(3, 3)
    du, dv = np.frombuffer(du_bytes), np.frombuffer(dv_bytes)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pu = (u.ravel()[None, :] + 0.5 + du[:, None]).ravel()
    pv = (v.ravel()[None, :] + 0.5 + dv[:, None]).ravel()
    d = np.stack([pu, pv, np.ones_like(pu)], 1) @ np.linalg.inv(K).T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d.setflags(write=False)
    return d


class _Caster:
    """First-hit and occlusion queries: Embree (embreex) directly, else trimesh's slow pure-numpy caster."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        self.vertices, self.faces = vertices, faces
        try:
            from embreex import rtcore_scene
            from embreex.mesh_construction import TriangleMesh
        except ImportError:  # pragma: no cover - embreex ships for x86_64 only
            import trimesh
            from trimesh.ray.ray_triangle import RayMeshIntersector

            self.scene = None
            self.fallback = RayMeshIntersector(trimesh.Trimesh(vertices, faces, process=False, validate=False))
            return
        self.scene = rtcore_scene.EmbreeScene()
        TriangleMesh(scene=self.scene, vertices=vertices.astype(np.float32), indices=faces.astype(np.int32))

    def first(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        if self.scene is None:  # pragma: no cover
            return np.asarray(self.fallback.intersects_first(origins, dirs), dtype=np.int64)
        o = np.ascontiguousarray(origins, dtype=np.float32)
        return self.scene.run(o, np.ascontiguousarray(dirs, dtype=np.float32)).astype(np.int64)

    def first_uvt(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(face, t, barycentrics) in float32 straight from Embree (for shading)."""
        if self.scene is None:  # pragma: no cover
            face = self.first(origins, dirs)
            t, bary = _moller_trumbore(self.vertices[self.faces], face, origins, dirs)
            return face, t.astype(np.float32), bary.astype(np.float32)
        o = np.ascontiguousarray(origins, dtype=np.float32)
        r = self.scene.run(o, np.ascontiguousarray(dirs, dtype=np.float32), output=1)
        face = r["primID"].astype(np.int64)
        face[r["geomID"] < 0] = -1
        return face, r["tfar"], np.stack([r["u"], r["v"]], 1)

    def occluded(self, origins: np.ndarray, dirs: np.ndarray, tmax: np.ndarray) -> np.ndarray:
        """True where something lies along the ray before ``tmax``."""
        if self.scene is None:  # pragma: no cover
            face = self.first(origins, dirs)
            t, _ = _moller_trumbore(self.vertices[self.faces], face, origins, dirs)
            return (face >= 0) & (t < tmax)
        o = np.ascontiguousarray(origins, dtype=np.float32)
        d = np.ascontiguousarray(dirs, dtype=np.float32)
        return self.scene.run(o, d, dists=np.ascontiguousarray(tmax, dtype=np.float32), query="OCCLUDED") >= 0


def _moller_trumbore(
    tri_all: np.ndarray, face: np.ndarray, origins: np.ndarray, dirs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distance and barycentrics of each ray on its (given) hit triangle, in the rays' precision."""
    t = np.full(len(face), np.inf, dtype=dirs.dtype)
    bary = np.zeros((len(face), 2), dtype=dirs.dtype)
    hit = face >= 0
    if hit.any():
        tri = tri_all[face[hit]].astype(dirs.dtype, copy=False)
        o, d = origins[hit], dirs[hit]
        e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        p = _cross(d, e2)
        det = np.einsum("ij,ij->i", e1, p)
        inv = 1.0 / np.where(np.abs(det) < 1e-30, 1e-30, det)
        s = o - tri[:, 0]
        u = np.einsum("ij,ij->i", s, p) * inv
        q = _cross(s, e1)
        v = np.einsum("ij,ij->i", d, q) * inv
        t[hit] = np.einsum("ij,ij->i", e2, q) * inv
        bary[hit] = np.stack([u, v], 1)
    return t, bary


class RoomRenderer:
    """Renders one :class:`RoomMesh` from any OpenCV camera."""

    def __init__(
        self,
        mesh: RoomMesh,
        light: tuple[float, float, float],
        ambient: float = 0.38,
        light_power: float = 0.75,
        fill: float = 0.22,
    ):
        self.mesh = mesh
        self.caster = _Caster(mesh.vertices, mesh.faces)
        tri = mesh.vertices[mesh.faces]
        self.tri = tri
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        area2 = np.linalg.norm(n, axis=1)
        self.face_normals = n / np.maximum(area2, 1e-20)[:, None]
        self.face_normals32 = self.face_normals.astype(np.float32)
        self.light = np.asarray(light, float)
        self.ambient, self.light_power, self.fill = ambient, light_power, fill
        self.fill_dir = np.array([0.45, -0.6, 0.66])
        self.fill_dir /= np.linalg.norm(self.fill_dir)
        self.pyramids: list[list[np.ndarray] | None] = []
        for _rgb, name in mesh.materials:
            self.pyramids.append(_mip_pyramid(assets.texture(name)) if name else None)
        # Texels per metre of each face (for choosing the mip level).
        uvt = mesh.uv[mesh.faces]
        e1, e2 = uvt[:, 1] - uvt[:, 0], uvt[:, 2] - uvt[:, 0]
        uv_area2 = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
        size = np.array([0.0 if p is None else float(np.sqrt(p[0].shape[0] * p[0].shape[1])) for p in self.pyramids])
        tex_size = size[mesh.face_material]
        self.texel_density = np.sqrt(uv_area2 / np.maximum(area2, 1e-20)) * tex_size

    # -- ray casting -----------------------------------------------------------------------------
    def cast(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First hit per ray: (face index or -1, distance t, barycentrics (N, 2)), recomputed in float64."""
        face = self.caster.first(origins, dirs)
        t, bary = _moller_trumbore(self.tri, face, np.asarray(origins, np.float64), np.asarray(dirs, np.float64))
        return face, t, bary

    # -- shading ---------------------------------------------------------------------------------
    def _albedo(self, face: np.ndarray, bary: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        mats = self.mesh.face_material[face]
        out = np.empty((len(face), 3), np.float32)
        for m in np.unique(mats):
            sel = np.nonzero(mats == m)[0]
            rgb, _name = self.mesh.materials[m]
            pyr = self.pyramids[m]
            if pyr is None:
                out[sel] = rgb
                continue
            f = face[sel]
            tri_uv = self.mesh.uv[self.mesh.faces[f]]
            b = bary[sel]
            uv = tri_uv[:, 0] * (1 - b[:, :1] - b[:, 1:]) + tri_uv[:, 1] * b[:, :1] + tri_uv[:, 2] * b[:, 1:]
            texels = footprint[sel] * self.texel_density[f]
            # Nearest mip level, bilinear within it (the 4 sub-pixel samples smooth level seams).
            level = np.clip(np.round(np.log2(np.maximum(texels, 1.0))), 0, len(pyr) - 1).astype(int)
            col = np.zeros((len(sel), 3), np.float32)
            for lv in np.unique(level):
                k = level == lv
                col[k] = _bilinear_wrap(pyr[lv], uv[k, 0], uv[k, 1])
            out[sel] = col * rgb
        return out

    def shade(self, origins: np.ndarray, dirs: np.ndarray, focal: float, shadows: bool = True) -> tuple:
        """Colour of each ray plus its (face, t) so the caller can reuse the centre ray's hit."""
        face, t, bary = self.caster.first_uvt(origins, dirs)
        col = np.zeros((len(face), 3), np.float32)
        hit = np.nonzero(face >= 0)[0]
        if len(hit) == 0:
            return col, face, t
        f, d = face[hit], dirs[hit]
        n = self.face_normals32[f]
        cos = np.einsum("ij,ij->i", n, d)
        n[cos > 0] *= -1
        cos = np.abs(cos)
        p = origins[hit] + d * t[hit, None]
        footprint = t[hit] / focal * 0.5 / np.maximum(cos, 0.2)
        albedo = self._albedo(f, bary[hit], footprint)
        to_light = self.light.astype(np.float32) - p
        dist = np.linalg.norm(to_light, axis=1)
        ldir = to_light / dist[:, None]
        ndl = np.clip(np.einsum("ij,ij->i", n, ldir), 0, None)
        vis = np.ones(len(hit), np.float32)
        if shadows:
            lit = np.nonzero(ndl > 0)[0]
            if len(lit):
                so = p[lit] + n[lit] * 1e-3
                vis[lit] = np.where(self.caster.occluded(so, ldir[lit], dist[lit] - 2e-3), 0.0, 1.0)
        falloff = 1.0 / (1.0 + (dist / 3.5) ** 2)
        fill = np.clip(n @ self.fill_dir.astype(np.float32), 0, None) * self.fill + 0.06 * n[:, 2]
        light = self.ambient + self.light_power * 2.0 * ndl * vis * falloff + fill
        col[hit] = np.clip(albedo * light[:, None], 0, 1)
        return col, face, t

    def render(
        self,
        K: np.ndarray,
        cam_to_world: np.ndarray,
        width: int,
        height: int,
        supersample: bool = True,
        shadows: bool = True,
    ) -> Rendered:
        """Render colour and ground truth for one camera."""
        n_pix = width * height
        R, c = cam_to_world[:3, :3], cam_to_world[:3, 3]
        focal = float(np.sqrt(K[0, 0] * K[1, 1]))

        def rays(du: np.ndarray, dv: np.ndarray) -> np.ndarray:
            return _camera_rays(K.tobytes(), width, height, du.tobytes(), dv.tobytes())

        # Ground truth: one float64 ray through each pixel centre.
        centre_dcam = rays(np.zeros(1), np.zeros(1))
        centre_world = centre_dcam @ R.T
        centre_face, centre_t, _ = self.cast(np.broadcast_to(c, centre_world.shape), centre_world)
        # Colour: all sub-pixel samples in one float32 batch (fewer, larger numpy/Embree calls).
        offsets = SUPERSAMPLE_OFFSETS if supersample else np.zeros((1, 2))
        dworld = rays(offsets[:, 0], offsets[:, 1]).astype(np.float32) @ R.T.astype(np.float32)
        col, _, _ = self.shade(np.broadcast_to(c.astype(np.float32), dworld.shape), dworld, focal, shadows)
        image = col.reshape(len(offsets), height, width, 3).mean(0).astype(np.float32)
        hit = centre_face >= 0
        depth = np.zeros(n_pix)
        depth[hit] = centre_t[hit] * centre_dcam[hit, 2]
        normals = np.zeros((n_pix, 3))
        n_world = self.face_normals[centre_face[hit]]
        n_cam = n_world @ R
        flip = np.einsum("ij,ij->i", n_cam, centre_dcam[hit]) > 0
        n_cam[flip] *= -1
        normals[hit] = n_cam
        instance = np.zeros(n_pix, np.int32)
        instance[hit] = self.mesh.face_instance[centre_face[hit]]
        semantic = np.full(n_pix, -1, np.int32)
        semantic[hit] = self.mesh.face_semantic[centre_face[hit]]
        return Rendered(
            image,
            depth.reshape(height, width).astype(np.float32),
            normals.reshape(height, width, 3).astype(np.float32),
            instance.reshape(height, width),
            semantic.reshape(height, width),
        )


#: the rooms' world up (z), the default ``up`` of :func:`look_at_cam_to_world`
Z_UP = np.array([0.0, 0.0, 1.0])


def look_at_cam_to_world(eye: np.ndarray, target: np.ndarray, up: np.ndarray = Z_UP) -> np.ndarray:
    """OpenCV camera-to-world pose at ``eye`` looking at ``target`` (x right, y down, z forward)."""
    z = np.asarray(target, float) - np.asarray(eye, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
    return m


def intrinsics(size: int | tuple[int, int], fov_deg: float) -> np.ndarray:
    """Pinhole K for a (width, height) image with horizontal field of view ``fov_deg``."""
    w, h = (size, size) if isinstance(size, int) else size
    f = w / 2 / np.tan(np.deg2rad(fov_deg) / 2)
    return np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
