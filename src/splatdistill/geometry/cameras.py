"""Batched pinhole cameras (OpenCV convention) as torch tensors.

Conventions follow :mod:`splatdistill.data.scene`: x right, y down, z forward; ``K`` maps camera
coordinates to pixels whose centres sit at integer + 0.5; ``viewmat`` is world-to-camera (what the
renderer and gsplat take); depth is z-depth. Every camera of a batch shares one image size, as in
gsplat, so a batch renders into one dense tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Cameras:
    """A batch of pinhole cameras sharing one image size.

    Ks: (..., 3, 3) pixel intrinsics. viewmats: (..., 4, 4) world-to-camera rigid transforms.
    c2w: the camera-to-world poses the cameras were built from, when they were (kept so that
    :attr:`cam_to_world` gives them back exactly instead of inverting ``viewmats`` again).
    """

    Ks: Tensor
    viewmats: Tensor
    width: int
    height: int
    c2w: Tensor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.Ks.shape[-2:] != (3, 3) or self.viewmats.shape[-2:] != (4, 4):
            raise ValueError(
                f"Ks must be (...,3,3) and viewmats (...,4,4), got "
                f"{tuple(self.Ks.shape)} and {tuple(self.viewmats.shape)}"
            )
        if self.Ks.shape[:-2] != self.viewmats.shape[:-2]:
            raise ValueError(
                f"Ks batch {tuple(self.Ks.shape[:-2])} != viewmats batch {tuple(self.viewmats.shape[:-2])}"
            )
        if self.c2w is not None and self.c2w.shape != self.viewmats.shape:
            raise ValueError(f"c2w {tuple(self.c2w.shape)} != viewmats {tuple(self.viewmats.shape)}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    # construction -------------------------------------------------------------------------------

    @classmethod
    def from_cam_to_world(cls, Ks: Tensor, cam_to_world: Tensor, width: int, height: int) -> Cameras:
        """Build from camera-to-world poses (the scene files' convention; kept as :attr:`c2w`)."""
        return cls(Ks, rigid_inverse(cam_to_world), int(width), int(height), cam_to_world)

    @classmethod
    def from_views(cls, views, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Cameras:
        """Stack :class:`~splatdistill.data.scene.ViewData`/``ViewRecord`` objects (same size)."""
        views = list(views)
        sizes = {(int(v.width), int(v.height)) for v in views}
        if len(sizes) != 1:
            raise ValueError(f"views have different image sizes: {sorted(sizes)}")
        ((width, height),) = sizes
        Ks = torch.stack([torch.as_tensor(v.K, dtype=torch.float64) for v in views])
        c2w = torch.stack([torch.as_tensor(v.cam_to_world, dtype=torch.float64) for v in views])
        return cls(Ks.to(device, dtype), rigid_inverse(c2w).to(device, dtype), width, height)

    # basic properties ---------------------------------------------------------------------------

    @property
    def batch_shape(self) -> torch.Size:
        return self.Ks.shape[:-2]

    @property
    def device(self) -> torch.device:
        return self.Ks.device

    @property
    def dtype(self) -> torch.dtype:
        return self.Ks.dtype

    def __len__(self) -> int:
        if not self.batch_shape:
            raise TypeError("unbatched Cameras has no len()")
        return self.batch_shape[0]

    def map(self, fn) -> Cameras:
        """The cameras with ``fn`` applied to each tensor (indexing, moving, stacking one at a time)."""
        return Cameras(
            fn(self.Ks), fn(self.viewmats), self.width, self.height, None if self.c2w is None else fn(self.c2w)
        )

    def __getitem__(self, index) -> Cameras:
        return self.map(lambda t: t[index])

    def to(self, device=None, dtype: torch.dtype | None = None) -> Cameras:
        return self.map(lambda t: t.to(device, dtype))

    @property
    def cam_to_world(self) -> Tensor:
        return rigid_inverse(self.viewmats) if self.c2w is None else self.c2w

    @property
    def centers(self) -> Tensor:
        """Camera centres in world coordinates, (..., 3)."""
        R = self.viewmats[..., :3, :3]
        t = self.viewmats[..., :3, 3]
        return -(R.transpose(-1, -2) @ t[..., None])[..., 0]

    # pixels, rays, (un)projection ------------------------------------------------------------------

    def pixel_centers(self) -> Tensor:
        """(H, W, 2) continuous (u, v) coordinates of pixel centres (integer + 0.5)."""
        u = torch.arange(self.width, device=self.device, dtype=self.dtype) + 0.5
        v = torch.arange(self.height, device=self.device, dtype=self.dtype) + 0.5
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        return torch.stack([uu, vv], dim=-1)

    def camera_rays(self) -> Tensor:
        """(..., H, W, 3) camera-frame ray directions scaled to z = 1 (so point = depth * ray)."""
        uv = self.pixel_centers()  # (H, W, 2)
        K = self.Ks[..., None, None, :, :]
        fx, fy, cx, cy = K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]
        skew = K[..., 0, 1]
        y = (uv[..., 1] - cy) / fy
        x = (uv[..., 0] - cx - skew * y) / fx
        return torch.stack([x, y, torch.ones_like(x)], dim=-1)

    def ray_directions(self, normalize: bool = False) -> Tensor:
        """(..., H, W, 3) world-frame ray directions through pixel centres.

        Unnormalised, they have unit z-component in the camera frame, so ``centre + depth * d`` is
        the point at z-depth ``depth``; ``normalize=True`` returns unit vectors instead.
        """
        rays = self.camera_rays()
        R_c2w = self.viewmats[..., :3, :3].transpose(-1, -2)[..., None, None, :, :]
        d = (R_c2w @ rays[..., None])[..., 0]
        return torch.nn.functional.normalize(d, dim=-1) if normalize else d

    def unproject(self, depth: Tensor) -> Tensor:
        """World points (..., H, W, 3) of a z-depth map (..., H, W) (invalid depths pass through)."""
        if depth.shape[-2:] != (self.height, self.width):
            raise ValueError(f"depth is {tuple(depth.shape)}, cameras are {self.height}x{self.width}")
        pts_c = self.camera_rays() * depth[..., None]
        return camera_to_world_points(pts_c, self.viewmats[..., None, None, :, :])

    def world_to_camera(self, points: Tensor) -> Tensor:
        """Camera-frame coordinates of world points (..., N, 3) -> (..., N, 3)."""
        R = self.viewmats[..., None, :3, :3]
        t = self.viewmats[..., None, :3, 3]
        return (R @ points[..., None])[..., 0] + t

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Pixel coordinates (..., N, 2) and z-depths (..., N) of world points (..., N, 3)."""
        pc = self.world_to_camera(points)
        z = pc[..., 2]
        uvw = (self.Ks[..., None, :, :] @ pc[..., None])[..., 0]
        return uvw[..., :2] / z[..., None], z


def rigid_inverse(T: Tensor) -> Tensor:
    """Inverse of rigid 4x4 transforms (..., 4, 4) without a general matrix inverse."""
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1
    return out


def camera_to_world_points(points_c: Tensor, viewmats: Tensor) -> Tensor:
    """Map camera-frame points (..., 3) to world with world-to-camera ``viewmats`` (..., 4, 4)."""
    R = viewmats[..., :3, :3]
    t = viewmats[..., :3, 3]
    return (R.transpose(-1, -2) @ (points_c - t)[..., None])[..., 0]


def look_at_viewmat(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """World-to-camera matrix (..., 4, 4) of an OpenCV camera at ``eye`` looking at ``target``.

    ``up`` is the world up direction (default -y, so image y points along +y like OpenCV).
    """
    eye = torch.as_tensor(eye)
    target = torch.as_tensor(target, dtype=eye.dtype, device=eye.device)
    if up is None:
        up = torch.tensor([0.0, -1.0, 0.0], dtype=eye.dtype, device=eye.device)
    up = torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(eye)
    z = torch.nn.functional.normalize(target - eye, dim=-1)
    x = torch.nn.functional.normalize(torch.linalg.cross(-up, z, dim=-1), dim=-1)
    y = torch.linalg.cross(z, x, dim=-1)
    c2w = torch.zeros(eye.shape[:-1] + (4, 4), dtype=eye.dtype, device=eye.device)
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = x, y, z, eye
    c2w[..., 3, 3] = 1
    return rigid_inverse(c2w)


def intrinsics(fx: float, fy: float, cx: float, cy: float, dtype=torch.float32, device=None) -> Tensor:
    """A 3x3 pixel intrinsic matrix."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def rotation_angle_deg(a, b) -> float:
    """Angle (degrees) of the relative rotation between two orientations: 3x3 rotations or 4x4 poses
    (NumPy or torch; the rotation blocks are compared in float64)."""
    ra = np.asarray(a, dtype=np.float64)[:3, :3]
    rb = np.asarray(b, dtype=np.float64)[:3, :3]
    c = np.clip((np.trace(ra.T @ rb) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(c)))
