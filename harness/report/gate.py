"""The gate's page: `igpo check`'s verdict as the report's headline, and the forest plot of each
task's paired difference (inline SVG, drawn here so the page needs no plotting library).

Everything is plain data or a string, tested without a browser; `data.comparison_data` puts it
in the payload and the page's script only places it.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from harness.check import CANNOT_RULE_OUT, PASS, POINTS, REGRESSION, CheckReport

VERDICT_COLOURS = {PASS: "#0a7a2f", REGRESSION: "#b3261e", CANNOT_RULE_OUT: "#9a5b00"}
"""One colour per verdict, shared by the headline's CSS classes and the plot."""
WIDTH = 760
"""Forest plot width in px (the page scales it down on narrow screens)."""
LABEL_WIDTH = 210
"""Left margin holding the task names."""
VALUE_WIDTH = 190
"""Right margin holding each task's difference and interval as numbers."""
TOP = 30
"""Room above the first row for the 0 and max-drop line labels."""
ROW_HEIGHT = 26
AXIS_HEIGHT = 40
"""Room below the rows for the tick labels and the axis caption."""
LABEL_CHARS = 30
"""Longer task names are cut (the full name is in the row's tooltip)."""
PAD = 0.06
"""Share of the x range added on each side so no interval touches the frame."""
MIN_SPAN = 2.0
"""Smallest x range in points (a run against itself with --max-drop 0 has nothing to span)."""
TARGET_TICKS = 6
TICK_SLACK = 1e-9
"""Rounding allowance (in steps) so a tick exactly at an end of the range is kept."""
TICK_DIGITS = 10
"""Tick values are rounded to this many decimals (0.1 * 3 shows as 0.3)."""
CAP = 5
"""Half-height of an interval's end caps, px."""
MARK = 5
"""Half-width of the square marking the difference, px."""
DASH = "6 4"
"""The max-drop line's dash pattern."""
AXIS_COLOUR, ZERO_COLOUR, DROP_COLOUR = "#888", "#444", "#b3261e"
FONT = 'font-family="system-ui,sans-serif" font-size="12"'


def verdict_data(report: CheckReport) -> dict[str, Any]:
    """The gate's headline: `igpo check`'s verdict and exit code, what the verdict means at this
    max drop, and check's own reason (naming the tasks that decided it)."""
    s = report.settings
    drop = f"{s.max_drop * POINTS:g} point" + ("" if s.max_drop * POINTS == 1 else "s")
    meaning = {
        PASS: f"no significant drop, and a drop of more than {drop} is ruled out",
        CANNOT_RULE_OUT: f"no significant drop, but a drop of more than {drop} is not ruled out",
        REGRESSION: f"a significant drop (alpha {s.alpha:g})",
    }[report.verdict]
    if s.exact:
        meaning = "no item changed (--exact)" if report.verdict == PASS else "an item changed (--exact)"
    return {
        "verdict": report.verdict,
        "exit_code": report.exit_code,
        "headline": meaning,
        "reason": report.overall_reason(),
        "max_drop": s.max_drop * POINTS,
        "alpha": s.alpha,
        "notes": report.notes + [f"{t.task}: {n}" for t in report.tasks for n in t.notes],
    }


def forest_data(report: CheckReport) -> dict[str, Any]:
    """What the forest plot draws, in points: each task's paired difference and (1 - alpha)
    interval, the max drop (a dashed line at -max_drop), an x range holding them all and 0."""
    s = report.settings
    rows = [
        {
            "task": t.task,
            "diff": t.diff * POINTS,
            "lo": t.ci95[0] * POINTS,
            "hi": t.ci95[1] * POINTS,
            "verdict": t.verdict,
        }
        for t in report.tasks
    ]
    ends = [0.0, -s.max_drop * POINTS] + [r[k] for r in rows for k in ("lo", "hi")]
    return {
        "rows": rows,
        "max_drop": s.max_drop * POINTS,
        "level": f"{100 * (1 - s.alpha):g}%",
        "range": [min(ends), max(ends)],
    }


def nice_ticks(lo: float, hi: float) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) inside [lo, hi]."""
    raw = (hi - lo) / TARGET_TICKS
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.ceil(lo / step - TICK_SLACK), math.floor(hi / step + TICK_SLACK)
    return [round(k * step, TICK_DIGITS) for k in range(first, last + 1)]


def _x_scale(lo: float, hi: float) -> tuple[float, float, Any]:
    """The padded x range and a points -> px function over the plot's middle band."""
    mid, half = (lo + hi) / 2, max(hi - lo, MIN_SPAN) / 2
    lo, hi = mid - half * (1 + 2 * PAD), mid + half * (1 + 2 * PAD)
    left, right = LABEL_WIDTH, WIDTH - VALUE_WIDTH
    return lo, hi, lambda v: round(left + (v - lo) / (hi - lo) * (right - left), 2)


