"""The one write path for every output file.

- **Atomic**: every file goes through a temporary file in the same folder, fsync, and an atomic rename,
  so a process killed at any moment leaves the old file or the new one, never a torn one. The rename
  replaces a symbolic link planted at the destination; it never writes through it.
- **Exit 4 on a failed write**: a full disk (ENOSPC), a file over the size limit (EFBIG, ``ulimit -f``), a
  read-only or lost folder, from whichever writer (Python's files, ``torch.save``, safetensors, PIL,
  matplotlib) becomes one :class:`~splatdistill.errors.OutputWriteError` naming the file.
- **Logs** (:class:`LineLog`) are appended a line at a time, each line flushed and fsync'ed, opened
  without following a symbolic link.

Temporary files are named ``.NAME.XXXXXXXX.splatdistill.tmp`` (:data:`TMP_SUFFIX`) so that the
clean-up of :mod:`splatdistill.run_folder` removes only files this tool made.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from splatdistill.errors import OutputWriteError, UserError

#: the tool's own temporary files end with this (``.NAME.XXXXXXXX.splatdistill.tmp``)
TMP_SUFFIX = ".splatdistill.tmp"
#: at most this many characters of the destination's name go into a temporary name (NAME_MAX is 255)
_TMP_NAME_CHARS = 100


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: what ``open()`` would give a new file (mkstemp makes its file 0600, private to the user)
DEFAULT_MODE = 0o666 & ~_umask()

_OS_ERROR = re.compile(r"\(os error (\d+)\)|code: (\d+)")


def write_failure(exc: BaseException) -> str | None:
    """Why a write failed, when ``exc`` is a failed write (an OSError, or a library's error that carries an
    errno: safetensors' ``... (os error 28)``, torch's writer); None for anything else (a bug: re-raised)."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    text = str(exc)
    found = _OS_ERROR.search(text)
    if found:
        return os.strerror(int(found.group(1) or found.group(2)))
    if isinstance(exc, RuntimeError) and ("inline_container" in text or "writ" in text.lower()):
        return text.splitlines()[0]  # torch's zip writer lost the errno (a file object below records it)
    return None


def write_error(path: str | Path, reason: str) -> OutputWriteError:
    return OutputWriteError(f"could not write the file ({reason}); the previous version, if any, is intact", path)


def write_probe(folder: str | Path, size: int = 1 << 20) -> str | None:
    """Why ``folder`` cannot take a ``size``-byte file now (full, over the file-size limit, read-only), or
    None: for writers that lose the errno (COLMAP's C++ reports "No registered database factory succeeded")."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".probe.", suffix=TMP_SUFFIX)
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"\0" * size)
            fh.flush()
            os.fsync(fh.fileno())
        return None
    except OSError as exc:
        return write_failure(exc)
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | Path, write: Callable[[str], None], mode: int | None = None) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path`` atomically.
    ``mode`` defaults to what a plain ``open()`` would create (0666 less the umask)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:_TMP_NAME_CHARS]}.", suffix=TMP_SUFFIX)
        os.close(fd)
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, DEFAULT_MODE if mode is None else mode)
        os.replace(tmp, path)
    except Exception as exc:
        reason = write_failure(exc)
        if reason is None:
            raise
        raise write_error(path, reason) from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_stream(path: str | Path, write: Callable[[Any], None]) -> Path:
    """:func:`atomic_write` for writers that take an open binary file (``np.save`` and ``np.savez`` add a
    suffix to a path that lacks theirs)."""

    def to_file(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            write(fh)

    return atomic_write(path, to_file)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


class _RecordingFile:
    """A binary file for ``torch.save`` that keeps the OSError of a failed write (torch's own error only
    says ``unexpected pos``)."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch  # torch is heavy; this leaf module is imported by light commands too

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            recorder = _RecordingFile(fh)
            try:
                torch.save(obj, recorder)
            except RuntimeError:
                if recorder.error is not None:
                    raise recorder.error from None
                raise

    return atomic_write(path, write)


def atomic_savefig(fig, path: str | Path, **kwargs) -> Path:
    """``fig.savefig`` through :func:`atomic_write` (the format from ``path``'s suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))


class LineLog:
    """An append-only log (``log.jsonl``): each :meth:`write_line` reaches the disk before it returns (a
    SIGKILL loses no logged line), the file is opened without following a symbolic link, and a failed
    write is exit 4 like every other output."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            self.fd: int | None = os.open(self.path, flags, DEFAULT_MODE)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UserError(
                    "is a symbolic link; a log is never written through one: remove it", self.path
                ) from None
            raise write_error(self.path, write_failure(exc) or str(exc)) from None

    def write_line(self, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode()
        size = os.fstat(self.fd).st_size
        try:
            while data:
                data = data[os.write(self.fd, data) :]
            os.fsync(self.fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, size)  # no torn last line
            raise OutputWriteError(
                f"could not append to the log ({write_failure(exc)}); the lines before are intact", self.path
            ) from None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> LineLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
