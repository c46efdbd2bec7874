"""Analytic scenes and toy backbones with exactly known answers, for testing the evaluation suite.

The scenes are box-shaped rooms with one box of furniture, ray-cast in numpy: depth, normals, instance
and semantic labels are exact, so metric code, ground-truth correspondences and the probes can be
checked against independent computations without waiting on (or trusting) the real dataset. The toy
backbones implement the ``Backbone`` interface of :mod:`splatdistill.backbones` in a few lines.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from splatdistill.data.scene import Scene, ViewData, ViewRecord

CLASS_NAMES = ["floor", "ceiling", "wall", "box"]
# Room interior: x in [-2, 2], y in [-1.2, 1.2] (y points down: the floor is y = +1.2), z in [-2.5, 2.5].
ROOM_MIN = np.array([-2.0, -1.2, -2.5])
ROOM_MAX = np.array([2.0, 1.2, 2.5])
BOX_MIN = np.array([0.3, 0.3, 0.6])
BOX_MAX = np.array([1.3, 1.2, 1.6])


def look_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Camera-to-world rotation (OpenCV axes) looking along yaw (about -y) and pitch (about x)."""
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    return ry @ rx


def intrinsics(width: int, height: int, fov_x_deg: float = 70.0) -> np.ndarray:
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)


