"""One owner per output folder, checked before any work: a writable folder, a lock, no stale temp files.

Every command that writes a folder (``train``, ``lifter train``, ``demo``, ``eval``) opens it with
:func:`open_run_folder` first, before loading data or weights, so a bad ``--out`` fails in a second
with one line, and two processes never write the same folder:

- the lock is ``<out>/.splatdistill.lock``, held with ``flock`` (the kernel drops it when the owner dies,
  even by SIGKILL) and holding the owner's pid and command; a second run, or a ``--resume`` while the run
  is alive, stops with exit 2 naming the owner; a lock file left by a dead process is taken over with a note;
- the temporary files of :mod:`splatdistill.atomic` that a killed write left behind are removed (only the
  lock holder can be sure nobody is writing them).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from splatdistill.atomic import TMP_SUFFIX
from splatdistill.errors import UserError

LOCK_NAME = ".splatdistill.lock"


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """``path`` is (or can be made) a writable folder; a UserError naming it otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"the {what} is an existing file, not a folder; choose another path", path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"cannot create the {what}: {parent} is a file", path)
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the {what}: {exc.strerror or exc}", path) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"the {what} is not writable", path)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class RunFolderLock:
    """The ``flock`` on ``<folder>/.splatdistill.lock``; released by :meth:`release` or the owner's exit."""

    def __init__(self, folder: Path, command: str):
        self.folder, self.command = folder, command
        self.path = folder / LOCK_NAME
        self.fd: int | None = None
        self.took_over: dict | None = None

    def acquire(self) -> "RunFolderLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise UserError(f"cannot lock the run folder: {exc.strerror}", self.folder) from None
            owner = self._read_owner()
            who = (f"pid {owner.get('pid')} ({owner.get('command', '?')}, started {owner.get('started', '?')})"
                   if owner else "another process")
            raise UserError(f"the run folder is in use by {who}; wait for it to finish, stop it, or choose "
                            "another output folder", self.folder) from None
        previous = self._read_owner(fd)
        if previous and previous.get("pid") != os.getpid():
            alive = previous.get("host") == socket.gethostname() and _pid_alive(int(previous.get("pid", -1)))
            if not alive:
                self.took_over = previous
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self.fd = fd
        return self

    def _read_owner(self, fd: int | None = None) -> dict | None:
        try:
            if fd is not None:
                raw = os.pread(fd, 4096, 0)
            else:
                raw = self.path.read_bytes()
            return json.loads(raw.decode()) if raw.strip() else None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()  # still ours: unlink before unlocking, so nobody locks a file that vanishes
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunFolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


#: ``.<name>.<8 random characters>.tmp``: what :func:`splatdistill.atomic.atomic_write`'s mkstemp creates
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}" + re.escape(TMP_SUFFIX) + "$")


def stale_temp_files(folder: Path, depth: int = 3) -> list[Path]:
    """Temporary files of :func:`splatdistill.atomic.atomic_write` in ``folder`` and its subfolders down to
    ``depth`` levels (a run's own tree: runs/NAME, eval/cache, ...; never a whole home folder)."""
    out: list[Path] = []
    level = [folder]
    for _ in range(depth + 1):
        below = []
        for d in level:
            try:
                entries = list(d.iterdir())
            except OSError:
                continue
            out += [e for e in entries if _TEMP_NAME.match(e.name) and e.is_file()]
            below += [e for e in entries if e.is_dir() and not e.is_symlink()]
        level = below
    return sorted(out)


def open_run_folder(path: str | Path, command: str, what: str = "run folder", quiet: bool = False) -> RunFolderLock:
    """Check, lock and tidy an output folder before any work (see the module docstring); returns the lock."""
    folder = check_output_dir(path, what)
    lock = RunFolderLock(folder, command).acquire()
    say = (lambda msg: None) if quiet else (lambda msg: print(f"{command}: {msg}", file=sys.stderr))
    if lock.took_over:
        say(f"note: took over the lock of pid {lock.took_over.get('pid')} ({lock.took_over.get('command', '?')}), "
            "which is no longer running")
    stale = stale_temp_files(folder)
    if stale:
        size = sum(p.stat().st_size for p in stale)
        for p in stale:
            p.unlink(missing_ok=True)
        say(f"note: removed {len(stale)} temporary file(s) ({size / 1e6:.1f} MB) left by an interrupted write")
    return lock


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` launch, or a plain process (only it owns the run folder's lock)."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def owned_run_folder(path: str | Path, command: str, what: str = "run folder"):
    """``with owned_run_folder(out, "splatdistill eval"):`` the folder checked, locked and tidied for the block
    (by rank 0 only under ``torchrun``)."""
    lock = open_run_folder(path, command, what) if is_main_process() else None
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()
