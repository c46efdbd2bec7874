"""Lifters: context views -> feature Gaussians, chosen by a spec string (``TrainConfig.lifter``, ``--lifter``).

The interface (:data:`~splatdistill.splat.lifter.Lifter`, :class:`~splatdistill.splat.lifter.DepthPredictor`)
and the registry live in :mod:`splatdistill.splat.lifter`; this package adds the learned and file-based
lifters and is the entry point that knows them all (:func:`build_lifter`). Specs:

- ``auto`` (the default): the shipped feed-forward predictor (:data:`~splatdistill.lifters.pretrained.DEFAULT_PREDICTOR`),
  trained by this project; needs no depth;
- ``depth``: the dataset's depth, one pixel-aligned Gaussian per pixel with a fixed footprint and
  opacity (ground truth, or a sensor's depth);
- ``predictor:PATH`` / ``predictor:NAME``: the learned feed-forward predictor of
  :mod:`splatdistill.lifters.predictor` (a folder written by ``splatdistill lifter train``, or a shipped
  name from :mod:`splatdistill.lifters.pretrained`); needs no depth;
- ``ply:PATH``: Gaussians from standard 3DGS PLY files (a file, or a folder with one per scene), with
  features from the context views (:mod:`splatdistill.lifters.ply_lifter`);
- ``mvsplat:CKPT[:NEAR:FAR]``: a frozen MVSplat, as the paper lifts (:mod:`splatdistill.lifters.mvsplat`;
  MVSplat's code from the user's environment);
- ``depth-anything-v2:WEIGHTS[:INPUT_SIZE]``: Depth Anything V2 through transformers (a hub id or a folder),
  its monocular depth aligned to the views' metric scale (:mod:`splatdistill.lifters.depth_anything`);
- ``python:MODULE:FACTORY[:ARG]``: bring your own; ``FACTORY(settings)`` (or ``FACTORY(settings, ARG)``)
  returns a lifter, e.g. a wrapper around a user's MVSplat (docs/lifters.md);
- any name added with :func:`register_lifter`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from splatdistill.errors import UserError
from splatdistill.lifters.depth_anything import build_depth_anything_lifter
from splatdistill.lifters.mvsplat import build_mvsplat_lifter
from splatdistill.lifters.ply_lifter import PlyLifter
from splatdistill.lifters.predictor import PredictorLifter, load_predictor
from splatdistill.lifters.pretrained import DEFAULT_PREDICTOR, PRETRAINED, resolve_predictor
from splatdistill.splat.lifter import (
    DepthPredictor,
    available_lifters,
    build_registered_lifter,
    lifter_from_predictor,
    register_lifter,
)
from splatdistill.splat.scene import lift_scene, load_scene_views


def build_lifter(spec: str, settings: Any = None, data: str | None = None) -> Callable:
    """The lifter for ``spec`` (see the module docstring); ``data`` is the dataset (for ``ply:DIR``)."""
    return build_registered_lifter(spec, settings, data=data)


def _predictor(arg: str | None, settings: Any, data: str | None = None) -> Callable:
    if not arg:
        raise UserError(
            "predictor lifter needs a path or a shipped name: predictor:PATH (a folder written by "
            f"splatdistill lifter train) or predictor:NAME ({', '.join(PRETRAINED)})"
        )
    return PredictorLifter(load_predictor(resolve_predictor(arg)), settings)


def _auto(arg: str | None, settings: Any, data: str | None = None) -> Callable:
    if arg:
        raise UserError(f"the auto lifter takes no argument, got auto:{arg} (use predictor:{arg})")
    return PredictorLifter(load_predictor(resolve_predictor(DEFAULT_PREDICTOR)), settings)


def _ply(arg: str | None, settings: Any, data: str | None = None) -> Callable:
    if not arg:
        raise UserError("ply lifter needs a path: ply:FILE.ply or ply:DIR (one PLY per scene)")
    return PlyLifter(arg, data=data, renderer=getattr(settings, "renderer", "auto"))


register_lifter("auto", _auto, f"the shipped feed-forward predictor ({DEFAULT_PREDICTOR}); needs no depth")
register_lifter("predictor", _predictor, "learned feed-forward predictor: predictor:PATH or predictor:NAME")
register_lifter(
    "mvsplat", build_mvsplat_lifter, "a frozen MVSplat (your checkout on PYTHONPATH): mvsplat:CKPT[:NEAR:FAR]"
)
register_lifter(
    "depth-anything-v2",
    build_depth_anything_lifter,
    "Depth Anything V2 (transformers), aligned to the views' scale: depth-anything-v2:WEIGHTS[:INPUT_SIZE]",
)
register_lifter("ply", _ply, "3DGS PLY geometry, teacher features: ply:FILE or ply:DIR")

__all__ = [
    "DepthPredictor",
    "available_lifters",
    "build_lifter",
    "lift_scene",
    "lifter_from_predictor",
    "load_scene_views",
    "register_lifter",
]
