"""User-facing errors.

Anything a user can cause (a missing file, a corrupt checkpoint, a bad config value) is raised as a
:class:`UserError` whose message names the file or value and the problem. The CLI prints it on one line
and exits with its ``exit_code`` instead of showing a traceback: 2 for bad input, 3 for a training run
that stopped itself (diverged, stalled), 4 for an output that could not be written. docs/errors.md
lists the cases.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType


class UserError(Exception):
    """An error caused by the user's input; the message is shown as-is, on one line."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        if path is not None and str(path) not in message:
            message = f"{path}: {message}"
        super().__init__(" ".join(message.split()))


class OutputWriteError(UserError):
    """Writing an output file failed (full disk, read-only folder): exit 4, the previous file intact."""

    exit_code = 4


class MissingExtra(UserError):
    """An optional dependency of one feature is not installed (or does not import): exit 2."""


def require_extra(module: str, extra: str, feature: str, hint: str = "") -> ModuleType:
    """Import ``module`` for ``feature``, or raise one :class:`MissingExtra` naming the pip extra
    that installs it. The features that need a package only some users want import it through this,
    so every such message reads the same and names the command that fixes it."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # not installed, or its import fails (a system library it links, a broken CUDA)
        top = module.split(".")[0]
        missing = isinstance(exc, ImportError) and getattr(exc, "name", None) in (top, module)
        why = "is not installed" if missing else f"does not import: {type(exc).__name__}: {exc}"
        raise MissingExtra(
            f"{feature} needs the optional extra [{extra}] ({top} {why}): "
            f"pip install 'splatdistill[{extra}]'{'; ' + hint if hint else ''}"
        ) from None