def forest_svg(forest: dict[str, Any]) -> str:
    """The forest plot as one inline SVG: a row per task (difference, interval, numbers), a solid
    line at 0 and a dashed one at -max_drop; a task passes when its interval starts right of it."""
    rows, drop = forest["rows"], forest["max_drop"]
    lo, hi, x = _x_scale(*forest["range"])
    bottom = TOP + len(rows) * ROW_HEIGHT
    height = bottom + AXIS_HEIGHT
    title = f"Paired difference per task (candidate - baseline, points) with its {forest['level']} interval"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="forest" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="{escape(title)}" {FONT}>',
        f"<title>{escape(title)}</title>",
        _reference_line("zero", x(0.0), bottom, ZERO_COLOUR, "0", "start", ""),
        _reference_line("max-drop", x(-drop), bottom, DROP_COLOUR, f"-{drop:g} pp (max drop)", "end", DASH),
    ]
    parts += [_row(i, r, x) for i, r in enumerate(rows)]
    parts.append(_axis(lo, hi, x, bottom, forest["level"]))
    parts.append("</svg>")
    return "\n".join(parts)


def _reference_line(kind: str, at: float, bottom: float, colour: str, label: str, anchor: str, dash: str) -> str:
    """A vertical line over every row, labelled above them (0, or the max drop)."""
    shift = 4 if anchor == "start" else -4
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line class="{kind}" x1="{at}" x2="{at}" y1="{TOP - 8}" y2="{bottom}" stroke="{colour}" '
        f'stroke-width="1.5"{dashes}/>'
        f'<text class="{kind}-label" x="{at + shift}" y="{TOP - 12}" text-anchor="{anchor}" '
        f'fill="{colour}">{escape(label)}</text>'
    )


def _row(i: int, r: dict[str, Any], x: Any) -> str:
    """One task: its name, interval with end caps, the difference as a square, the numbers."""
    y = TOP + (i + 0.5) * ROW_HEIGHT
    colour = VERDICT_COLOURS.get(r["verdict"], ZERO_COLOUR)
    name = r["task"] if len(r["task"]) <= LABEL_CHARS else r["task"][: LABEL_CHARS - 1] + "\u2026"
    numbers = f"{r['diff']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]"
    lo, hi, mid = x(r["lo"]), x(r["hi"]), x(r["diff"])
    return (
        f'<g class="row" data-task="{escape(r["task"])}" data-verdict="{escape(r["verdict"])}">'
        f"<title>{escape(r['task'])}: {escape(r['verdict'])}, {numbers} pp</title>"
        f'<text x="{LABEL_WIDTH - 10}" y="{y + 4}" text-anchor="end">{escape(name)}</text>'
        f'<line class="interval" x1="{lo}" x2="{hi}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"/>'
        f'<path d="M{lo} {y - CAP}V{y + CAP}M{hi} {y - CAP}V{y + CAP}" stroke="{colour}" stroke-width="2"/>'
        f'<rect class="point" x="{mid - MARK}" y="{y - MARK}" width="{2 * MARK}" height="{2 * MARK}" fill="{colour}"/>'
        f'<text x="{WIDTH - VALUE_WIDTH + 10}" y="{y + 4}" fill="{colour}">{escape(numbers)}</text></g>'
    )


def _axis(lo: float, hi: float, x: Any, bottom: float, level: str) -> str:
    """The x axis under the rows: ticks in points and a caption."""
    left, right = LABEL_WIDTH, WIDTH - VALUE_WIDTH
    out = [f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="{AXIS_COLOUR}"/>']
    for t in nice_ticks(lo, hi):
        out.append(
            f'<line x1="{x(t)}" x2="{x(t)}" y1="{bottom}" y2="{bottom + 4}" stroke="{AXIS_COLOUR}"/>'
            f'<text x="{x(t)}" y="{bottom + 16}" text-anchor="middle" fill="#555">{t:g}</text>'
        )
    caption = f"candidate - baseline (points), {level} interval"
    out.append(f'<text x="{(left + right) / 2}" y="{bottom + 33}" text-anchor="middle" fill="#555">{caption}</text>')
    return "".join(out)
