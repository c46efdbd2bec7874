"""CPU threads that fit the machine: how many cores this process may use, and torch's thread count.

Two things make a busy machine catastrophically slow rather than just slower (measured with
``splatdistill bench step`` beside one ``python3 -c "while True: pass"``; docs/errors.md, "Busy machines"):

- **Spinning OpenMP workers.** GNU OpenMP (torch's CPU backend) spins ~300,000 times before a worker
  sleeps; with a core taken by another process, the spinning worker holds the core the others need.
  A step went 1.0 s -> 3.3 s beside one hog at the default, 1.1 s -> 1.7 s with ``GOMP_SPINCOUNT=1000``.
  :func:`prepare_openmp` sets that before torch loads (libgomp reads it once, at load time), called by the
  command line's entry point only (``import splatdistill`` leaves a user's process alone); a user's own
  ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` wins.
- **More threads than cores.** torch counts the machine's cores, not the ones a container or
  ``taskset`` leaves the process: :func:`available_cores` reads the affinity mask and the cgroup CPU quota.

``SPLATDISTILL_THREADS`` (or a command's ``threads`` option) overrides the count.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path

from splatdistill.errors import UserError

THREADS_ENV = "SPLATDISTILL_THREADS"
#: spins before an idle OpenMP worker sleeps (libgomp's default is 300000; see the module docstring)
SPIN_COUNT = "1000"


def prepare_openmp(environ: dict | None = None) -> None:
    """Short OpenMP spin-waits unless the user chose a policy; effective only before torch is imported."""
    env = os.environ if environ is None else environ
    if "GOMP_SPINCOUNT" not in env and "OMP_WAIT_POLICY" not in env:
        env["GOMP_SPINCOUNT"] = SPIN_COUNT


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None when unlimited/unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """Cores this process may run on: its affinity mask, capped by the cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


#: threads per core beyond which a count is refused: far past any speed-up, and thousands of OpenMP
#: threads crash torch (threads=4096 segfaulted) or fail every worker of a pool
MAX_THREADS_PER_CORE = 4


def check_threads(n: int, source: str) -> int:
    """``n`` when it is a usable thread count, else a one-line error naming ``source``."""
    limit = MAX_THREADS_PER_CORE * (os.cpu_count() or 1)
    if n > limit:
        raise UserError(
            f"{source}={n}: more than {limit} threads ({MAX_THREADS_PER_CORE} per core of this "
            f"machine's {os.cpu_count() or 1}); use 0 or leave it unset for the cores this process may use"
        )
    return n


def default_threads() -> int:
    """``SPLATDISTILL_THREADS`` when set (a positive integer), else :func:`available_cores`."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise UserError(f"{THREADS_ENV}={value!r}: expected a positive number of threads")
        return check_threads(n, THREADS_ENV)
    return available_cores()


def resolve_threads(n: int | None) -> int:
    """A command's ``threads`` option: a positive count as given, 0/None for :func:`default_threads`."""
    return check_threads(int(n), "threads") if n else default_threads()


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count for the process (0/None: :func:`default_threads`); returns it."""
    import torch

    n = resolve_threads(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@contextmanager
def torch_threads(n: int | None):
    """Temporarily set torch's intra-op thread count (None or 0: unchanged)."""
    import torch

    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(check_threads(n, "threads"))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
