"""Commands and writers under a real file-size limit: ``python _fsize_worker.py JSON`` (one process, so
torch is imported once).

``RLIMIT_FSIZE`` is set with SIGXFSZ ignored, so a write past the limit fails in the kernel with EFBIG,
exactly where a full disk fails with ENOSPC (the same code paths: torch's zip writer, safetensors' Rust
writer, PIL, Python's files). Nothing is faked.

- ``JSON["writers"] = [limit, folder]``: every writer of :mod:`splatdistill.atomic` writes a file over the
  limit on top of an existing one; one JSON line per writer: ``["writer", name, error line or None, old
  file intact, temporary files left]``.
- ``JSON["cli"]`` is a list of ``[limit, argv]``; each runs through ``splatdistill.cli.main`` under its
  limit; one JSON line per case: ``["cli", status, stderr, seconds]`` (an escaped exception: status 1 and
  its traceback).
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import signal
import sys
import time
import traceback
from pathlib import Path

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
HARD = resource.getrlimit(resource.RLIMIT_FSIZE)[1]


@contextlib.contextmanager
def file_size_limit(limit: int):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, HARD))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (HARD, HARD))


def run_cli(cases: list) -> None:
    from splatdistill.cli import main

    for limit, argv in cases:
        err, out, t0 = io.StringIO(), io.StringIO(), time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), file_size_limit(limit):
            try:
                status = main(argv)
            except BaseException:  # what the user would see: a traceback
                status = 1
                err.write(traceback.format_exc())
        print(json.dumps(["cli", status, err.getvalue(), round(time.perf_counter() - t0, 2)]), flush=True)


def run_writers(limit: int, folder: Path) -> None:
    import numpy as np
    import torch
    from matplotlib.figure import Figure
    from safetensors.torch import save_file

    from splatdistill import atomic
    from splatdistill.errors import OutputWriteError
    from splatdistill.viz import save_png

    big = np.random.default_rng(0).random((160, 160, 3))  # ~77 kB as a PNG
    tensor = {"w": torch.zeros(limit)}
    fig = Figure()
    fig.add_subplot().imshow(big)
    writers = {
        "text": lambda p: atomic.atomic_write_text(p, "x" * 2 * limit),
        "bytes": lambda p: atomic.atomic_write_bytes(p, b"x" * 2 * limit),
        "torch.save": lambda p: atomic.atomic_torch_save(tensor, p),
        "safetensors": lambda p: atomic.atomic_write(p, lambda tmp: save_file(tensor, tmp)),
        "PIL PNG": lambda p: save_png(big, p),
        "matplotlib": lambda p: atomic.atomic_savefig(fig, p, dpi=200),
        "log line": lambda p: atomic.LineLog(p).write_line("x" * 2 * limit),
    }
    for name, write in writers.items():
        path = folder / f"{name.replace(' ', '_')}.png"  # (a suffix matplotlib knows)
        path.write_text("old")
        with file_size_limit(limit):
            try:
                write(path)
                line = None
            except OutputWriteError as exc:
                line = str(exc)
        temps = [p.name for p in folder.iterdir() if p.name.endswith(atomic.TMP_SUFFIX)]
        print(json.dumps(["writer", name, line, path.read_text(errors="replace")[:3] == "old", temps]), flush=True)


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    if "writers" in spec:
        run_writers(spec["writers"][0], Path(spec["writers"][1]))
    run_cli(spec.get("cli", []))
