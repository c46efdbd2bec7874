"""In-memory types for posed multi-view scenes.

Conventions (used by every module of the project):

- Cameras are OpenCV style: x right, y down, z forward. ``K`` is the 3x3 pixel intrinsic matrix of the
  stored image (pixel centres at integer + 0.5 in continuous coordinates, i.e. the centre of pixel
  (u, v) is at (u + 0.5, v + 0.5)). ``cam_to_world`` is the 4x4 camera-to-world pose; its inverse is the
  world-to-camera ``viewmat`` used by the renderer.
- ``depth`` is metric z-depth (distance along the camera z axis), float32, 0 where unknown.
- ``normals`` are unit vectors in the *camera* frame (OpenCV axes), float32 (H, W, 3), 0 where unknown.
- ``instance`` is an int32 id map, 0 = no instance (background / unlabelled).
- ``semantic`` is an int32 class map indexing ``Scene.class_names``; -1 = ignore.
- ``image`` is float32 RGB in [0, 1], (H, W, 3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ViewData:
    """One loaded view: pixels plus whatever ground truth the dataset has."""

    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    K: np.ndarray  # (3, 3) float64
    cam_to_world: np.ndarray  # (4, 4) float64
    depth: np.ndarray | None = None  # (H, W) float32 metres, 0 = invalid
    normals: np.ndarray | None = None  # (H, W, 3) float32 camera frame, 0 = invalid
    instance: np.ndarray | None = None  # (H, W) int32, 0 = none
    semantic: np.ndarray | None = None  # (H, W) int32, -1 = ignore
    name: str = ""
    # why ``instance`` is None, when the dataset has masks elsewhere: (kind, detail); kinds in data.masks
    instance_missing: tuple[str, str] | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def world_to_cam(self) -> np.ndarray:
        return np.linalg.inv(self.cam_to_world)


@dataclass
class ViewRecord:
    """Metadata of one view, cheap to hold; ``load()`` reads the pixels."""

    name: str
    K: np.ndarray
    cam_to_world: np.ndarray
    width: int
    height: int
    loader: Callable[[], ViewData] = field(repr=False)

    def load(self) -> ViewData:
        return self.loader()


@dataclass
class Scene:
    """A posed multi-view scene (one room, one capture)."""

    name: str
    views: list[ViewRecord]
    split: str = "train"  # train | val | test
    class_names: list[str] = field(default_factory=list)
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.views)

    def load_view(self, index: int) -> ViewData:
        return self.views[index].load()
