"""The lifter interface: context views -> feature Gaussians (pipeline step 3).

A lifter is any callable ``(views: Views) -> Gaussians`` over V context views at H x W:
``views.features`` (V, C, H, W) are the teacher's mask-aware upsampled features (what the Gaussians
carry), ``views.images`` their pixels in [0, 1], ``views.cameras`` their intrinsics and poses, and
``views.depths`` (V, H, W) their depth maps or None. Gaussian ``i`` carries the feature of the pixel (or
point) it was made for.

This module holds what every lifter shares: the :data:`Lifter` type, the :class:`SplatSettings` a
lifter may read, the :class:`DepthPredictor` protocol with its pixel-aligned wrapper, the ``depth``
lifter and the spec registry. Concrete learned or file-based lifters live in
:mod:`splatdistill.lifters`, which registers them (``predictor:``, ``ply:``) when imported; build
lifters through :func:`splatdistill.lifters.build_lifter` so that they are known.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from torch import Tensor

from splatdistill.data.views import Views
from splatdistill.errors import UserError
from splatdistill.geometry.gaussians import Gaussians
from splatdistill.geometry.lifting import lift_depth
from splatdistill.registry import Registry

#: context views (V) carrying the features to lift -> Gaussians
Lifter = Callable[[Views], Gaussians]
RendererName = Literal["auto", "torch", "gsplat"]


@dataclass
class SplatSettings:
    """What the teacher-target pipeline needs to know besides the views."""

    blend_alpha: float = 0.5
    gaussian_scale: float = 1.0
    gaussian_opacity: float = 0.95
    renderer: RendererName = "auto"
    min_coverage: float = 0.5
    # render -> token grid: "bilinear" samples the render at the token centres (the reference; rendering
    # a view's own tokens back gives them exactly), "antialias" averages each token's footprint (a low
    # pass: cosine 0.98 to the originals on real DINOv2 tokens; docs/rendering.md)
    downsample: Literal["bilinear", "antialias"] = "bilinear"


@runtime_checkable
class DepthPredictor(Protocol):
    """A feed-forward model that predicts per-pixel depth for posed context views.

    ``predict(views)`` for V views (images in [0, 1], cameras at H x W, teacher features or None) returns
    ``(depth (V, H, W) z-depth in the cameras' units, opacity (V, H, W) or None, scale (V, H, W) or None)``;
    ``scale`` multiplies the pixel footprint (see :func:`~splatdistill.geometry.lift_depth`).
    """

    def predict(self, views: Views) -> tuple[Tensor, Tensor | None, Tensor | None]: ...


def depth_lifter(settings: SplatSettings) -> Lifter:
    """One pixel-aligned Gaussian per pixel at the given depth, fixed footprint and opacity."""

    def lift(views: Views) -> Gaussians:
        if views.depths is None:
            raise ValueError("the depth lifter needs context depth maps")
        return lift_depth(
            views.depths,
            views.cameras,
            views.features,
            scale_factor=settings.gaussian_scale,
            opacity=settings.gaussian_opacity,
        )

    return lift


def lifter_from_predictor(predictor: DepthPredictor, settings: Any = None) -> Lifter:
    """Pixel-aligned lifter of a :class:`DepthPredictor`: missing opacity/scale fall back to ``settings``."""
    base_scale = float(getattr(settings, "gaussian_scale", 1.0))
    base_opacity = float(getattr(settings, "gaussian_opacity", 0.95))

    def lift(views: Views) -> Gaussians:
        d, o, s = predictor.predict(views)
        dt = views.features.dtype
        return lift_depth(
            d.to(dt),
            views.cameras,
            views.features,
            scale_factor=base_scale if s is None else (base_scale * s).to(dt),
            opacity=base_opacity if o is None else o.clamp(0, 1).to(dt),
        )

    return lift


# ---- the spec registry ------------------------------------------------------------------------------

#: factory(arg after the colon or None, settings, data=dataset path or None) -> lifter
LifterFactory = Callable[..., Callable]
#: spec name -> (factory, one line of help)
LIFTERS: Registry[tuple[LifterFactory, str]] = Registry("lifter")


def register_lifter(name: str, factory: LifterFactory, help: str = "") -> None:
    """Make ``name`` (or ``name:ARG``) a lifter spec; ``factory(arg, settings, data=...)`` builds it."""
    if not name.replace("-", "_").isidentifier():
        raise ValueError(f"lifter names must be identifiers (hyphens allowed), got {name!r}")
    LIFTERS.register(name, (factory, help), replace=True)  # a script may redefine its own name


def available_lifters() -> dict[str, str]:
    return {k: h for k, (_, h) in sorted(LIFTERS.items())}


def build_registered_lifter(spec: str, settings: Any = None, data: str | None = None) -> Callable:
    """The lifter for ``spec`` among the registered names (:func:`splatdistill.lifters.build_lifter`
    is the entry point that knows every built-in one)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"empty lifter spec (choose from {', '.join(LIFTERS)})")
    name, sep, arg = spec.strip().partition(":")
    if name not in LIFTERS:
        close = LIFTERS.suggest(name)
        raise UserError(
            f"unknown lifter {spec!r} (available: {', '.join(LIFTERS)}; "
            "e.g. depth, predictor:PATH, ply:PATH, python:MODULE:FACTORY)"
            + (f"; did you mean {close!r}?" if close else "")
        )
    factory, _ = LIFTERS.get(name)
    return factory(arg if sep else None, settings, data=data)


def _depth(arg: str | None, settings: Any, data: str | None = None) -> Callable:
    if arg:
        raise UserError(f"the depth lifter takes no argument, got depth:{arg}")
    return depth_lifter(settings if settings is not None else SplatSettings())


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
    if isinstance(lifter, DepthPredictor) and not (callable(lifter) and not isinstance(lifter, type)):
        lifter = lifter_from_predictor(lifter, settings)
    if not callable(lifter):
        raise UserError(f"python lifter: {module}.{attr}(...) returned {type(lifter).__name__}, not a lifter")
    return lifter


register_lifter("depth", _depth, "dataset depth (pixel-aligned)")
register_lifter("python", _python, "your own factory: python:MODULE:FACTORY[:ARG]")
