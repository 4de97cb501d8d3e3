"""Progress bars for long loops, shared by every package."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Progress bar over a long loop (rich, on stderr); silent when stderr is not a terminal (logs, CI)."""
    from rich.console import Console
    from rich.progress import track as rich_track

    console = Console(stderr=True)
    if not console.is_terminal:
        yield from items
        return
    yield from rich_track(items, description=description, total=total, console=console, transient=True)