def render_view(K: np.ndarray, cam_to_world: np.ndarray, width: int, height: int, tint: float = 0.0) -> ViewData:
    """Ray-cast the room: exact z-depth, camera-frame normals, labels and a textured image."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rays_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # z component = 1
    R, o = cam_to_world[:3, :3], cam_to_world[:3, 3]
    d = rays_cam @ R.T  # world directions; the hit parameter t equals camera z-depth
    with np.errstate(divide="ignore", invalid="ignore"):
        # Exit of the room box (camera inside): per-axis distance to the wall in the ray's direction.
        t_axis = np.where(d > 0, (ROOM_MAX - o) / d, (ROOM_MIN - o) / d)
        t_axis = np.where(np.abs(d) < 1e-12, np.inf, t_axis)
        axis = np.argmin(t_axis, -1)
        t = np.take_along_axis(t_axis, axis[..., None], -1)[..., 0]
        sign = np.take_along_axis(np.sign(d), axis[..., None], -1)[..., 0]
        normal_w = np.zeros(d.shape)
        np.put_along_axis(normal_w, axis[..., None], -sign[..., None], -1)
        cls = np.where(axis == 1, np.where(sign > 0, 0, 1), 2)
        inst = np.where(axis == 1, np.where(sign > 0, 1, 2), 3 + 2 * axis + (sign > 0))
        # Entry into the furniture box (slab test).
        t0 = (BOX_MIN - o) / d
        t1 = (BOX_MAX - o) / d
        tn = np.minimum(t0, t1)
        tf = np.maximum(t0, t1)
        t_enter = tn.max(-1)
        hit = (t_enter <= tf.min(-1)) & (t_enter > 1e-6) & (t_enter < t)
        box_axis = np.argmax(tn, -1)
    box_normal = np.zeros(d.shape)
    box_sign = np.take_along_axis(np.sign(d), box_axis[..., None], -1)
    np.put_along_axis(box_normal, box_axis[..., None], -box_sign, -1)
    t = np.where(hit, t_enter, t)
    normal_w = np.where(hit[..., None], box_normal, normal_w)
    cls = np.where(hit, 3, cls)
    inst = np.where(hit, 10, inst)
    p = o + t[..., None] * d
    normal_c = normal_w @ R  # R^T n for each pixel
    # Texture: class colour times a world-space checkerboard, with Lambert-like shading.
    base = np.array([[0.55, 0.4, 0.25], [0.9, 0.9, 0.85], [0.6, 0.7, 0.8], [0.8, 0.25, 0.2]])
    # The offset keeps the cell edges away from the plane coordinates (no float-noise speckle).
    q = np.floor(p * 2.5 + 0.123)
    checker = (q[..., 0] + q[..., 1] + q[..., 2]) % 2
    stripes = 0.5 + 0.5 * np.sin(7.0 * p[..., 0] + 5.0 * p[..., 2] + 3.0 * p[..., 1])
    shade = 0.55 + 0.45 * np.abs(normal_w @ np.array([0.3, -0.8, 0.5]))
    image = base[cls] * (0.55 + 0.3 * checker[..., None] + 0.15 * stripes[..., None]) * shade[..., None]
    image = np.clip(image + tint, 0.0, 1.0)
    return ViewData(
        image=image.astype(np.float32),
        K=K.copy(),
        cam_to_world=cam_to_world.copy(),
        depth=t.astype(np.float32),
        normals=normal_c.astype(np.float32),
        instance=inst.astype(np.int32),
        semantic=cls.astype(np.int32),
    )


def make_scene(
    name: str,
    split: str = "train",
    num_views: int = 6,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
    yaw_step_deg: float = 12.0,
) -> Scene:
    """A room seen from ``num_views`` cameras on a short arc, so consecutive views overlap."""
    rng = np.random.default_rng(seed)
    width, height = size
    K = intrinsics(width, height)
    start = rng.uniform(-180, 180)
    centre = np.array([rng.uniform(-1.2, -0.2), rng.uniform(-0.5, -0.1), rng.uniform(-1.5, -0.5)])
    views = []
    tint = float(rng.uniform(-0.05, 0.05))
    for i in range(num_views):
        pose = np.eye(4)
        pose[:3, :3] = look_rotation(start + yaw_step_deg * i, rng.uniform(-15, 5))
        pose[:3, 3] = centre + rng.normal(0, 0.1, 3) * np.array([1, 0.3, 1])
        data = render_view(K, pose, width, height, tint)
        data.name = f"{name}/{i:03d}"

        def loader(data: ViewData = data) -> ViewData:
            return ViewData(**{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(data).items()})

        views.append(ViewRecord(data.name, K.copy(), pose.copy(), width, height, loader))
    return Scene(name=name, views=views, split=split, class_names=list(CLASS_NAMES))


def make_dataset(
    train_scenes: int = 3,
    test_scenes: int = 1,
    views_per_scene: int = 6,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
) -> list[Scene]:
    """A few synthetic rooms split into train and test scenes."""
    scenes = [make_scene(f"train_{i}", "train", views_per_scene, size, seed + i) for i in range(train_scenes)]
    scenes += [make_scene(f"test_{i}", "test", views_per_scene, size, seed + 1000 + i) for i in range(test_scenes)]
    return scenes


class ColourBackbone(nn.Module):
    """A fixed random patch embedding of the pixels plus a mild nonlinearity: a tiny stand-in ViT.

    Colour and texture carry information about class and geometry in the synthetic rooms, so probes on
    these features learn something; the weights are seeded so the features are reproducible.
    """

    def __init__(self, patch_size: int = 8, embed_dim: int = 32, seed: int = 0, name: str = "colour"):
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.name = name
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(self.proj.weight.shape, generator=g) / patch_size)
            self.proj.bias.copy_(torch.randn(embed_dim, generator=g) * 0.1)

    def patch_features(self, images: torch.Tensor, return_cls: bool = False):
        p = self.patch_size
        h, w = images.shape[-2] // p, images.shape[-1] // p
        images = F.interpolate(images, size=(h * p, w * p), mode="bilinear", align_corners=False)
        x = torch.tanh(self.proj(images * 2 - 1))
        if return_cls:
            return x, x.mean(dim=(2, 3))
        return x


class NoiseBackbone(nn.Module):
    """Features that ignore the image: seeded noise per call position. Probes on it must fail."""

    def __init__(self, patch_size: int = 8, embed_dim: int = 32, seed: int = 0, name: str = "noise"):
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.name = name
        self.seed = seed
        self.register_buffer("dummy", torch.zeros(1))

    def patch_features(self, images: torch.Tensor, return_cls: bool = False):
        p = self.patch_size
        b, _, H, W = images.shape
        # Seed from the image content so the same image gives the same (meaningless) features.
        g = torch.Generator().manual_seed(self.seed + int(images.sum().item() * 1000) % 100003)
        x = torch.randn((b, self.embed_dim, H // p, W // p), generator=g)
        if return_cls:
            return x, x.mean(dim=(2, 3))
        return x
