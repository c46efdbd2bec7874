"""Camera paths inside a room: a walk around the room looking across it at the furniture.

Views sit on an ellipse around a point near the room centre, at eye height, aimed at a point on the
far side of that centre at table height, so consecutive views overlap. Every path is checked
before rendering: neighbouring views 10-25 degrees apart, cameras clear of walls and furniture,
nothing closer than ``min_depth`` in a low-resolution probe render, and enough furniture in view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .layout import FIRST_OBJECT_ID, RoomSpec
from .render import RoomRenderer, intrinsics, look_at


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle of the relative rotation between two camera-to-world poses, degrees."""
    r = a[:3, :3].T @ b[:3, :3]
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))


@dataclass
class PathLimits:
    min_step_deg: float = 10.0
    max_step_deg: float = 25.0
    min_depth: float = 0.6  # nearest surface in view, metres
    min_object_fraction: float = 0.12  # share of pixels on furniture or pictures
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


def propose_path(rng: np.random.Generator, spec: RoomSpec, n_views: int) -> list[np.ndarray]:
    """One candidate path (camera-to-world poses); see :func:`camera_path` for the checks."""
    W, D = spec.width, spec.depth
    centre = np.array([rng.uniform(-0.15, 0.15) * W, rng.uniform(-0.15, 0.15) * D])
    scale = rng.uniform(0.45, 0.85)
    a = max(0.4, (W / 2 - 0.45) * scale)
    b = max(0.4, (D / 2 - 0.45) * scale)
    phi = rng.uniform(0, 2 * math.pi)
    direction = 1 if rng.random() < 0.5 else -1
    h0, h_amp = rng.uniform(1.3, 1.65), rng.uniform(0.0, 0.12)
    look_h = rng.uniform(0.6, 1.0)
    look_dist = rng.uniform(0.3, 1.0)  # aim beyond the centre, towards the far side
    wobble = rng.uniform(0, 2 * math.pi)
    def pose(angle: float, i: int) -> np.ndarray:
        eye = np.array([centre[0] + a * math.cos(angle), centre[1] + b * math.sin(angle),
                        h0 + h_amp * math.sin(wobble + i * 0.7)])  # fmt: skip
        inward = centre - eye[:2]
        inward /= max(np.linalg.norm(inward), 1e-9)
        return look_at(eye, np.array([*(centre + inward * look_dist), look_h]))

    poses = [pose(phi, 0)]
    for i in range(1, n_views):
        # Walk along the ellipse until the view has turned by the drawn step (an ellipse turns the
        # view faster near its ends, so equal steps in angle would not give equal view changes).
        want = rng.uniform(13.0, 19.0)
        for dphi in np.radians(np.arange(0.5, 90.0, 0.5)):
            cand = pose(phi + direction * dphi, i)
            if rotation_angle_deg(poses[-1], cand) >= want:
                break
        phi += direction * dphi
        poses.append(cand)
    return poses


def path_problems(poses: list[np.ndarray], spec: RoomSpec, renderer: RoomRenderer, lim: PathLimits) -> list[str]:
    """Reasons this path is unusable (empty list when it is fine)."""
    probs = []
    for i in range(1, len(poses)):
        step = rotation_angle_deg(poses[i - 1], poses[i])
        if not lim.min_step_deg <= step <= lim.max_step_deg:
            probs.append(f"step {i}: {step:.1f} deg")
    for i, p in enumerate(poses):
        if not _eye_clear(p[:3, 3], spec, lim):
            probs.append(f"view {i}: camera too close to a wall or inside furniture")
    if probs:
        return probs
    K = intrinsics(40, 65.0)
    for i, p in enumerate(poses):
        r = renderer.render(K, p, 40, 40, supersample=False, shadows=False)
        valid = r.depth > 0
        if valid.mean() < 0.999:
            probs.append(f"view {i}: rays escape the room")
        elif np.percentile(r.depth[valid], 1) < lim.min_depth:
            probs.append(f"view {i}: surface closer than {lim.min_depth} m")
        elif (r.instance >= FIRST_OBJECT_ID).mean() < lim.min_object_fraction:
            probs.append(f"view {i}: mostly bare walls/floor")
    return probs


def camera_path(rng: np.random.Generator, spec: RoomSpec, renderer: RoomRenderer, n_views: int,
                limits: PathLimits | None = None, tries: int = 200) -> list[np.ndarray] | None:  # fmt: skip
    """A checked camera path, or None when no candidate passed (the caller then redraws the room)."""
    lim = limits or PathLimits()
    for _ in range(tries):
        poses = propose_path(rng, spec, n_views)
        if not path_problems(poses, spec, renderer, lim):
            return poses
    return None
