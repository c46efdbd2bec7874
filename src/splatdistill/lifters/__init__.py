"""Lifters: context views -> feature Gaussians, chosen by a spec string (``TrainConfig.lifter``, ``--lifter``).

A lifter is any callable ``(features (V, C, H, W), depth (V, H, W) | None, images (V, 3, H, W),
cameras: Cameras) -> Gaussians`` (:data:`splatdistill.distill.targets.Lifter`). Specs:

- ``depth``: the dataset's depth, one pixel-aligned Gaussian per pixel with a fixed footprint and
  opacity (ground truth, or a sensor's depth);
- ``predictor:PATH``: the learned feed-forward predictor of :mod:`splatdistill.lifters.predictor`
  (a folder written by ``splatdistill train-lifter``); needs no depth;
- ``ply:PATH``: Gaussians from standard 3DGS PLY files (a file, or a folder with one per scene), with
  features from the context views (:mod:`splatdistill.lifters.ply_lifter`);
- ``python:MODULE:FACTORY[:ARG]``: bring your own; ``FACTORY(settings)`` (or ``FACTORY(settings, ARG)``)
  returns a lifter, e.g. a wrapper around a user's MVSplat (docs/lifters.md);
- any name added with :func:`register_lifter`.

For predictors that output depth (and optionally opacity and scale) rather than Gaussians,
:func:`lifter_from_predictor` does the pixel-aligned lifting.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from splatdistill.errors import UserError
from splatdistill.geometry.cameras import Cameras
from splatdistill.geometry.gaussians import Gaussians
from splatdistill.geometry.lifting import lift_depth

#: factory(arg after the colon or None, settings, data=dataset path or None) -> lifter
LifterFactory = Callable[..., Callable]
_REGISTRY: dict[str, tuple[LifterFactory, str]] = {}


@runtime_checkable
class DepthPredictor(Protocol):
    """A feed-forward model that predicts per-pixel depth for posed context views.

    ``predict(images (V, 3, H, W) in [0, 1], cameras (V) at H x W, features (V, C, H, W) or None)``
    returns ``(depth (V, H, W) z-depth in the cameras' units, opacity (V, H, W) or None, scale (V, H, W)
    or None)``; ``scale`` multiplies the pixel footprint (see :func:`~splatdistill.geometry.lift_depth`).
    """

    def predict(self, images: Tensor, cameras: Cameras, features: Tensor | None
                ) -> tuple[Tensor, Tensor | None, Tensor | None]: ...


def lifter_from_predictor(predictor: DepthPredictor, settings: Any = None) -> Callable:
    """Pixel-aligned lifter of a :class:`DepthPredictor`: missing opacity/scale fall back to ``settings``."""
    base_scale = float(getattr(settings, "gaussian_scale", 1.0))
    base_opacity = float(getattr(settings, "gaussian_opacity", 0.95))

    def lift(features: Tensor, depth: Tensor | None, images: Tensor, cameras: Cameras) -> Gaussians:
        d, o, s = predictor.predict(images, cameras, features)
        dt = features.dtype
        return lift_depth(d.to(dt), cameras, features,
                          scale_factor=base_scale if s is None else (base_scale * s).to(dt),
                          opacity=base_opacity if o is None else o.clamp(0, 1).to(dt))

    return lift


def register_lifter(name: str, factory: LifterFactory, help: str = "") -> None:
    """Make ``name`` (or ``name:ARG``) a lifter spec; ``factory(arg, settings, data=...)`` builds it."""
    if not name.isidentifier():
        raise ValueError(f"lifter names must be identifiers, got {name!r}")
    _REGISTRY[name] = (factory, help)


def available_lifters() -> dict[str, str]:
    return {k: h for k, (_, h) in sorted(_REGISTRY.items())}


def build_lifter(spec: str, settings: Any = None, data: str | None = None) -> Callable:
    """The lifter for ``spec`` (see the module docstring); ``data`` is the dataset (for ``ply:DIR``)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"empty lifter spec (choose from {', '.join(_REGISTRY)})")
    name, sep, arg = spec.strip().partition(":")
    if name not in _REGISTRY:
        raise UserError(f"unknown lifter {spec!r} (available: {', '.join(f'{k}' for k in _REGISTRY)}; "
                        "e.g. depth, predictor:PATH, ply:PATH, python:MODULE:FACTORY)")
    factory, _ = _REGISTRY[name]
    return factory(arg if sep else None, settings, data=data)


