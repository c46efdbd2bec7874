"""3D Gaussians carrying feature vectors, and quaternion+scale <-> covariance conversions.

The renderer takes covariances directly (as gsplat's ``covars=`` does) because feed-forward lifting
produces them in closed form; quaternion+scale is only needed for file formats (3DGS PLY) and gsplat's
default path. Quaternions are (w, x, y, z) like gsplat and the 3DGS PLY layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from splatdistill.memory import empty_fast


@dataclass
class Gaussians:
    """A set of 3D Gaussians, optionally batched over leading dims ``...``.

    means (..., N, 3); covariances (..., N, 3, 3) symmetric PSD; opacities (..., N) in [0, 1];
    features (..., N, C).
    """

    means: Tensor
    covariances: Tensor
    opacities: Tensor
    features: Tensor

    def __post_init__(self) -> None:
        m, c, o, f = self.means, self.covariances, self.opacities, self.features
        batch_n = m.shape[:-1]
        if m.shape[-1:] != (3,):
            raise ValueError(f"means must be (..., N, 3), got {tuple(m.shape)}")
        if c.shape != batch_n + (3, 3):
            raise ValueError(f"covariances must be {tuple(batch_n) + (3, 3)}, got {tuple(c.shape)}")
        if o.shape != batch_n:
            raise ValueError(f"opacities must be {tuple(batch_n)}, got {tuple(o.shape)}")
        if f.shape[:-1] != batch_n:
            raise ValueError(f"features must be {tuple(batch_n)} + (C,), got {tuple(f.shape)}")

    def __len__(self) -> int:
        return self.means.shape[-2]

    @property
    def num_channels(self) -> int:
        return self.features.shape[-1]

    @property
    def batch_shape(self) -> torch.Size:
        return self.means.shape[:-2]

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device=None, dtype: torch.dtype | None = None) -> Gaussians:
        return Gaussians(
            self.means.to(device, dtype),
            self.covariances.to(device, dtype),
            self.opacities.to(device, dtype),
            self.features.to(device, dtype),
        )

    def select(self, index: Tensor) -> Gaussians:
        """Gaussians picked by a boolean mask or index along N (unbatched only)."""
        if self.batch_shape:
            raise ValueError("select() needs unbatched Gaussians")
        return Gaussians(self.means[index], self.covariances[index], self.opacities[index], self.features[index])

    def with_features(self, features: Tensor) -> Gaussians:
        return replace(self, features=features)

    @staticmethod
    def cat(parts: Sequence[Gaussians]) -> Gaussians:
        """Concatenate along N."""
        feats = [p.features for p in parts]
        if (
            feats
            and all(f.device.type == "cpu" and not f.requires_grad and f.dim() == 2 for f in feats)
            and len({f.dtype for f in feats}) == 1
        ):
            # wide features dominate the copy: huge-page output memory (splatdistill.memory)
            out = empty_fast((sum(f.shape[0] for f in feats), feats[0].shape[1]), feats[0].dtype, "cpu", recycle=False)
            features = torch.cat(feats, 0, out=out)
        else:
            features = torch.cat(feats, -2)
        return Gaussians(
            torch.cat([p.means for p in parts], -2),
            torch.cat([p.covariances for p in parts], -3),
            torch.cat([p.opacities for p in parts], -1),
            features,
        )

    def quats_scales(self) -> tuple[Tensor, Tensor]:
        """(quats wxyz (..., N, 4), scales (..., N, 3)) with R diag(s^2) R^T = covariance."""
        return covariance_to_quat_scale(self.covariances)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) of (not necessarily unit) wxyz quaternions (..., 4)."""
    q = torch.nn.functional.normalize(quats, dim=-1)
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return R.reshape(q.shape[:-1] + (3, 3))


def rotmat_to_quat(R: Tensor) -> Tensor:
    """Unit wxyz quaternions (..., 4), w >= 0, of rotation matrices (..., 3, 3).

    Uses the largest of the four 4*q_i^2 diagonal combinations for each matrix, which keeps the
    division well conditioned for every rotation (Shepperd's method), without branching per element.
    """
    m = R
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 q_i^2 for i = w, x, y, z
    d = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1).clamp(
        min=0
    )
    # candidate quaternions scaled by 4 q_i (row i is exact when q_i is largest)
    cand = torch.stack(
        [
            torch.stack([d[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, d[..., 1], m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, d[..., 2], m12 + m21], -1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, d[..., 3]], -1),
        ],
        dim=-2,
    )
    best = d.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(best.shape + (1, 4)))[..., 0, :]
    q = torch.nn.functional.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_scale_to_covariance(quats: Tensor, scales: Tensor) -> Tensor:
    """Covariances R diag(scales^2) R^T (..., 3, 3) from wxyz quats (..., 4) and scales (..., 3)."""
    M = quat_to_rotmat(quats) * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def covariance_to_quat_scale(covariances: Tensor, min_scale: float = 0.0) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`quat_scale_to_covariance` via a symmetric eigendecomposition.

    Returns (quats wxyz (..., 4), scales (..., 3)); the eigenvector frame is made a proper rotation
    (det +1) by flipping one axis where needed. Eigenvalues below ``min_scale**2`` are clamped, so a
    rank-deficient covariance yields finite log-scales when ``min_scale > 0``.
    """
    sym = 0.5 * (covariances + covariances.transpose(-1, -2))
    # eigh in float64: float32 loses the small axis of thin (pixel-aligned) Gaussians
    evals, evecs = torch.linalg.eigh(sym.double())
    scales = evals.clamp(min=min_scale**2).sqrt()
    flip = torch.linalg.det(evecs) < 0
    evecs = torch.where(
        flip[..., None, None], evecs * torch.tensor([1.0, 1.0, -1.0], dtype=evecs.dtype, device=evecs.device), evecs
    )
    quats = rotmat_to_quat(evecs)
    return quats.to(covariances.dtype), scales.to(covariances.dtype)
