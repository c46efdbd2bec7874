"""Large CPU arrays without the page-fault bill of fresh memory (used by the renderer, the upsampler,
blending and lifting).

torch's CPU allocator hands out fresh 4 KB pages for every large tensor, and first-touching them
costs more than the arithmetic of a memory-bound op (~40 ms per 100 MB here). NumPy madvises large
blocks into transparent huge pages, and a small cache hands a released buffer out again.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import torch
from torch import Tensor


def empty_fast(shape: tuple[int, ...], dtype: torch.dtype, device, recycle: bool = True) -> Tensor:
    """``torch.empty`` for large CPU outputs, without the page-fault bill of fresh memory.

    Memory comes from NumPy, which madvises large blocks into transparent huge pages, and a
    buffer whose previous tensor has been released is handed out again (a small caching
    allocator, like torch's for CUDA): first-touching a 100 MB output costs ~40 ms here, so a
    training loop that renders and drops a target per step would pay it every step. At most
    ``_MAX_BUFFERS`` buffers of >= 4 MB are kept; :func:`release_buffers` drops them.
    ``recycle=False`` gives fresh huge-page memory that is not kept (for long-lived results).
    """
    if torch.device(device).type != "cpu" or dtype not in _NP_DTYPES:
        return torch.empty(shape, dtype=dtype, device=device)
    np_dtype = _NP_DTYPES[dtype]
    if not recycle:
        return torch.from_numpy(np.empty(tuple(int(n) for n in shape), dtype=np_dtype))
    key = (tuple(int(n) for n in shape), np.dtype(np_dtype).str)
    with _BUFFER_LOCK:
        for buf in _BUFFERS.get(key, ()):
            # references: this list, the loop variable and getrefcount's argument; any live
            # tensor (or view, or NumPy view of one) of the buffer holds one more
            if sys.getrefcount(buf) == 3:
                return torch.from_numpy(buf)
        buf = np.empty(key[0], dtype=np_dtype)
        if buf.nbytes >= 1 << 22:
            _BUFFERS.setdefault(key, []).append(buf)
            _ORDER.append(key)
            while len(_ORDER) > _MAX_BUFFERS:  # forget the oldest
                old = _ORDER.pop(0)
                _BUFFERS[old].pop(0)
                if not _BUFFERS[old]:
                    del _BUFFERS[old]
        return torch.from_numpy(buf)


def release_buffers() -> None:
    """Drop the cached output buffers of :func:`empty_fast` (their memory returns to the OS once
    no tensor uses them)."""
    with _BUFFER_LOCK:
        _BUFFERS.clear()
        _ORDER.clear()


_MAX_BUFFERS = 4
_BUFFERS: dict[tuple, list] = {}
_ORDER: list = []
_BUFFER_LOCK = threading.Lock()
_NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}
