"""Checks shared by the loaders and ``splatdistill data check``: each returns a problem string or None.

A pose or intrinsics matrix that fails here is never used: loaders raise (naming the file) or, with
``skip_bad``, warn and leave the view out.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ORTHO_TOL = 1e-4


class DatasetWarning(UserWarning):
    """A view was left out of a dataset because of a problem (``skip_bad=True``); ``.problem`` says which."""

    problem: Problem | None = None


@dataclass
class Problem:
    """One problem found in a dataset, tied to the file that has it."""

    path: Path
    message: str
    scene: str = ""
    view: str = ""

    def __str__(self) -> str:
        where = (
            f" (scene {self.scene}, view {self.view})"
            if self.view
            else (f" (scene {self.scene})" if self.scene else "")
        )
        return f"{self.path}: {self.message}{where}"


def matrix_problem(value: object, shape: tuple[int, int], what: str) -> tuple[np.ndarray | None, str | None]:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None, f"{what} is not a numeric matrix"
    if m.shape != shape:
        return None, f"{what} has shape {m.shape}, expected {shape}"
    if not np.all(np.isfinite(m)):
        return None, f"{what} contains NaN or infinity"
    return m, None


def intrinsics_problem(K: np.ndarray) -> str | None:
    """None if K is a usable pinhole matrix (finite, invertible, positive focal lengths, last row 0 0 1)."""
    if not np.all(np.isfinite(K)):
        return "K contains NaN or infinity"
    if not np.allclose(K[2], [0, 0, 1], atol=1e-9):
        return f"K's last row is {K[2].tolist()}, expected [0, 0, 1]"
    if abs(np.linalg.det(K)) < 1e-9 or K[0, 0] <= 0 or K[1, 1] <= 0:
        return f"K is not invertible or has non-positive focal lengths (fx={K[0, 0]:g}, fy={K[1, 1]:g})"
    return None


def pose_problem(T: np.ndarray) -> str | None:
    """None if T is a rigid camera-to-world transform (orthonormal rotation, det +1, last row 0 0 0 1)."""
    if not np.all(np.isfinite(T)):
        return "pose contains NaN or infinity"
    if not np.allclose(T[3], [0, 0, 0, 1], atol=1e-9):
        return f"pose's last row is {T[3].tolist()}, expected [0, 0, 0, 1]"
    R = T[:3, :3]
    err = float(np.abs(R.T @ R - np.eye(3)).max())
    if err > ORTHO_TOL:
        return f"rotation is not orthonormal (max |R^T R - I| = {err:.2e})"
    if np.linalg.det(R) < 0:
        return "rotation has determinant -1 (a reflection, wrong axis convention?)"
    return None


def map_problems(name: str, arr: np.ndarray, height: int, width: int, channels: int | None = None) -> list[str]:
    out = []
    if arr.shape[:2] != (height, width):
        out.append(f"{name} is {arr.shape[1]}x{arr.shape[0]}, the image is {width}x{height}")
    if channels is not None and (arr.ndim != 3 or arr.shape[2] != channels):
        out.append(f"{name} has shape {arr.shape}, expected (H, W, {channels})")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        out.append(f"{name} contains NaN or infinity ({int((~np.isfinite(arr)).sum())} values)")
    return out


def depth_problems(depth: np.ndarray, height: int, width: int) -> list[str]:
    out = map_problems("depth", depth, height, width)
    if depth.ndim != 2:
        out.append(f"depth has shape {depth.shape}, expected (H, W)")
    elif np.any(np.nan_to_num(depth, nan=0.0) < 0):
        out.append("depth has negative values")
    return out


def normals_problems(normals: np.ndarray, height: int, width: int) -> list[str]:
    out = map_problems("normals", normals, height, width, channels=3)
    if not out:
        n = np.linalg.norm(normals, axis=-1)
        bad = (n > 0) & (np.abs(n - 1) > 0.02)
        if bad.any():
            out.append(f"normals not unit length at {int(bad.sum())} pixels")
    return out


def warn_skipped(problem: Problem) -> None:
    w = DatasetWarning(f"view left out: {problem}")
    w.problem = problem
    warnings.warn(w, stacklevel=3)
