"""Segment masks for mask-aware upsampling and semantic blending.

The dataset's instance map when it has one, otherwise superpixels computed on the fly
(scikit-image SLIC or Felzenszwalb). Whatever the source, labels come back as consecutive ints
0..S-1 (int32, (H, W)), so they can index per-segment buffers directly.
"""

from __future__ import annotations

import numpy as np

from splatdistill.errors import UserError

from .scene import ViewData

MODES = ("auto", "instance", "slic", "felzenszwalb")


def _consecutive(labels: np.ndarray) -> np.ndarray:
    _, inv = np.unique(labels, return_inverse=True)
    return inv.reshape(labels.shape).astype(np.int32)


def slic_segments(image: np.ndarray, n_segments: int = 64, compactness: float = 10.0) -> np.ndarray:
    from skimage.segmentation import slic

    return _consecutive(slic(image, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1))


def felzenszwalb_segments(image: np.ndarray, scale: float = 100.0, sigma: float = 0.8, min_size: int | None = None) -> np.ndarray:
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
    if mode == "instance":
        if view.instance is None:
            raise UserError(f"view {view.name or '?'} has no instance map; use mask mode slic, felzenszwalb or auto")
        return _consecutive(view.instance)
    if mode == "slic":
        return slic_segments(view.image, n_segments=n_segments)
    return felzenszwalb_segments(view.image)
