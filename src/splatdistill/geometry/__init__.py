"""Cameras, 3D Gaussians and pixel-aligned lifting (torch, batched, device-agnostic)."""

from splatdistill.geometry.cameras import Cameras, camera_to_world_points, intrinsics, look_at_viewmat, rigid_inverse
from splatdistill.geometry.gaussians import (
    Gaussians,
    covariance_to_quat_scale,
    quat_scale_to_covariance,
    quat_to_rotmat,
    rotmat_to_quat,
)
from splatdistill.geometry.lifting import BOX_STD, footprint_covariances, lift_depth

__all__ = [
    "BOX_STD",
    "Cameras",
    "Gaussians",
    "camera_to_world_points",
    "covariance_to_quat_scale",
    "footprint_covariances",
    "intrinsics",
    "lift_depth",
    "look_at_viewmat",
    "quat_scale_to_covariance",
    "quat_to_rotmat",
    "rigid_inverse",
    "rotmat_to_quat",
]
