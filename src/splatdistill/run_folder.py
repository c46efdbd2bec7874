"""The output-folder policy of every command: a writable folder, one owner, no stale temp files, and
nothing deleted that this tool did not make.

Every command that writes a folder (``train``, ``lifter train``, ``demo``, ``eval``, ``data from-images``,
``data from-rgbd``) opens it with :func:`open_run_folder` first, before loading data or weights (the
:class:`~splatdistill.distill.trainer.Trainer` of the Python API too), so a bad ``--out`` fails in a second
with one line, and two processes never write the same folder:

- the lock is ``<out>/.splatdistill.lock``, held with ``flock`` (the kernel drops it when the owner dies,
  even by SIGKILL) and holding the owner's pid and command; a second run, or a ``--resume`` while the run
  is alive, stops with exit 2 naming the owner; a lock file left by a dead process is taken over with a note;
  the lock file is never removed (a removed file would let a third process lock a new one while a second
  still holds the old one), it is opened without following a symbolic link, and a lock path that is a
  folder or a link is a one-line error;
- the temporary files of :mod:`splatdistill.atomic` that a killed write left behind are removed (only the
  lock holder can be sure nobody is writing them): only names ending in ``.splatdistill.tmp``;
- a subfolder is replaced only when this tool made it (:func:`check_replaceable`, :func:`replace_output`:
  ``.splatdistill-made.json`` lists them); a user's folder in the way, or an input inside an output that
  would be replaced, stops the command before any work.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from splatdistill.atomic import TMP_SUFFIX, atomic_write_text, write_error, write_failure
from splatdistill.errors import UserError

LOCK_NAME = ".splatdistill.lock"
#: the subfolders a command of this tool made in an output folder (the only ones it may replace)
MADE_NAME = ".splatdistill-made.json"


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """``path`` is (or can be made) a writable folder; a UserError naming it otherwise."""
    try:
        return _check_output_dir(Path(path), what)
    except OSError as exc:  # a name over NAME_MAX, a loop of links, ...: Path.exists() raises those
        raise UserError(f"cannot use the {what}: {exc.strerror or exc}", path) from None


def _check_output_dir(path: Path, what: str) -> Path:
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

    def _open(self) -> int:
        """The lock file, created if missing, never through a symbolic link."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP or self.path.is_symlink():
                problem = "is a symbolic link; the lock must be a plain file (remove the link)"
            elif exc.errno == errno.EISDIR or self.path.is_dir():
                problem = "is a folder; the lock must be a plain file (remove or rename the folder)"
            else:
                problem = f"cannot be opened: {exc.strerror or exc}"
            raise UserError(f"the run folder's lock {problem}", self.path) from None

    def _lock(self) -> int:
        """An fd holding the flock on the file that is at :attr:`path` now (re-checked after the flock: a
        file removed or replaced meanwhile, e.g. by hand, would be a lock nobody else sees)."""
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise UserError(f"cannot lock the run folder: {exc.strerror}", self.folder) from None
                owner = self._read_owner()
                who = (
                    f"pid {owner.get('pid')} ({owner.get('command', '?')}, started {owner.get('started', '?')})"
                    if owner
                    else "another process"
                )
                raise UserError(
                    f"the run folder is in use by {who}; wait for it to finish, stop it, or choose "
                    "another output folder",
                    self.folder,
                ) from None
            try:
                now = os.stat(self.path, follow_symlinks=False)
            except OSError:
                now = None
            held = os.fstat(fd)
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return fd
            os.close(fd)  # locked a file that is no longer the lock: try again

    def acquire(self) -> RunFolderLock:
        fd = self._lock()
        previous = self._read_owner(fd)
        if previous and previous.get("pid") != os.getpid():
            alive = previous.get("host") == socket.gethostname() and _pid_alive(int(previous.get("pid", -1)))
            if not alive:
                self.took_over = previous
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError as exc:  # a full disk before the run even starts: exit 4 like every other write
            os.close(fd)
            raise write_error(self.path, write_failure(exc)) from None
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
        """Clear the owner record and unlock. The file stays: removing it let two processes own the folder (one
        holding the removed file, one a new one); a record left behind means its owner died."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunFolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


#: ``.<name>.<8 random characters>.splatdistill.tmp``: what :func:`splatdistill.atomic.atomic_write`'s
#: mkstemp creates (and :func:`staging_folder`'s mkdtemp); another program's ``.x.12345678.tmp`` is not ours
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}" + re.escape(TMP_SUFFIX) + "$")


def stale_temp_files(folder: Path, depth: int = 3) -> list[Path]:
    """Temporary files (and staging folders) of this tool in ``folder`` and its subfolders down to
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
            out += [e for e in entries if _TEMP_NAME.match(e.name) and not e.is_symlink()]
            below += [e for e in entries if e.is_dir() and not e.is_symlink() and not _TEMP_NAME.match(e.name)]
        level = below
    return sorted(out)


