"""Array operations of the renderer behind one interface: NumPy on CPU (around the compiled
kernels), torch on any device (the vectorised path, also used on CPU to check the kernels)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from splatdistill.render import cpu_kernels


class NumpyOps:
    """The array operations the CPU path uses outside the compiled kernels (depth ordering and
    pixel boxes in :func:`~splatdistill.render.composite.front_to_back`), on NumPy arrays."""

    f64, i32, i64 = np.float64, np.int32, np.int64

    def __init__(self, device: torch.device):
        self.device = device

    def float_dtype(self, t: Tensor):
        """Working precision for per-pair alphas: float64 for float64 features, else float32."""
        return np.float64 if t.dtype == torch.float64 else np.float32

    def astype(self, x, dtype):
        return x.astype(dtype, copy=False)

    def flatnonzero(self, mask):
        return np.flatnonzero(mask)

    def take(self, x, idx, axis=None):
        return np.take(x, idx, axis=axis)

    def argsort_float(self, x):
        if x.dtype == np.float64 and not np.isnan(x).any():
            return cpu_kernels.stable_argsort_f64(x)  # radix: 3-4x NumPy's stable sort
        return np.argsort(x, kind="stable")

    def sqrt(self, x):
        return np.sqrt(x)

    def log(self, x):
        return np.log(x)

    def ceil(self, x):
        return np.ceil(x)

    def floor(self, x):
        return np.floor(x)


class TorchOps(NumpyOps):
    """All array operations of the vectorised path, with torch (GPU, or CPU when the compiled
    kernels are switched off); the NumPy methods it inherits are all overridden."""

    f64, i32, i64 = torch.float64, torch.int32, torch.int64

    def asarray(self, t: Tensor) -> Tensor:
        return t.detach()

    def tensor(self, a: Tensor) -> Tensor:
        return a.contiguous()

    def float_dtype(self, t: Tensor):
        return torch.float64 if t.dtype == torch.float64 else torch.float32

    def arange(self, n, dtype=torch.int64):
        return torch.arange(n, dtype=dtype, device=self.device)

    def zeros(self, n, dtype):
        return torch.zeros(n, dtype=dtype, device=self.device)

    def astype(self, x, dtype):
        return x.to(dtype)

    def components(self, x, k):
        return x.movedim(-1, 0).contiguous()

    def tcopy(self, x):
        return x.t().contiguous()

    def flatnonzero(self, mask):
        return torch.nonzero(mask.reshape(-1)).squeeze(1)

    def take(self, x, idx, axis=None):
        return x[idx] if axis is None else x.index_select(axis, idx)

    def take_pair(self, a, b, idx):
        return a[idx], b[idx]

    def repeat(self, values, counts):
        return torch.repeat_interleave(values, counts)

    def bincount(self, x, n):
        return torch.bincount(x.long(), minlength=n)

    def cumsum(self, x):
        return torch.cumsum(x, 0)

    def argsort_float(self, x):
        return torch.argsort(x, stable=True)

    def stable_argsort(self, keys, num_keys):
        return torch.sort(keys, stable=True).indices

    def exp_(self, x):
        return x.exp_()

    def neg_(self, x):
        return x.neg_()

    def clip_max_(self, x, v):
        return x.clamp_(max=v)

    def log1m_f64(self, a):
        return a.to(torch.float64, copy=True).neg_().log1p_()

    def sub_(self, x, y):
        return x.sub_(y)

    def expm1(self, x):
        return torch.expm1(x)

    def where(self, c, a, b):
        return torch.where(c, a, b)

    def sqrt(self, x):
        return torch.sqrt(x)

    def log(self, x):
        return torch.log(x)

    def ceil(self, x):
        return torch.ceil(x)

    def floor(self, x):
        return torch.floor(x)

    def maximum(self, a, b):
        return torch.maximum(a, b)

    def minimum(self, a, b):
        return torch.minimum(a, b)

    def nan_to_num(self, x):
        return torch.nan_to_num(x, nan=0.0)

    def full_like(self, x, v):
        return torch.full_like(x, v)

    def to_host(self, x) -> np.ndarray:
        return x.cpu().numpy()

    def count_nonzero_rows(self, x):
        return torch.count_nonzero(x, dim=1)

    def all(self, x) -> bool:
        return bool(x.all())


def array_ops(device: torch.device, compiled: bool) -> NumpyOps:
    """The ops of a render: NumPy + compiled kernels (``compiled``, CPU only) or torch."""
    if compiled and device.type == "cpu":
        return NumpyOps(device)
    return TorchOps(device)


def uses_kernels(op: NumpyOps) -> bool:
    """Whether bands are composited by the compiled kernels (CPU) or by array ops."""
    return type(op) is NumpyOps
