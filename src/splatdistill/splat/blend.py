"""Semantic blending of rendered features with their per-segment mean (docs/design.md, "The method", step 5).

``f <- a f + (1 - a) mean_segment(f)`` pulls every pixel towards its segment's average, which damps
view-dependent noise in the splatted teacher features while keeping segment boundaries sharp. Segment
sums are one ``index_add_`` over pixel rows and the means go back with one row gather, so the cost
does not depend on the number of segments.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from splatdistill.memory import empty_fast


def segment_index(segments: Tensor) -> tuple[Tensor, int]:
    """Map each pixel of (B, H, W) labels to a slot in [0, B*S): (index (B*H*W,), B*S).
    Labels are used as offsets from the smallest label when their range is small (no sort);
    otherwise they are compacted with ``unique``. Slots of different images never collide.
    """
    B = segments.shape[0]
    flat = segments.reshape(B, -1).long()
    if flat.numel() == 0:
        return flat.reshape(-1), 0
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo < max(4096, 4 * flat.shape[1]):
        local, S = flat - lo, hi - lo + 1
    elif flat.device.type == "cpu":
        uniq, inv = np.unique(flat.numpy(), return_inverse=True)
        local, S = torch.from_numpy(inv.reshape(flat.shape)), len(uniq)
    else:
        uniq, local = torch.unique(flat, return_inverse=True)
        S = uniq.numel()
    offsets = torch.arange(B, device=flat.device)[:, None] * S
    return (local + offsets).reshape(-1), B * S


def semantic_blend(features: Tensor, segments: Tensor, alpha: float, valid: Tensor | None = None) -> Tensor:
    """Blend features (B, C, H, W) with their segment mean: ``a f + (1 - a) mean_segment(f)``.

    Args:
        features: (B, C, H, W), any memory layout (channels-last, as rendered features come, is
            the fast one).
        segments: integer map (B, H, W); any labels.
        alpha: blend coefficient in [0, 1] (1 = unchanged, 0 = piecewise-constant segment means).
        valid: optional (B, H, W) bool, e.g. rendered coverage > threshold. Means are taken over
            valid pixels only, and only valid pixels are blended: invalid pixels come back unchanged
            (a zero stays zero, so a later "divide by the covered fraction" stays exact); pixels of a
            segment without any valid pixel are left unchanged too.

    Returns (B, C, H, W) in channels-last memory layout. Differentiable w.r.t. ``features``.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if features.dim() != 4 or segments.shape != features.shape[:1] + features.shape[2:]:
        raise ValueError(
            f"expected features (B,C,H,W) and segments (B,H,W), got {tuple(features.shape)} and {tuple(segments.shape)}"
        )
    if valid is not None and valid.shape != segments.shape:
        raise ValueError(f"valid must be {tuple(segments.shape)}, got {tuple(valid.shape)}")
    if alpha == 1.0:
        return features
    B, C, H, W = features.shape
    device, dtype = features.device, features.dtype
    rows = features.permute(0, 2, 3, 1).reshape(B * H * W, C)  # a view for channels-last input
    index, S = segment_index(segments.to(device))
    if valid is None:
        counts = torch.bincount(index, minlength=S).to(dtype)
        sums = torch.zeros(S, C, dtype=dtype, device=device).index_add_(0, index, rows)
    else:
        v = valid.reshape(-1).to(device)
        sel = torch.nonzero(v).squeeze(1)
        counts = torch.bincount(index[sel], minlength=S).to(dtype)
        sums = torch.zeros(S, C, dtype=dtype, device=device).index_add_(0, index[sel], rows[sel])
    has = counts > 0
    # per segment: out = coef * f + offset, with (a, (1-a) mean) or, for segments without
    # (valid) pixels, (1, 0)
    offset = torch.where(has[:, None], (1.0 - alpha) * sums / counts.clamp(min=1)[:, None], 0.0)
    coef = torch.where(has, torch.full_like(counts, float(alpha)), torch.ones_like(counts))
    pixel_coef = coef[index]
    if torch.is_grad_enabled() and features.requires_grad:
        out = torch.index_select(offset, 0, index)
    else:  # write into huge-page-backed memory (first touch of 100 MB costs ~2x less)
        out = torch.index_select(offset, 0, index, out=empty_fast((B * H * W, C), dtype, device))
    if valid is not None:  # invalid pixels: coefficient 1, offset 0 (unchanged)
        out[~v] = 0.0
        pixel_coef = torch.where(v, pixel_coef, torch.ones_like(pixel_coef))
    out.addcmul_(rows, pixel_coef[:, None])
    return out.reshape(B, H, W, C).permute(0, 3, 1, 2)
