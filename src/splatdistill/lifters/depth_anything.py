"""Depth Anything V2 as a lifter (``lifter=depth-anything-v2:WEIGHTS[:INPUT_SIZE]``), for users with model-hub access.

Why: a modern monocular depth model trained on millions of real photographs holds on real captures
where the shipped rooms predictor does not, and its Small model is Apache-2.0. ``WEIGHTS`` is a hub id
(``depth-anything/Depth-Anything-V2-Small-hf``) or a local folder saved by ``save_pretrained``; the model
and its preprocessing are transformers' own (``DepthAnythingForDepthEstimation``, ``DPTImageProcessor``
with the released preprocessing: aspect kept, sides multiples of 14, ``INPUT_SIZE`` 518, bicubic,
ImageNet normalisation; the output resized back by the processor's ``post_process_depth_estimation``).

The relative models predict affine-invariant inverse depth; each view's scale and shift come from the
data (:mod:`splatdistill.lifters.mono_align`): from its depth where the dataset has some (a sensor,
sparse SfM points), else from the posed context views themselves. Metric models (``...-Metric-...-hf``,
``depth_estimation_type: metric``) give depth in metres, used as is. Each pixel becomes one Gaussian
carrying its teacher feature, with the footprint and opacity of ``settings`` (as ``lifter=depth``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from splatdistill.data.views import Views
from splatdistill.errors import UserError, require_extra
from splatdistill.geometry.cameras import Cameras
from splatdistill.geometry.gaussians import Gaussians
from splatdistill.geometry.lifting import lift_depth
from splatdistill.lifters.mono_align import fit_to_depth, fit_to_poses, inverse_depth_to_depth

DEFAULT_WEIGHTS = "depth-anything/Depth-Anything-V2-Small-hf"
INPUT_SIZE = 518
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _transformers() -> Any:
    return require_extra("transformers", "depth-anything", "the depth-anything-v2 lifter")


def load_depth_anything(weights: str) -> torch.nn.Module:
    """``DepthAnythingForDepthEstimation.from_pretrained(weights)`` (a hub id or a folder), in eval mode."""
    tf = _transformers()
    try:
        return tf.DepthAnythingForDepthEstimation.from_pretrained(weights).eval()
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"depth-anything-v2 lifter: cannot load weights {weights!r} ({first}); give a folder saved by "
            f"save_pretrained or a hub id such as {DEFAULT_WEIGHTS}"
        ) from None


def image_processor(input_size: int = INPUT_SIZE) -> Any:
    """The released models' preprocessing (their preprocessor_config.json), on images already in [0, 1]."""
    tf = _transformers()
    return tf.DPTImageProcessor(
        do_resize=True,
        size={"height": input_size, "width": input_size},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        resample=3,
        do_rescale=False,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        do_pad=False,
    )


class DepthAnythingLifter:
    """A :data:`~splatdistill.splat.lifter.Lifter`: Depth Anything V2 depth, aligned per view, lifted per pixel."""

    def __init__(self, model: torch.nn.Module, settings: Any = None, input_size: int = INPUT_SIZE):
        self.model = model.eval()
        self.processor = image_processor(input_size)
        self.metric = getattr(model.config, "depth_estimation_type", "relative") == "metric"
        self.scale = float(getattr(settings, "gaussian_scale", 1.0))
        self.opacity = float(getattr(settings, "gaussian_opacity", 0.95))
        self.last_fit: list[tuple[str, float, float]] = []  # per view: (source, s, t), for reports and tests

    @torch.no_grad()
    def raw(self, images: Tensor) -> Tensor:
        """The model's output (V, H, W) at the images' size: inverse depth up to scale and shift (relative
        models) or metric depth (metric models)."""
        V, _, H, W = images.shape
        inputs = self.processor(images=list(images.float().clamp(0, 1)), return_tensors="pt")
        device = next(self.model.parameters()).device
        out = self.model(pixel_values=inputs["pixel_values"].to(device))
        post = self.processor.post_process_depth_estimation(out, target_sizes=[(H, W)] * V)
        return torch.stack([p["predicted_depth"].float().cpu() for p in post])

    def depth(self, images: Tensor, cameras: Cameras, depth: Tensor | None = None) -> Tensor:
        """Metric z-depth (V, H, W) of the context views (see the module docstring)."""
        raw = self.raw(images)
        if self.metric:
            self.last_fit = [("metric", 1.0, 0.0)] * raw.shape[0]
            return raw
        fits: list[tuple[str, float, float] | None] = [None] * raw.shape[0]
        if depth is not None:
            for v in range(raw.shape[0]):
                st = fit_to_depth(raw[v], depth[v].float().cpu())
                fits[v] = ("depth", *st) if st is not None else None
        if any(f is None for f in fits):
            if raw.shape[0] < 2:
                raise UserError(
                    "depth-anything-v2 lifter: a single view without depth has no metric scale "
                    "(give two posed context views, or depth)"
                )
            posed = fit_to_poses(raw, images.float().cpu(), cameras.to("cpu"))
            fits = [f if f is not None else ("poses", *posed[v]) for v, f in enumerate(fits)]
        self.last_fit = fits  # type: ignore[assignment]
        return torch.stack([inverse_depth_to_depth(raw[v], f[1], f[2]) for v, f in enumerate(fits)])

    def __call__(self, views: Views) -> Gaussians:
        """Views' depths (when given) fix each view's scale and shift; without, the poses do."""
        features = views.features
        z = self.depth(views.images, views.cameras, views.depths).to(features.device, features.dtype)
        return lift_depth(z, views.cameras, features, scale_factor=self.scale, opacity=self.opacity)


def parse_depth_anything_spec(arg: str | None) -> tuple[str, int]:
    """``WEIGHTS[:INPUT_SIZE]`` -> (weights, input size); WEIGHTS defaults to the Apache-2.0 Small model."""
    if not arg:
        return DEFAULT_WEIGHTS, INPUT_SIZE
    head, sep, tail = arg.rpartition(":")
    if sep and tail.isdigit():
        size = int(tail)
        if size < 14:
            raise UserError(f"depth-anything-v2 lifter: input size must be >= 14, got {size}")
        return head or DEFAULT_WEIGHTS, size
    return arg, INPUT_SIZE


def build_depth_anything_lifter(arg: str | None, settings: Any = None, data: str | None = None) -> DepthAnythingLifter:
    weights, size = parse_depth_anything_spec(arg)
    return DepthAnythingLifter(load_depth_anything(weights), settings, size)
