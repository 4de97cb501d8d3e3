"""User-facing errors.

A `UserError` is a problem with the user's input (missing file, malformed json, unknown class, corrupt image).
The command line prints its one-line message and exits with status 2; it never shows a traceback.
"""

from __future__ import annotations

import errno
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_RUN_STOPPED = 3


class UserError(Exception):
    """An input problem to report in one line, naming the file and record."""

    def __init__(self, message: str, path: str | Path | None = None, record: str | None = None):
        self.path = str(path) if path is not None else None
        self.record = record
        self.detail = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.path or ""
        if self.record:
            where = f"{where} [{self.record}]" if where else f"[{self.record}]"
        return f"{where}: {self.detail}" if where else self.detail


class RunStopped(Exception):
    """A training run stopped early by a fault (diverging loss, a dead data worker) in a state that
    ``--resume`` continues from; the command line prints its one-line message and exits with status 3."""


def disk_full(error: OSError) -> bool:
    """True for 'no space left' and 'quota exceeded': a full disk, not a bug, reported in one line."""
    return error.errno in (errno.ENOSPC, errno.EDQUOT)
