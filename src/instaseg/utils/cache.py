"""Where instaseg keeps what it measured (zoo sizes, backend choices): ``$INSTASEG_CACHE`` or ``~/.cache/instaseg``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("INSTASEG_CACHE") or Path.home() / ".cache" / "instaseg")