def open_run_folder(path: str | Path, command: str, what: str = "run folder", quiet: bool = False) -> RunFolderLock:
    """Check, lock and tidy an output folder before any work (see the module docstring); returns the lock."""
    folder = check_output_dir(path, what)
    lock = RunFolderLock(folder, command).acquire()
    say = (lambda msg: None) if quiet else (lambda msg: print(f"{command}: {msg}", file=sys.stderr))
    if lock.took_over:
        say(
            f"note: took over the lock of pid {lock.took_over.get('pid')} ({lock.took_over.get('command', '?')}), "
            "which is no longer running"
        )
    stale = stale_temp_files(folder)
    if stale:
        size = sum(_size(p) for p in stale)
        for p in stale:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        say(f"note: removed {len(stale)} temporary file(s) ({size / 1e6:.1f} MB) left by an interrupted write")
    return lock


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return path.stat().st_size


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


# ---- replacing subfolders: only those this tool made ------------------------------------------------


def made_here(folder: Path) -> set[str]:
    """Names of the entries of ``folder`` that a command of this tool made (``.splatdistill-made.json``)."""
    try:
        names = json.loads((folder / MADE_NAME).read_text())
        return {str(n) for n in names} if isinstance(names, list) else set()
    except (OSError, ValueError):
        return set()


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_replaceable(
    folder: Path, names: tuple[str, ...], inputs: tuple[Path, ...] = (), option: str = "--out"
) -> None:
    """Before any work: every ``folder/NAME`` is absent or was made by this tool (so replacing it loses no
    user file), and no input lies in one of them; else a one-line UserError naming the entry."""
    made = made_here(folder)
    for name in names:
        target = folder / name
        for src in inputs:
            if _inside(src, target):
                where = f"the output's {name}/ folder" if src.resolve() == target.resolve() else f"inside {target}"
                raise UserError(
                    f"the input {src} is {where}, which this command replaces; choose another "
                    f"{option} (e.g. {folder / 'dataset'})",
                    src,
                )
        if os.path.lexists(target) and name not in made:
            raise UserError(
                f"{target} exists and was not made by splatdistill; it is never replaced: choose "
                f"another {option} or move it away",
                target,
            )


def replace_output(folder: Path, name: str, staged: Path) -> Path:
    """Move the finished ``staged`` entry to ``folder/name``, replacing the previous one only when this tool
    made it (:func:`check_replaceable` ran before the work), and record it as made here."""
    target = folder / name
    if os.path.lexists(target):
        if name not in made_here(folder):
            raise UserError(
                f"{target} appeared while the command ran and was not made by splatdistill; the new "
                f"result is left in {staged}",
                target,
            )
        old = Path(tempfile.mkdtemp(dir=folder, prefix=f".{name}.", suffix=TMP_SUFFIX))
        os.replace(target, old / name)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, target)
    atomic_write_text(folder / MADE_NAME, json.dumps(sorted(made_here(folder) | {name})))
    return target


@contextmanager
def staging_folder(folder: Path, name: str):
    """A fresh folder inside ``folder`` (same file system: the results move into place by rename), removed
    afterwards; its name marks it as this tool's temporary, so a killed run's is cleaned up next time."""
    try:
        stage = Path(tempfile.mkdtemp(dir=folder, prefix=f".{name}.", suffix=TMP_SUFFIX))
    except OSError as exc:
        raise write_error(folder, write_failure(exc)) from None
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def open_training_folder(
    path: str | Path, command: str, resume: bool, state_name: str, fresh_hint: str, lock: bool = True
) -> RunFolderLock | None:
    """A training run's folder before any work, for the commands and the Python API alike: locked (rank 0,
    unless ``lock`` is False because the caller holds it), and a fresh run refused where the resume state
    ``state_name`` is (it would silently train over it); ``fresh_hint`` ends that message."""
    held = open_run_folder(path, command) if lock and is_main_process() else None
    if not resume and (Path(path) / state_name).exists():
        if held is not None:
            held.release()
        raise UserError(f"the run folder already holds a checkpoint: {fresh_hint}", path)
    return held


@contextmanager
def owned_training_folder(
    path: str | Path, command: str, resume: bool, state_name: str, fresh_hint: str, lock: bool = True
):
    """:func:`open_training_folder` for the block; the lock released at its end."""
    held = open_training_folder(path, command, resume, state_name, fresh_hint, lock)
    try:
        yield held
    finally:
        if held is not None:
            held.release()
