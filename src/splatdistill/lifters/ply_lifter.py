"""A lifter whose geometry comes from standard 3DGS PLY files and whose features come from the teacher.

Why: users often already have a reconstruction of their scenes (a 3DGS optimisation, or Gaussians
exported by another feed-forward model). Its Gaussians (means, covariances, opacities) replace the
pixel-aligned ones; each Gaussian receives the teacher feature of the context pixels that *see* it,
so the targets still follow the teacher as it learns, only the geometry is fixed.

Feature assignment, per context view: the PLY's own depth is rendered into the view (opacity-weighted
mean camera z); a Gaussian is visible in the view if its mean projects inside the image with coverage
> 0.5 and its camera z is within ``visibility_tol`` (relative) of that rendered depth. Its feature is
the mean of the bilinearly sampled pixel features over the views that see it; Gaussians no context
view sees are left out (they carry no teacher information).

Which scene: ``ply:FILE`` uses one PLY for every sample. ``ply:DIR`` holds one PLY per scene, as
``DIR/<scene>.ply``, ``DIR/<scene>/point_cloud.ply`` or the 3DGS training layout
``DIR/<scene>/point_cloud/iteration_<N>/point_cloud.ply`` (largest N). The Lifter interface carries no
scene name, so the scene of a sample is found from its context cameras: the dataset's view whose pose
matches the first context camera (``use_scene(name)`` sets it explicitly instead). The PLY must be in
the dataset's world frame (true when both come from the same COLMAP/nerfstudio reconstruction).
"""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from splatdistill.data import load_dataset
from splatdistill.data.views import Views
from splatdistill.errors import UserError
from splatdistill.geometry.cameras import Cameras
from splatdistill.geometry.gaussians import Gaussians
from splatdistill.render import render_features
from splatdistill.render.ply import load_ply


def find_scene_plys(folder: Path) -> dict[str, Path]:
    """Scene name -> PLY path for the layouts described in the module docstring."""
    found: dict[str, Path] = {}
    for p in sorted(folder.glob("*.ply")):
        found[p.stem] = p
    for d in sorted(x for x in folder.iterdir() if x.is_dir()):
        if (d / "point_cloud.ply").is_file():
            found[d.name] = d / "point_cloud.ply"
            continue
        iters = []
        for it in (d / "point_cloud").glob("iteration_*/point_cloud.ply"):
            m = re.fullmatch(r"iteration_(\d+)", it.parent.name)
            if m:
                iters.append((int(m.group(1)), it))
        if iters:
            found[d.name] = max(iters)[1]
    return found


def attach_features(
    geometry: Gaussians, features: Tensor, cameras: Cameras, visibility_tol: float = 0.05, renderer: str = "auto"
) -> Gaussians:
    """Give every Gaussian the mean feature of the context pixels (features (V, C, H, W)) that see it.

    Gaussians seen by no view are dropped. See the module docstring for the visibility test.
    """
    V, C, H, W = features.shape
    if (cameras.height, cameras.width) != (H, W):
        raise ValueError(f"features are {H}x{W}, cameras {cameras.height}x{cameras.width}")
    g = geometry.to(features.device, features.dtype)
    N = len(g)
    acc = torch.zeros(N, C, dtype=features.dtype, device=features.device)
    count = torch.zeros(N, dtype=features.dtype, device=features.device)
    for v in range(V):
        cam = cameras[v]
        uv, z = cam.project(g.means)  # (N, 2), (N,)
        rendered, alpha = render_features(
            g.means, g.covariances, g.opacities, z[:, None], cam.viewmats, cam.Ks, W, H, backend=renderer
        )
        depth_map = rendered[..., 0] / alpha.clamp_min(1e-6)  # (H, W)
        grid = torch.stack([uv[:, 0] / W * 2 - 1, uv[:, 1] / H * 2 - 1], -1)
        inside = (z > 1e-2) & (grid.abs() <= 1).all(-1)
        px = uv[:, 0].long().clamp(0, W - 1)
        py = uv[:, 1].long().clamp(0, H - 1)
        seen = inside & (alpha[py, px] > 0.5) & (z <= depth_map[py, px] * (1 + visibility_tol))
        if not bool(seen.any()):
            continue
        sampled = F.grid_sample(
            features[v : v + 1], grid[seen][None, None].to(features.dtype), mode="bilinear", align_corners=False
        )[0, :, 0].T  # (n, C)
        acc[seen] += sampled
        count[seen] += 1
    keep = count > 0
    feats = acc[keep] / count[keep][:, None]
    return Gaussians(g.means[keep], g.covariances[keep], g.opacities[keep], feats)


