"""Camera poses of an RGB-D sequence from its images alone: Open3D's RGB-D odometry on the CPU.

Each frame is aligned to the previous one (photometric + geometric "hybrid" term, coarse-to-fine),
then refined against the current keyframe starting from that chained estimate, so small errors do
not accumulate while the keyframe is in view. A new keyframe starts when the overlap with the old
one falls below ``min_overlap``. Poses are camera-to-world in OpenCV axes, frame 0 at the origin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from splatdistill.errors import require_extra


@dataclass
class OdometryOptions:
    depth_min: float = 0.05  # metres
    depth_max: float = 4.0
    depth_diff_max: float = 0.03  # a correspondence further apart in depth is an outlier
    iterations: tuple[int, int, int] = (20, 10, 5)  # per pyramid level, coarse last
    min_overlap: float = 0.6  # keyframe switch below this share of valid correspondences


@dataclass
class OdometryResult:
    poses: list[np.ndarray]  # camera-to-world of each frame
    keyframes: list[int]
    overlap: list[float]  # share of the frame's valid depth pixels matched against its keyframe
    failed: list[int] = field(default_factory=list)  # frames whose alignment did not converge


def _open3d():
    # installed without a system library it links (libusb), it does not import either
    return require_extra(
        "open3d",
        "captures",
        "RGB-D odometry (data from-rgbd)",
        hint="on Debian/Ubuntu also apt-get install libusb-1.0-0",
    )


def _rgbd_image(o3d, gray: np.ndarray, depth: np.ndarray, opts: OdometryOptions):
    color = o3d.geometry.Image(np.ascontiguousarray(gray.astype(np.float32)))
    d = o3d.geometry.Image(np.ascontiguousarray(depth.astype(np.float32)))
    return o3d.geometry.RGBDImage.create_from_color_and_depth(
        color, d, depth_scale=1.0, depth_trunc=opts.depth_max, convert_rgb_to_intensity=False
    )


def estimate_poses(
    frames: Iterable[tuple[np.ndarray, np.ndarray]],
    K: np.ndarray,
    width: int,
    height: int,
    opts: OdometryOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> OdometryResult:
    """Poses of frames given as (gray float image in [0, 1], metric depth in that camera) pairs.

    ``K`` is in our pixel convention (centres at +0.5); Open3D's has them at integers.
    """
    o3d = _open3d()
    opts = opts or OdometryOptions()
    intr = o3d.camera.PinholeCameraIntrinsic(width, height, K[0, 0], K[1, 1], K[0, 2] - 0.5, K[1, 2] - 0.5)
    option = o3d.pipelines.odometry.OdometryOption(
        iteration_number_per_pyramid_level=o3d.utility.IntVector(list(opts.iterations)),
        depth_diff_max=opts.depth_diff_max,
        depth_min=opts.depth_min,
        depth_max=opts.depth_max,
    )
    jac = o3d.pipelines.odometry.RGBDOdometryJacobianFromHybridTerm()

    def align(src, dst, init: np.ndarray) -> tuple[bool, np.ndarray, float]:
        """T mapping src camera points into dst's frame, and the matched share of src's depth."""
        ok, T, info = o3d.pipelines.odometry.compute_rgbd_odometry(src, dst, intr, init, jac, option)
        n_valid = max(int(np.count_nonzero(np.asarray(src.depth) > 0)), 1)
        # The information matrix's (5, 5) entry counts the correspondences of the last iteration.
        return bool(ok), np.asarray(T), float(np.asarray(info)[5, 5]) / n_valid

    poses: list[np.ndarray] = []
    keyframes: list[int] = []
    overlap: list[float] = []
    failed: list[int] = []
    key = prev = None
    for i, (gray, depth) in enumerate(frames):
        img = _rgbd_image(o3d, gray, depth, opts)
        if i == 0:
            poses.append(np.eye(4))
            keyframes.append(0)
            overlap.append(1.0)
            key = prev = img
        else:
            ok, T_prev, _ = align(img, prev, np.eye(4))  # frame i in frame i-1
            if not ok:
                failed.append(i)
                T_prev = np.eye(4)
            chained = poses[-1] @ T_prev
            k = keyframes[-1]
            init = np.linalg.inv(poses[k]) @ chained  # frame i in the keyframe
            ok_k, T_key, share = align(img, key, init)
            if ok_k and share >= opts.min_overlap:
                pose = poses[k] @ T_key
            else:
                pose = chained
                keyframes.append(i)
                key = img
                share = 1.0 if not ok_k else share
            poses.append(pose)
            overlap.append(share)
            prev = img
        if progress:
            progress(i)
    return OdometryResult(poses, keyframes, overlap, failed)