# ---- lifting whole scenes (export, benchmarks) -----------------------------------------------------

@dataclass
class SceneViews:
    """Views of one scene prepared for lifting at ``size`` x ``size``."""

    images: Tensor  # (V, 3, S, S) in [0, 1]
    depths: Tensor  # (V, S, S), 0 = unknown
    cameras: Cameras  # (V) at S x S
    features: Tensor | None  # (V, C, S, S) teacher features (mask-aware upsampled), if a backbone was given
    view_ids: list[int]
    teacher_seconds: float = 0.0


@torch.no_grad()
def load_scene_views(scene: Any, view_ids: Sequence[int] | None = None, size: int = 112, backbone: Any = None,
                     image_size: int = 224, mask: str = "auto") -> SceneViews:
    """Resize views of ``scene`` to ``size``; with ``backbone``, also its features as the SnD teacher sees them
    (``image_size`` input, mask-aware upsampled to ``size``)."""
    import numpy as np
    import torch.nn.functional as F

    from splatdistill.data.masks import segments_for_view
    from splatdistill.data.sampler import resize_view
    from splatdistill.distill.upsample import mask_aware_upsample

    ids = list(range(len(scene))) if view_ids is None else [int(i) for i in view_ids]
    bad = [i for i in ids if not 0 <= i < len(scene)]
    if bad:
        raise UserError(f"scene {scene.name} has views 0..{len(scene) - 1}, not {bad}")
    full = [scene.load_view(i) for i in ids]
    small = [resize_view(v, (size, size)) for v in full]
    images = torch.stack([torch.from_numpy(v.image).permute(2, 0, 1).float() for v in small])
    depths = torch.stack([torch.from_numpy(v.depth if v.depth is not None else np.zeros((size, size), np.float32))
                          for v in small]).float()
    cams = Cameras.from_cam_to_world(torch.from_numpy(np.stack([v.K for v in small])).float(),
                                     torch.from_numpy(np.stack([v.cam_to_world for v in small])).float(), size, size)
    feats, seconds = None, 0.0
    if backbone is not None:
        t0 = time.perf_counter()
        big = torch.stack([torch.from_numpy(v.image).permute(2, 0, 1).float() for v in full])
        big = F.interpolate(big, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
        tokens = torch.cat([backbone.patch_features(big[i:i + 8]).float() for i in range(0, len(ids), 8)])
        segs = torch.from_numpy(np.stack([segments_for_view(v, mask) for v in small])).long()
        feats = mask_aware_upsample(tokens, segs, (size, size)).contiguous()
        seconds = time.perf_counter() - t0
    return SceneViews(images, depths, cams, feats, ids, seconds)


def lift_scene(views: SceneViews, lifter: Callable, carry: str = "auto", chunk: int = 2) -> Gaussians:
    """Lift all prepared views with ``lifter``, ``chunk`` consecutive views at a time (a feed-forward
    predictor matches the views of a chunk against each other; a final odd view joins the last chunk;
    lifters with ``scene_level = True``, like the PLY lifter, get all views in one call).

    ``carry``: what the Gaussians carry: ``"features"`` (teacher features), ``"rgb"`` (pixel colours; a
    :class:`DepthPredictor` still gets the teacher features for its own matching), or ``"auto"``
    (features when there are any).
    """
    if carry == "auto":
        carry = "features" if views.features is not None else "rgb"
    if carry == "features" and views.features is None:
        raise UserError("no teacher features to carry (pass a backbone)")
    V = len(views.view_ids)
    if getattr(lifter, "scene_level", False):
        chunk = V  # scene-level geometry (e.g. PLY): one call sees every view
    starts = list(range(0, V, chunk))
    if len(starts) > 1 and V - starts[-1] < chunk and chunk > 1:
        starts.pop()  # merge a short tail into the previous chunk
    parts = []
    for k, s in enumerate(starts):
        e = starts[k + 1] if k + 1 < len(starts) else V
        sl = slice(s, e)
        cams = views.cameras[sl]
        feats = None if views.features is None else views.features[sl]
        depth = views.depths[sl] if bool((views.depths[sl] > 0).any()) else None
        if carry == "rgb":
            if isinstance(lifter, DepthPredictor):
                d, o, sc = lifter.predict(views.images[sl], cams, feats)
                parts.append(lift_depth(d, cams, views.images[sl], scale_factor=1.0 if sc is None else sc,
                                        opacity=0.95 if o is None else o))
                continue
            feats = views.images[sl]
        parts.append(lifter(feats, depth, views.images[sl], cams))
    return Gaussians.cat(parts)


# ---- built-in lifters --------------------------------------------------------------------------------

def _depth(arg: str | None, settings: Any, data: str | None = None) -> Callable:
    from splatdistill.distill.targets import SplatSettings, depth_lifter

    if arg:
        raise UserError(f"the depth lifter takes no argument, got depth:{arg}")
    return depth_lifter(settings if settings is not None else SplatSettings())


def _predictor(arg: str | None, settings: Any, data: str | None = None) -> Callable:
    from splatdistill.lifters.predictor import PredictorLifter, load_predictor

    if not arg:
        raise UserError("predictor lifter needs a path: predictor:PATH (a folder written by splatdistill train-lifter)")
    return PredictorLifter(load_predictor(arg), settings)


def _ply(arg: str | None, settings: Any, data: str | None = None) -> Callable:
    from splatdistill.lifters.ply_lifter import PlyLifter

    if not arg:
        raise UserError("ply lifter needs a path: ply:FILE.ply or ply:DIR (one PLY per scene)")
    return PlyLifter(arg, data=data, renderer=getattr(settings, "renderer", "auto"))


def _python(arg: str | None, settings: Any, data: str | None = None) -> Callable:
    parts = (arg or "").split(":", 2)
    if len(parts) < 2 or not all(parts[:2]):
        raise UserError(f"python lifter spec must be python:MODULE:FACTORY[:ARG], got python:{arg or ''}")
    module, attr = parts[0], parts[1]
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"python lifter: cannot import {module!r} ({exc})") from None
    factory = getattr(mod, attr, None)
    if not callable(factory):
        raise UserError(f"python lifter: {module}.{attr} is not a callable factory")
    lifter = factory(settings, parts[2]) if len(parts) == 3 else factory(settings)
    if isinstance(lifter, DepthPredictor) and not _is_lifter(lifter):
        lifter = lifter_from_predictor(lifter, settings)
    if not callable(lifter):
        raise UserError(f"python lifter: {module}.{attr}(...) returned {type(lifter).__name__}, not a lifter")
    return lifter


def _is_lifter(obj: Any) -> bool:
    return callable(obj) and not isinstance(obj, type)


register_lifter("depth", _depth, "dataset depth (pixel-aligned)")
register_lifter("predictor", _predictor, "learned feed-forward predictor: predictor:PATH")
register_lifter("ply", _ply, "3DGS PLY geometry, teacher features: ply:FILE or ply:DIR")
register_lifter("python", _python, "your own factory: python:MODULE:FACTORY[:ARG]")

__all__ = ["DepthPredictor", "SceneViews", "available_lifters", "build_lifter", "lift_scene", "lifter_from_predictor",
           "load_scene_views", "register_lifter"]
