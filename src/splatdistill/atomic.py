"""Crash-safe file writes: every file goes through a temporary file in the same folder, fsync, and an
atomic rename, so a process killed at any moment leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from splatdistill.errors import OutputWriteError

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: what ``open()`` would give a new file (mkstemp makes its file 0600, private to the user)
DEFAULT_MODE = 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[str], None], mode: int | None = None) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path`` atomically.
    ``mode`` defaults to what a plain ``open()`` would create (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, DEFAULT_MODE if mode is None else mode)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        # a full disk, a lost mount, a folder made read-only: one line naming the file (torch.save reports
        # a failed write as a RuntimeError "... failed writing ..."; other RuntimeErrors are bugs, re-raised)
        if isinstance(exc, RuntimeError) and "writ" not in str(exc).lower():
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise OutputWriteError(f"could not write the file ({reason}); the previous version, if any, is intact",
                               path) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch  # torch is heavy; this leaf module is imported by light commands too

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
