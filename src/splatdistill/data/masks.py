"""Segment masks for mask-aware upsampling and semantic blending.

The dataset's instance map when it has one, otherwise superpixels computed on the fly
(scikit-image SLIC or Felzenszwalb). Whatever the source, labels come back as consecutive ints
0..S-1 (int32, (H, W)), so they can index per-segment buffers directly.

A run that falls back to superpixels (mode ``auto``) says so once per reason, with the reason: the
scene has no masks folder, an image has no mask in it, a mask does not decode, or the dataset has no
instance masks at all (a :class:`MaskFallbackWarning`). The paper trains on instance masks, so a silent
fallback would be a different method.
"""

from __future__ import annotations

import warnings

import numpy as np

from splatdistill.errors import UserError

from .scene import ViewData

MODES = ("auto", "instance", "slic", "felzenszwalb")
#: why a view has no instance map (ViewData.instance_missing kinds)
NO_MASKS_FOLDER, NO_MASK_FOR_IMAGE, UNREADABLE_MASK = "no masks folder", "no mask for this image", "unreadable mask"
NO_MASKS_IN_DATASET = "the dataset has no instance masks"
_said: set[str] = set()


class MaskFallbackWarning(UserWarning):
    """Segments come from superpixels instead of the dataset's instance masks."""


def reset_fallback_notes() -> None:
    """Forget which fallbacks were announced (a new run in the same process says them again)."""
    _said.clear()


def note_fallback(view: ViewData) -> None:
    """Say, once per kind of reason, that ``view`` falls back to superpixels and why."""
    kind, detail = view.instance_missing or (NO_MASKS_IN_DATASET, "")
    if kind in _said:
        return
    _said.add(kind)
    where = f" ({detail})" if detail else ""
    warnings.warn(
        f"masks: {kind}{where}, view {view.name or '?'}: using SLIC superpixels instead (said once for "
        "this reason; mask=slic makes it the choice)",
        MaskFallbackWarning,
        stacklevel=2,
    )


def _consecutive(labels: np.ndarray) -> np.ndarray:
    _, inv = np.unique(labels, return_inverse=True)
    return inv.reshape(labels.shape).astype(np.int32)


def slic_segments(image: np.ndarray, n_segments: int = 64, compactness: float = 10.0) -> np.ndarray:
    from skimage.segmentation import slic

    return _consecutive(slic(image, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1))


def felzenszwalb_segments(
    image: np.ndarray, scale: float = 100.0, sigma: float = 0.8, min_size: int | None = None
) -> np.ndarray:
    from skimage.segmentation import felzenszwalb

    h, w = image.shape[:2]
    min_size = min_size if min_size is not None else max(20, h * w // 400)
    return _consecutive(felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size, channel_axis=-1))


def segments_for_view(view: ViewData, mode: str = "auto", n_segments: int = 64) -> np.ndarray:
    """(H, W) int32 segment labels 0..S-1 for ``view``.

    ``instance`` uses the dataset's instance map (pixels without an instance form one more
    segment); ``slic`` / ``felzenszwalb`` compute superpixels from the image; ``auto`` takes the
    instance map when the view has one and SLIC otherwise.
    """
    if mode not in MODES:
        raise UserError(f"unknown mask mode '{mode}' (choose from {', '.join(MODES)})")
    if mode == "auto":
        mode = "instance" if view.instance is not None else "slic"
        if mode == "slic":
            note_fallback(view)
    if mode == "instance":
        if view.instance is None:
            why = f" ({': '.join(view.instance_missing)})" if view.instance_missing else ""
            raise UserError(
                f"view {view.name or '?'} has no instance map{why}; use mask mode slic, felzenszwalb or auto"
            )
        return _consecutive(view.instance)
    if mode == "slic":
        return slic_segments(view.image, n_segments=n_segments)
    return felzenszwalb_segments(view.image)
