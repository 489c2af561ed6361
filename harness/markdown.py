"""Markdown tables, all through tabulate's pipe format (one way to draw a table)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """A GitHub-markdown table; cells are shown as given (no number re-formatting).

    `align`: per column "left", "right" or "center" (default left)."""
    from tabulate import tabulate

    return tabulate(
        [[str(c) for c in r] for r in rows],
        headers=list(headers),
        tablefmt="pipe",
        disable_numparse=True,
        colalign=tuple(align) if align else None,
    )


def cells(line: str) -> list[str]:
    """The stripped cells of one markdown table line ("| a | b |" -> ["a", "b"])."""
    return [c.strip() for c in line.strip().strip("|").split("|")]