class PlyLifter:
    """:data:`~splatdistill.splat.lifter.Lifter` over 3DGS PLY files (see the module docstring)."""

    scene_level = True  # the geometry is the scene's, not the context views': lift all views in one call

    def __init__(
        self,
        source: str | Path,
        data: str | Path | None = None,
        visibility_tol: float = 0.05,
        renderer: str = "auto",
        cache_size: int = 4,
        pose_tol: float = 1e-3,
    ):
        self.source = Path(source).expanduser()
        if not self.source.exists():
            raise UserError("no such PLY file or folder (ply:PATH)", self.source)
        if self.source.is_file():
            self.plys = {"": self.source}
        else:
            self.plys = find_scene_plys(self.source)
            if not self.plys:
                raise UserError(
                    "no PLY files found (expected <scene>.ply, <scene>/point_cloud.ply or "
                    "<scene>/point_cloud/iteration_N/point_cloud.ply)",
                    self.source,
                )
        self.data = data
        self.visibility_tol = visibility_tol
        self.renderer = renderer
        self.pose_tol = pose_tol
        self._cache: OrderedDict[str, Gaussians] = OrderedDict()
        self._cache_size = cache_size
        self._poses: dict[str, np.ndarray] | None = None  # scene -> (n, 4, 4) cam_to_world
        self._scene: str | None = None

    @property
    def single(self) -> bool:
        return "" in self.plys

    @contextlib.contextmanager
    def use_scene(self, name: str):
        """Use the PLY of scene ``name`` for calls inside the ``with`` block (no pose matching)."""
        if not self.single and name not in self.plys:
            raise UserError(f"no PLY for scene {name!r} (have {', '.join(sorted(self.plys)[:5])}...)", self.source)
        old, self._scene = self._scene, name
        try:
            yield self
        finally:
            self._scene = old

    def gaussians(self, scene: str) -> Gaussians:
        key = "" if self.single else scene
        if key not in self._cache:
            self._cache[key] = load_ply(self.plys[key])
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def _scene_poses(self) -> dict[str, np.ndarray]:
        if self._poses is None:
            if self.data is None:
                raise UserError(
                    "ply:DIR with several scenes needs the dataset to tell samples' scenes apart "
                    "(pass data=..., or use a single PLY file)",
                    self.source,
                )
            self._poses = {
                s.name: np.stack([v.cam_to_world for v in s.views])
                for s in load_dataset(self.data)
                if s.name in self.plys
            }
            if not self._poses:
                raise UserError(
                    f"none of the PLY scene names ({', '.join(sorted(self.plys)[:5])}) is a scene of {self.data}",
                    self.source,
                )
        return self._poses

    def scene_of(self, cameras: Cameras) -> str:
        """The scene whose dataset view has the pose of the first camera (error if none or several)."""
        c2w = cameras.cam_to_world.reshape(-1, 4, 4)[0].detach().double().cpu().numpy()
        hits = []
        for name, poses in self._scene_poses().items():
            d_pos = np.linalg.norm(poses[:, :3, 3] - c2w[:3, 3], axis=1)
            d_rot = np.abs(poses[:, :3, :3] - c2w[:3, :3]).max(axis=(1, 2))
            if bool(((d_pos < self.pose_tol * max(1.0, np.abs(c2w[:3, 3]).max())) & (d_rot < self.pose_tol)).any()):
                hits.append(name)
        if len(hits) != 1:
            what = "no scene" if not hits else f"several scenes ({', '.join(hits)})"
            raise UserError(
                f"ply lifter: {what} of the dataset has a view at this context camera; use a single PLY "
                "or lifter.use_scene(name)",
                self.source,
            )
        return hits[0]

    def __call__(self, views: Views) -> Gaussians:
        scene = "" if self.single else (self._scene or self.scene_of(views.cameras))
        return attach_features(self.gaussians(scene), views.features, views.cameras, self.visibility_tol, self.renderer)
