"""Atomic file writing and json reading with errors that name the file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from instaseg.errors import UserError, disk_full


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it, then restore it at once
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file.

    The temporary file lives in the destination folder so the final rename stays on one filesystem. A full disk
    (or quota) becomes a UserError naming ``path``; whatever ``path`` held before is left as it was.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        write(tmp_path)
        # mkstemp makes the file private (0600); give it the permissions a plain open() would have
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as e:
        if disk_full(e):
            raise disk_full_error(path) from None
        raise
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()
    return path


def disk_full_error(path: str | Path) -> UserError:
    return UserError("no space left on the device (or quota exceeded) while writing; nothing was replaced", path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False))


def read_json(path: str | Path) -> Any:
    """Read a json file; a missing, unreadable or malformed file raises a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"malformed json (line {e.lineno}, column {e.colno}: {e.msg})", path) from None
    except (UnicodeDecodeError, OSError) as e:
        raise UserError(f"cannot read json: {e}", path) from None
