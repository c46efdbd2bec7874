"""Lifting whole scenes (export to PLY, benchmarks): every view of a scene through one lifter."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from splatdistill.data.scene import Scene
from splatdistill.data.views import Views
from splatdistill.errors import UserError
from splatdistill.geometry.gaussians import Gaussians
from splatdistill.geometry.lifting import lift_depth
from splatdistill.splat.lifter import DepthPredictor
from splatdistill.splat.targets import teacher_pixel_features


@torch.no_grad()
def load_scene_views(
    scene: Scene,
    view_ids: Sequence[int] | None = None,
    size: int = 112,
    backbone: Any = None,
    image_size: int = 224,
    mask: str = "auto",
) -> Views:
    """Views of ``scene`` resized to ``size``; with ``backbone``, also its ``features`` as the SnD teacher sees
    them (``image_size`` input, mask-aware upsampled to ``size``)."""
    return load_scene_views_timed(scene, view_ids, size, backbone, image_size, mask)[0]


@torch.no_grad()
def load_scene_views_timed(
    scene: Scene,
    view_ids: Sequence[int] | None = None,
    size: int = 112,
    backbone: Any = None,
    image_size: int = 224,
    mask: str = "auto",
    need_depth: str = "",
    batch: int = 8,
) -> tuple[Views, float]:
    """:func:`load_scene_views` and the seconds the teacher took (0 without a backbone), for benchmarks and
    the FiT3D baseline. ``need_depth`` (why depth is needed) refuses views without depth."""
    ids = list(range(len(scene))) if view_ids is None else [int(i) for i in view_ids]
    bad = [i for i in ids if not 0 <= i < len(scene)]
    if bad:
        raise UserError(f"scene {scene.name} has views 0..{len(scene) - 1}, not {bad}")
    loaded = [scene.load_view(i) for i in ids]
    if need_depth and any(v.depth is None for v in loaded):
        raise UserError(f"scene {scene.name}: {need_depth}, and some views have none", scene.root)
    small = Views.from_view_data(loaded, ids, mask, size=size, scene=scene.name)
    if backbone is None:
        return small, 0.0
    t0 = time.perf_counter()
    full = [torch.from_numpy(v.image).permute(2, 0, 1) for v in loaded]
    feats = teacher_pixel_features(backbone, full, small.segments, image_size, batch=batch)
    return replace(small, features=feats), time.perf_counter() - t0


def lift_scene(views: Views, lifter: Callable, carry: str = "auto", chunk: int = 2) -> Gaussians:
    """Lift all ``views`` with ``lifter``, ``chunk`` consecutive views at a time (a feed-forward
    predictor matches the views of a chunk against each other; a final odd view joins the last chunk;
    lifters with ``scene_level = True``, like the PLY lifter, get all views in one call).

    ``carry``: what the Gaussians carry: ``"features"`` (the views' teacher features), ``"rgb"`` (pixel
    colours; a :class:`DepthPredictor` still gets the teacher features for its own matching), or ``"auto"``
    (features when there are any).
    """
    if carry == "auto":
        carry = "features" if views.features is not None else "rgb"
    if carry == "features" and views.features is None:
        raise UserError("no teacher features to carry (pass a backbone)")
    V = len(views)
    if getattr(lifter, "scene_level", False):
        chunk = V  # scene-level geometry (e.g. PLY): one call sees every view
    starts = list(range(0, V, chunk))
    if len(starts) > 1 and V - starts[-1] < chunk and chunk > 1:
        starts.pop()  # merge a short tail into the previous chunk
    parts = []
    for k, s in enumerate(starts):
        e = starts[k + 1] if k + 1 < len(starts) else V
        part = views[s:e]
        part = replace(part, depths=part.depths if part.has_depth else None)
        if carry == "rgb":
            if isinstance(lifter, DepthPredictor):
                d, o, sc = lifter.predict(part)
                parts.append(
                    lift_depth(
                        d,
                        part.cameras,
                        part.images,
                        scale_factor=1.0 if sc is None else sc,
                        opacity=0.95 if o is None else o,
                    )
                )
                continue
            part = replace(part, features=part.images)
        parts.append(lifter(part))
    return Gaussians.cat(parts)
