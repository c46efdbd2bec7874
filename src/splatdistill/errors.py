"""User-facing errors.

Anything a user can cause (a missing file, a corrupt checkpoint, a bad config value) is raised as a
:class:`UserError` whose message names the file or value and the problem. The CLI prints it on one line
and exits with its ``exit_code`` instead of showing a traceback: 2 for bad input, 3 for a training run
that stopped itself (diverged, stalled), 4 for an output that could not be written. docs/errors.md
lists the cases.
"""

from __future__ import annotations

from pathlib import Path


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
