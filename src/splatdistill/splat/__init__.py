"""The teacher-target pipeline between the renderer and the trainer (steps 2-7 of docs/design.md):
mask-aware upsampling -> lifting -> splatting -> semantic blending -> token grid.

Depends on ``geometry``, ``render``, ``data`` and ``backbones`` only; ``lifters`` and ``baselines`` build
on it and ``distill`` on all three.
"""

from splatdistill.splat.blend import semantic_blend
from splatdistill.splat.lifter import (
    DepthPredictor,
    Lifter,
    SplatSettings,
    available_lifters,
    depth_lifter,
    lifter_from_predictor,
    register_lifter,
)
from splatdistill.splat.targets import (
    SplatTargets,
    splat_targets,
    teacher_pixel_features,
    teacher_tokens,
    tokens_from_render,
)
from splatdistill.splat.upsample import mask_aware_upsample

__all__ = [
    "DepthPredictor",
    "Lifter",
    "SplatSettings",
    "SplatTargets",
    "available_lifters",
    "depth_lifter",
    "lifter_from_predictor",
    "mask_aware_upsample",
    "register_lifter",
    "semantic_blend",
    "splat_targets",
    "teacher_pixel_features",
    "teacher_tokens",
    "tokens_from_render",
]
