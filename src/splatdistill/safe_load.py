"""The one way splatdistill reads a torch file a user may have received: never by running its pickle.

Plain ``torch.load`` (``weights_only`` off) rebuilds any Python object a file names, so a pickle payload in a
shared run folder or cache would run on load. Every torch file is read here with torch's restricted
(``weights_only``) unpickler, which builds only tensors and plain containers, plus the exact globals
the caller allows (``NUMPY_ARRAYS`` for the NumPy RNG state inside ``checkpoint.pt``). Files made by
other programs (MVSplat's Lightning checkpoints) hold objects we do not need: ``foreign=True`` rebuilds
each of those as an inert :class:`Inert` placeholder, so only their tensors survive and none of their
code runs. tests/test_safe_load.py lists every load site in src/ and fails on a new unrestricted one.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splatdistill.errors import UserError

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array rebuilder (its module moved in NumPy 2)
#: rebuilding an ndarray from its dtype and bytes (no code of the file runs), as ``np.random.get_state()`` pickles
NUMPY_ARRAYS: tuple[Any, ...] = (
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
    (_RECONSTRUCT, "numpy._core.multiarray._reconstruct"),
    (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
)


class Inert(list):
    """Stands in for any object of a foreign file: takes every argument and state, keeps and runs nothing.
    A list subclass because torch's unpickler lets allow-listed list types receive APPEND(S)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        return list.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        list.__init__(self)

    def __setstate__(self, state: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


def _as_dict(*args: Any, **kwargs: Any) -> dict:
    """``collections.defaultdict`` of a foreign file, as a plain dict (its factory is not rebuilt)."""
    return {}


def _global_name(obj: Any) -> str:
    return obj[1] if isinstance(obj, tuple) else f"{obj.__module__}.{obj.__qualname__}"


def _check_container(path: Path, what: str) -> None:
    """Empty, truncated or not a torch file at all: said in words before unpickling anything."""
    if not path.exists():
        raise UserError("no such file", path)
    if not path.is_file():
        raise UserError("expected a file, got a directory" if path.is_dir() else "not a regular file", path)
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"cannot read this {what}: the file is empty (0 bytes): an interrupted copy or write?", path)
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            raise UserError(
                f"cannot read this {what}: the file is truncated or damaged ({size} bytes; its zip "
                "directory is missing): an interrupted copy or write?",
                path,
            )
    elif not head.startswith(b"\x80"):
        raise UserError(
            f"cannot read this {what}: not a PyTorch file (neither torch.save's zip nor its legacy pickle format)", path
        )


def _unlisted_globals(path: Path, allow: Sequence[Any]) -> list[str]:
    """The globals a zip-format file names beyond torch's own and ``allow`` (the legacy format is left to
    torch's restricted unpickler, which refuses them too)."""
    if not zipfile.is_zipfile(path):
        return []
    try:  # parses the pickle's opcodes only, nothing is built
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:
        raise UserError(f"cannot read the file's contents ({type(exc).__name__}: {str(exc)[:80]})", path) from None
    allowed = {_global_name(a) for a in allow}
    return [n for n in names if n not in allowed]


def _refused(message: str) -> str:
    """The object torch's restricted unpickler refused, out of its long message."""
    if "GLOBAL " in message:
        return message.split("GLOBAL ", 1)[1].split(" ", 1)[0]
    after = message.split("WeightsUnpickler error:", 1)[-1]
    line = next((ln.strip() for ln in after.splitlines() if ln.strip()), type(message).__name__)
    return line.split("but got ", 1)[-1][:100]


def load_torch_file(
    path: str | Path,
    what: str,
    allow: Sequence[Any] = (),
    foreign: bool = False,
    mmap: bool = False,
    require: Sequence[str] = (),
) -> Any:
    """Read ``path`` (a ``what``: "training checkpoint", ...) without running code from it.

    ``allow``: globals the file may name (classes, functions, or (object, "module.name")).
    ``foreign``: any other object becomes an inert placeholder instead of an error (files of other
    programs, of which only the tensors are used). ``mmap``: map the tensors instead of reading them (a
    caller that wants a small part). ``require``: keys the loaded dict must have (else it is another kind
    of file). Damage, a refused object or a missing key is a one-line UserError."""
    path = Path(path)
    _check_container(path, what)
    extra = _unlisted_globals(path, allow)
    if extra and not foreign:
        raise UserError(
            f"refusing to load this {what}: besides tensors and plain data it names "
            f"{', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}, whose unpickling could run code; "
            "nothing was loaded",
            path,
        )
    stubs = [(_as_dict if n == "collections.defaultdict" else Inert, n) for n in extra] if foreign else []
    try:
        with torch.serialization.safe_globals([*allow, *stubs]):
            mapped = mmap and zipfile.is_zipfile(path)  # torch maps the zip format only
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mapped)
    except pickle.UnpicklingError as exc:
        culprit = _refused(str(exc))
        raise UserError(
            f"refusing to load this {what}: besides tensors and plain data it holds a Python object "
            f"({culprit}) whose unpickling could run code; nothing was loaded",
            path,
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        detail = str(exc).splitlines()[0][:100] if str(exc) else ""
        raise UserError(
            f"cannot read this {what}: truncated, damaged or not a PyTorch file "
            f"({type(exc).__name__}{': ' + detail if detail else ''})",
            path,
        ) from None
    lacks = [k for k in require if not isinstance(obj, dict) or k not in obj]
    if lacks:
        raise UserError(f"not a {what}: it lacks {', '.join(lacks)}", path)
    return obj
