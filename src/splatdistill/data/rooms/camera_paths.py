"""Camera paths inside a room: a walk around the room looking across it at the furniture.

Views sit on an ellipse around a point near the room centre, at eye height, aimed at a point on the
far side of that centre at table height, so consecutive views overlap. Every path is checked
before rendering: neighbouring views 10-25 degrees apart, cameras clear of walls and furniture,
nothing closer than ``min_depth`` and not much closer than ``near_distance`` in a low-resolution
probe render (no view blocked by a nearby object), and enough furniture in view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

from splatdistill.geometry.cameras import rotation_angle_deg

from .layout import FIRST_OBJECT_ID, RoomSpec
from .raycast import RoomRenderer, intrinsics, look_at_cam_to_world


@dataclass
class PathLimits:
    min_step_deg: float = 10.0
    max_step_deg: float = 25.0
    min_depth: float = 0.6  # nearest surface in view, metres
    near_distance: float = 1.25  # no more than max_near_fraction of a view closer than this
    max_near_fraction: float = 0.35
    min_object_fraction: float = 0.05  # per view: share of pixels on furniture or pictures
    mean_object_fraction: float = 0.12  # over the path
    wall_clearance: float = 0.35
    object_clearance: float = 0.3


def _eye_clear(eye: np.ndarray, spec: RoomSpec, lim: PathLimits) -> bool:
    if abs(eye[0]) > spec.width / 2 - lim.wall_clearance or abs(eye[1]) > spec.depth / 2 - lim.wall_clearance:
        return False
    for p in spec.placements:
        c, s = math.cos(-p.yaw), math.sin(-p.yaw)
        d = eye[:2] - np.array([p.x, p.y])
        local = np.array([c * d[0] - s * d[1], s * d[0] + c * d[1]])
        # A hand-held camera stands on free floor: never above or inside a piece of furniture.
        if np.all(np.abs(local) < np.array(p.size[:2]) / 2 + lim.object_clearance):
            return False
    return True


class FreeSpace:
    """Where a camera may stand: a 2 cm grid of the floor minus walls and furniture (inflated)."""

    def __init__(self, spec: RoomSpec, lim: PathLimits, res: float = 0.02):
        self.spec, self.res = spec, res
        xs = np.arange(-spec.width / 2 + res / 2, spec.width / 2, res)
        ys = np.arange(-spec.depth / 2 + res / 2, spec.depth / 2, res)
        self.x0, self.y0 = xs[0], ys[0]
        X, Y = np.meshgrid(xs, ys, indexing="xy")
        free = (np.abs(X) <= spec.width / 2 - lim.wall_clearance) & (np.abs(Y) <= spec.depth / 2 - lim.wall_clearance)
        for p in spec.placements:
            c, s = math.cos(-p.yaw), math.sin(-p.yaw)
            dx, dy = X - p.x, Y - p.y
            lx, ly = c * dx - s * dy, s * dx + c * dy
            half = np.array(p.size[:2]) / 2 + lim.object_clearance
            free &= ~((np.abs(lx) < half[0]) & (np.abs(ly) < half[1]))
        self.free = free
        self.clearance = distance_transform_edt(free) * res  # metres to the nearest obstacle

    def lookup(self, pts: np.ndarray, grid: np.ndarray) -> np.ndarray:
        col = np.round((pts[..., 0] - self.x0) / self.res).astype(int)
        row = np.round((pts[..., 1] - self.y0) / self.res).astype(int)
        inside = (col >= 0) & (col < grid.shape[1]) & (row >= 0) & (row < grid.shape[0])
        out = np.zeros(pts.shape[:-1], grid.dtype)
        out[inside] = grid[row[inside], col[inside]]
        return out

    def free_radius(self, centre: np.ndarray, angles: np.ndarray, r_max: float) -> np.ndarray:
        """Distance from ``centre`` along each direction to the first non-free cell."""
        radii = np.arange(0.0, r_max, self.res)
        d = np.stack([np.cos(angles), np.sin(angles)], -1)
        pts = centre + d[:, None, :] * radii[None, :, None]
        ok = self.lookup(pts, self.free)
        blocked = ~ok
        first = np.where(blocked.any(1), blocked.argmax(1), len(radii))
        return radii[np.maximum(first - 1, 0)]


def propose_path(
    rng: np.random.Generator, spec: RoomSpec, n_views: int, free: FreeSpace | None = None
) -> list[np.ndarray]:
    """One candidate path (camera-to-world poses); see :func:`camera_path` for the checks.

    The camera circles a free spot near the middle of the room on a star-shaped curve (an ellipse
    pulled in wherever furniture is in the way), looking across that spot at table height.
    """
    free = free or FreeSpace(spec, PathLimits())
    W, D = spec.width, spec.depth
    # Orbit centre: a free cell with good clearance, preferring the middle of the room.
    cand = np.argwhere(free.clearance >= max(0.25, 0.5 * free.clearance.max()))
    if len(cand) == 0:
        cand = np.argwhere(free.free)
    if len(cand) == 0:
        return []
    pts = np.stack([free.x0 + cand[:, 1] * free.res, free.y0 + cand[:, 0] * free.res], 1)
    weight = np.exp(-np.sum((pts / np.array([W, D])) ** 2, 1) / 0.08)
    centre = pts[rng.choice(len(pts), p=weight / weight.sum())] + rng.normal(0, 0.02, 2)
    scale = rng.uniform(0.55, 0.95)
    a = max(0.5, (W / 2 - 0.45) * scale)
    b = max(0.5, (D / 2 - 0.45) * scale)
    angles = np.radians(np.arange(0.0, 360.0, 0.5))
    ellipse = a * b / np.sqrt((b * np.cos(angles)) ** 2 + (a * np.sin(angles)) ** 2)
    r_free = free.free_radius(centre, angles, max(W, D)) - 0.03
    radius = np.minimum(ellipse, r_free)
    # Smooth the profile (circularly) without leaving free space: windowed min, then mean, then clip.
    k = 31
    pad = np.concatenate([radius[-k:], radius, radius[:k]])
    mins = np.array([pad[i : i + 2 * k + 1].min() for i in range(len(radius))])
    pad = np.concatenate([mins[-k:], mins, mins[:k]])
    radius = np.minimum(np.convolve(pad, np.ones(2 * k + 1) / (2 * k + 1), mode="valid"), r_free)

    def r_at(phi: float) -> float:
        return float(radius[int(round(math.degrees(phi) * 2)) % len(radius)])

    phi = rng.uniform(0, 2 * math.pi)
    direction = 1 if rng.random() < 0.5 else -1
    h0, h_amp = rng.uniform(1.3, 1.65), rng.uniform(0.0, 0.12)
    look_h = rng.uniform(0.6, 1.0)
    look_dist = rng.uniform(0.2, 0.8)  # aim beyond the centre, towards the far side
    wobble = rng.uniform(0, 2 * math.pi)

    def pose(angle: float, i: int) -> np.ndarray:
        r = max(r_at(angle), 0.05)
        eye = np.array(
            [centre[0] + r * math.cos(angle), centre[1] + r * math.sin(angle), h0 + h_amp * math.sin(wobble + i * 0.7)]
        )
        inward = centre - eye[:2]
        inward /= max(np.linalg.norm(inward), 1e-9)
        return look_at_cam_to_world(eye, np.array([*(centre + inward * look_dist), look_h]))

    poses = [pose(phi, 0)]
    for i in range(1, n_views):
        # Walk along the curve until the view has turned by the drawn step (the turn per unit
        # angle varies with the radius, so equal angle steps would not give equal view changes).
        want = rng.uniform(13.0, 19.0)
        for dphi in np.radians(np.arange(0.5, 90.0, 0.5)):
            cand_pose = pose(phi + direction * dphi, i)
            if rotation_angle_deg(poses[-1], cand_pose) >= want:
                break
        phi += direction * dphi
        poses.append(cand_pose)
    return poses


def path_problems(poses: list[np.ndarray], spec: RoomSpec, renderer: RoomRenderer, lim: PathLimits) -> list[str]:
    """Reasons this path is unusable (empty list when it is fine)."""
    if not poses:
        return ["no free floor to stand on"]
    probs = []
    for i in range(1, len(poses)):
        step = rotation_angle_deg(poses[i - 1], poses[i])
        if not lim.min_step_deg <= step <= lim.max_step_deg:
            probs.append(f"step {i}: {step:.1f} deg")
    for i, p in enumerate(poses):
        if not _eye_clear(p[:3, 3], spec, lim):
            probs.append(f"view {i}: camera too close to a wall or inside furniture")
        if i and np.linalg.norm(p[:3, 3] - poses[i - 1][:3, 3]) < 0.05:
            probs.append(f"view {i}: camera barely moved (no parallax)")
    if probs:
        return probs
    K = intrinsics(40, 65.0)
    fractions = []
    for i, p in enumerate(poses):
        r = renderer.render(K, p, 40, 40, supersample=False, shadows=False)
        valid = r.depth > 0
        if valid.mean() < 0.999:
            probs.append(f"view {i}: rays escape the room")
        elif np.percentile(r.depth[valid], 1) < lim.min_depth:
            probs.append(f"view {i}: surface closer than {lim.min_depth} m")
        elif (r.depth < lim.near_distance).mean() > lim.max_near_fraction:
            probs.append(f"view {i}: more than {lim.max_near_fraction:.0%} of the view within {lim.near_distance} m")
        else:
            fractions.append((r.instance >= FIRST_OBJECT_ID).mean())
            if fractions[-1] < lim.min_object_fraction:
                probs.append(f"view {i}: mostly bare walls/floor")
        if probs:
            return probs
    if np.mean(fractions) < lim.mean_object_fraction:
        probs.append(f"path: furniture covers {np.mean(fractions):.0%} of the views on average")
    return probs


def camera_path(
    rng: np.random.Generator,
    spec: RoomSpec,
    renderer: RoomRenderer,
    n_views: int,
    limits: PathLimits | None = None,
    tries: int = 25,
) -> list[np.ndarray] | None:
    """A checked camera path, or None when no candidate passed (the caller then redraws the room)."""
    lim = limits or PathLimits()
    free = FreeSpace(spec, lim)
    for _ in range(tries):
        poses = propose_path(rng, spec, n_views, free)
        if not path_problems(poses, spec, renderer, lim):
            return poses
    return None
