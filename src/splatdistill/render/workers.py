"""Worker threads of the CPU renderer: row bands of an image and slices of the Gaussians run
concurrently (the compiled kernels release the GIL, and unlike per-op OpenMP teams the bands never
wait on each other until the end)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

#: pixels per row band on CPU: a band's pair arrays (~25 pairs per pixel) then fit in L2/L3
BAND_PIXELS = 1 << 13
#: Gaussians per projection slice on CPU (slices run concurrently on the worker threads)
PROJECT_SLICE = 1 << 16
_POOL: dict[int, ThreadPoolExecutor] = {}


def project_slice() -> int:
    return PROJECT_SLICE


def num_bands(compiled: bool, width: int, height: int) -> int:
    """Row bands per image on the compiled CPU path (1 otherwise)."""
    if not compiled:
        return 1
    return max(1, min(height, -(-(width * height) // BAND_PIXELS)))


def worker_pool(compiled: bool) -> ThreadPoolExecutor | None:
    """Worker threads for bands and slices: one per torch intra-op thread (None: run inline)."""
    n = torch.get_num_threads()
    if not compiled or n <= 1:
        return None
    if n not in _POOL:
        _POOL[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="splat")
    return _POOL[n]


def map_on(pool, fn, *iterables) -> list:
    """``fn`` over the zipped iterables, on ``pool`` when there is one (in order)."""
    if pool is None:
        return [fn(*args) for args in zip(*iterables)]
    return list(pool.map(fn, *iterables))
