"""Plain-text tables for log files: aligned columns, no colours, no terminal needed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> str:
    """``rows`` under ``headers``, each column as wide as its widest cell, two spaces apart, a dashed rule under
    the header and ``title`` (if any) above it. The last column is not padded, so lines carry no trailing blanks."""
    cells = [[str(h) for h in headers], *([str(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()

    lines = [title] if title else []
    lines += [line(cells[0]), line(["-" * w for w in widths])]
    lines += [line(row) for row in cells[1:]]
    return "\n".join(lines)
