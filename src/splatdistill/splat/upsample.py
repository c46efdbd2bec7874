"""Mask-aware bilinear upsampling of patch tokens (docs/design.md, "The method", step 2).

Plain bilinear upsampling smears a token across object boundaries, so a lifted Gaussian on a chair's
edge would carry part of the wall's feature. Here each output pixel mixes only the bilinear
neighbours (of the 4) whose token lies in the pixel's own segment, with the bilinear weights
renormalised. A pixel with no same-segment neighbour gets plain bilinear (the reference code gives it
0, which punches holes into thin segments).

Geometry is exactly ``F.interpolate(mode="bilinear", align_corners=False)``, so a constant mask
reproduces it. The whole batch is one sparse (pixels x tokens) matrix with 4 entries per row times the
token matrix: no loop over segments or pixels, and any number of segments costs the same.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from splatdistill.memory import empty_fast


@functools.lru_cache(maxsize=16)
def _taps(h: int, w: int, H: int, W: int, device: str) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear taps of an h x w -> H x W upsampling (cached: they depend on sizes only).

    Returns token indices (4, H, W) and weights (4, H, W) tap-major (so per-pixel ops run over
    whole images), and the indices pixel-major (H * W * 4,) for the CSR columns.
    """
    y0, y1, ly = _source_index(H, h, device)
    x0, x1, lx = _source_index(W, w, device)
    ys, wy = (y0, y0, y1, y1), (1 - ly, 1 - ly, ly, ly)
    xs, wx = (x0, x1, x0, x1), (1 - lx, lx, 1 - lx, lx)
    tap = torch.stack([ys[k][:, None] * w + xs[k][None, :] for k in range(4)])
    bil = torch.stack([wy[k][:, None] * wx[k][None, :] for k in range(4)])
    return tap, bil, tap.permute(1, 2, 0).reshape(-1).contiguous()


def _source_index(out_len: int, in_len: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear taps (i0, i1, lambda1) like PyTorch's align_corners=False kernels."""
    scale = in_len / out_len
    src = (torch.arange(out_len, device=device, dtype=torch.float32) + 0.5) * scale - 0.5
    src = src.clamp(min=0)
    i0 = src.floor().long().clamp(max=in_len - 1)
    i1 = (i0 + 1).clamp(max=in_len - 1)
    return i0, i1, src - i0.float()


def _nearest(labels: Tensor, out_h: int, out_w: int) -> Tensor:
    """Sample an integer map (B, Hs, Ws) at the centres of an out_h x out_w grid."""
    Hs, Ws = labels.shape[-2:]
    if (Hs, Ws) == (out_h, out_w):
        return labels
    r = ((torch.arange(out_h, device=labels.device) + 0.5) * Hs / out_h).long().clamp(max=Hs - 1)
    c = ((torch.arange(out_w, device=labels.device) + 0.5) * Ws / out_w).long().clamp(max=Ws - 1)
    return labels[:, r][:, :, c]


def token_labels(segments: Tensor, grid: tuple[int, int]) -> Tensor:
    """Segment label of each token (B, h, w): the mask sampled at the token centre's pixel."""
    return _nearest(segments, grid[0], grid[1])


def mask_aware_upsample(tokens: Tensor, segments: Tensor, out_size: tuple[int, int] | None = None) -> Tensor:
    """Upsample tokens (B, C, h, w) to (B, C, H, W), mixing only same-segment tokens.

    Args:
        tokens: patch features, (B, C, h, w).
        segments: integer segment map (B, Hs, Ws) of the image; any labels (ids need not be dense).
        out_size: (H, W); defaults to the mask's size. The pixel label is the mask sampled at the
            output pixel centre, the token label the mask sampled at the token centre.

    Returns a (B, C, H, W) tensor in channels-last memory layout (it is produced as (B, H, W, C)
    rows of a sparse product; ``.contiguous()`` converts it if a consumer needs NCHW).
    Differentiable with respect to ``tokens``.
    """
    if tokens.dim() != 4 or segments.dim() != 3 or segments.shape[0] != tokens.shape[0]:
        raise ValueError(
            f"expected tokens (B,C,h,w) and segments (B,H,W), got {tuple(tokens.shape)} and {tuple(segments.shape)}"
        )
    if segments.dtype.is_floating_point or segments.dtype == torch.bool:
        raise ValueError(f"segments must be an integer map, got {segments.dtype}")
    B, C, h, w = tokens.shape
    H, W = segments.shape[-2:] if out_size is None else out_size
    H, W = int(H), int(W)
    device = tokens.device
    segments = segments.to(device)

    tap, bil, cols1 = _taps(h, w, H, W, str(device))
    lab_tok = token_labels(segments, (h, w)).reshape(B, h * w)
    lab_pix = _nearest(segments, H, W)  # (B, H, W)
    same = lab_tok[:, tap] == lab_pix[:, None]  # (B, 4, H, W)
    wm = bil * same
    total = wm.sum(1, keepdim=True)
    weights = torch.where(total > 0, wm / total.clamp(min=1e-30), bil)  # fallback: plain bilinear

    # CSR rows = pixels, 4 entries each (pixel-major, so the tap axis goes last)
    cols = cols1 if B == 1 else (cols1[None] + torch.arange(B, device=device)[:, None] * (h * w))
    vals = weights.permute(0, 2, 3, 1).reshape(-1).to(tokens.dtype)
    rows = B * H * W
    crow = torch.arange(0, 4 * rows + 1, 4, device=device)
    flat_tokens = tokens.permute(0, 2, 3, 1).reshape(B * h * w, C)
    out = _spmm(crow, cols.reshape(-1), vals, flat_tokens, rows)
    return out.reshape(B, H, W, C).permute(0, 3, 1, 2)


def _spmm(crow: Tensor, col: Tensor, val: Tensor, dense: Tensor, rows: int) -> Tensor:
    """CSR (rows x K) @ dense (K, C), writing into huge-page-backed memory on CPU."""
    if crow.device.type == "cpu":
        crow, col = crow.int(), col.int()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        mat = torch.sparse_csr_tensor(crow, col, val, (rows, dense.shape[0]), check_invariants=False)
        if dense.requires_grad and torch.is_grad_enabled():
            return torch.sparse.mm(mat, dense)
        out = empty_fast((rows, dense.shape[1]), dense.dtype, dense.device)
        return torch.addmm(out, mat, dense, beta=0, out=out)
