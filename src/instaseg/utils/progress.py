"""Progress bars for long loops, shared by every package: the one place outside cli/ that draws on the terminal.

Library code reports progress through `track` or `progress_bar` and prints nothing else; what a command shows
besides its bars is cli/'s to render.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


def track(items: Iterable[T], description: str, total: int | None = None, stderr: bool = True) -> Iterator[T]:
    """Progress bar over a long loop (rich, on stderr, or stdout with ``stderr=False``); silent when that stream
    is not a terminal (logs, CI), and gone once the loop ends."""
    from rich.console import Console
    from rich.progress import track as rich_track

    console = Console(stderr=stderr)
    if not console.is_terminal:
        yield from items
        return
    yield from rich_track(items, description=description, total=total, console=console, transient=True)


class ProgressBar:
    """What a loop inside `progress_bar` reports: the steps it has done, and the bar's text."""

    def __init__(self, progress: Any, task: Any):
        self._progress, self._task = progress, task

    def advance(self, steps: int = 1, **fields: str) -> None:
        """``steps`` more done; ``fields`` set the bar's named text columns (``current="image.jpg"``)."""
        self._progress.update(self._task, advance=steps, **fields)

    def describe(self, description: str) -> None:
        self._progress.update(self._task, description=description)


def _columns(names: Sequence[str] | None) -> list[Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if names is None:
        return list(Progress.get_default_columns())
    known = {
        "bar": BarColumn,
        "count": MofNCompleteColumn,
        "elapsed": TimeElapsedColumn,
        "remaining": TimeRemainingColumn,
    }
    text = [TextColumn("{task.description}")]  # rich markup in a description renders ("[bold]predicting")
    return text + [known[n]() if n in known else TextColumn(f"{{task.fields[{n}]}}") for n in names]


@contextmanager
def progress_bar(
    description: str,
    total: int | None = None,
    columns: Sequence[str] | None = None,
    stderr: bool = True,
    transient: bool = True,
    width: int | None = None,
) -> Iterator[ProgressBar]:
    """A rich progress bar around a loop that calls ``bar.advance()`` per step (``total`` None: no end known).

    ``columns``, after the description: "bar", "count" (done of total), "elapsed", "remaining", or any other name
    for a text field the loop sets through ``advance(name=...)``; None gives rich's defaults (bar, percentage,
    time left). A ``transient`` bar disappears when the loop ends; otherwise its last state stays on the screen
    (and is written once where the stream is a file). ``width`` fixes the console's width.
    """
    from rich.console import Console
    from rich.progress import Progress

    fields = {n: "" for n in columns or () if n not in ("bar", "count", "elapsed", "remaining")}
    console = Console(stderr=stderr, width=width)
    with Progress(*_columns(columns), console=console, transient=transient) as progress:
        yield ProgressBar(progress, progress.add_task(description, total=total, **fields))
