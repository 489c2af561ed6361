"""Markdown tables, all through tabulate (one way to draw a table), every cell escaped.

A cell is text a user may have written (a --label, a run name, a grid cell): it can neither end
its row (line breaks become spaces), end its cell (`|` is written `\\|`, which markdown shows as
`|`), nor open an HTML tag in a renderer that allows raw HTML (`<` before a tag name is `&lt;`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")
"""Everything str.splitlines() breaks on: a cell holding one would split its row."""
TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
PIPE = re.compile(r"(?<!\\)\|")


def one_line(text: Any) -> str:
    """The text with every line break (and run of them) turned into one space."""
    return LINE_BREAKS.sub(" ", str(text))


def escape(cell: Any) -> str:
    """A markdown table cell's text: one line, `|` escaped, no HTML tag opened."""
    text = one_line(cell).replace("\\|", "|")
    return TAG_START.sub("&lt;", text.replace("|", "\\|"))


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    align: Sequence[str] | None = None,
    tablefmt: str = "pipe",
) -> str:
    """A GitHub-markdown table; cells are shown as given (no number re-formatting), escaped.

    `align`: per column "left", "right" or "center" (default left). `tablefmt`: "pipe" or
    "github" (tabulate's names for the two markdown layouts)."""
    from tabulate import tabulate

    return tabulate(
        [[escape(c) for c in r] for r in rows],
        headers=[escape(h) for h in headers],
        tablefmt=tablefmt,
        disable_numparse=True,
        colalign=tuple(align) if align else None,
    )


def cells(line: str) -> list[str]:
    """The stripped cells of one markdown table line ("| a | b |" -> ["a", "b"]); an escaped
    `\\|` stays inside its cell (shown as `|`)."""
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [c.strip().replace("\\|", "|") for c in PIPE.split(inner)]
