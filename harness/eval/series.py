"""Checkpoint-series report of a training run: accuracy per task against training step.

Writes series.md (step x task table, best checkpoint marked) and series.png (one line per
task with its 95% interval as a band, plus the average). The best checkpoint has the highest
average over the tasks; only points that have every task compete when any do, and ties go to
the earliest step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from harness.eval.curves import render_figure
from harness.eval.leaderboard import (
    INCOMPLETE_MARK,
    MISSING,
    Cell,
    cell_text,
    fmt_pct,
    interval_notes,
    model_label,
    order_tasks,
    protocol_label,
    run_cells,
    task_label,
)
from harness.eval.records import RunRecord
from igpo.atomic import atomic_write_text
from igpo.errors import InvalidSetting

SERIES_MD = "series.md"
SERIES_PNG = "series.png"
FIG_SIZE = (8.0, 4.8)
"""Figure size in inches."""
FIG_DPI = 120
LEGEND_ANCHOR = (1.01, 1.0)
"""Legend just right of the axes, so it never hides a line."""
BAND_ALPHA = 0.18
"""Opacity of the 95% interval bands."""
AVERAGE_WIDTH = 2.5
BEST_MARKER_SIZE = 14
BEST_MARK = " (best)"


@dataclass
class SeriesPoint:
    """One checkpoint: its step, per-task cells, average and whether it has every task."""

    step: int
    cells: dict[str, Cell]
    average: float | None
    complete: bool


def _points(points: list[tuple[int, RunRecord]]) -> tuple[list[str], list[SeriesPoint]]:
    """Task columns and validated points sorted by step."""
    if not points:
        raise InvalidSetting("a checkpoint series needs at least one point")
    steps = [step for step, _ in points]
    dupes = sorted({s for s in steps if steps.count(s) > 1})
    if dupes:
        raise InvalidSetting(f"step(s) {', '.join(map(str, dupes))} appear more than once")
    cells_by_step = {int(step): run_cells(record) for step, record in points}
    columns = order_tasks(k for cells in cells_by_step.values() for k in cells)
    out = []
    for step in sorted(cells_by_step):
        cells = cells_by_step[step]
        present = [cells[c].accuracy for c in columns if c in cells]
        average = sum(present) / len(present) if present else None
        out.append(SeriesPoint(step, cells, average, len(present) == len(columns)))
    return columns, out


def best_point(series: list[SeriesPoint]) -> SeriesPoint:
    """Highest average among complete points (all points if none is complete); earliest wins ties."""
    pool = [p for p in series if p.complete] or series
    scored = [p for p in pool if p.average is not None] or pool
    return max(scored, key=lambda p: (p.average or 0.0, -p.step))


def render_series_md(columns: list[str], series: list[SeriesPoint], best: SeriesPoint, title: str) -> str:
    """Markdown: step x task table (accuracy% [95% interval]) with the best step marked."""
    headers = ["step", *map(task_label, columns), "average"]
    rows = []
    for p in series:
        step = f"{p.step}{BEST_MARK if p is best else ''}"
        avg = MISSING if p.average is None else fmt_pct(p.average)
        avg += "" if p.complete else INCOMPLETE_MARK
        rows.append([step, *(cell_text(p.cells.get(c)) for c in columns), avg])
    table = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)
    best_avg = MISSING if best.average is None else f"{fmt_pct(best.average)}%"
    notes = [
        "Cells: accuracy in percent [95% interval].",
        *interval_notes((p.cells for p in series), columns),
        "average: mean over the step's own tasks.",
    ]
    if any(not p.complete for p in series):
        notes.append(
            f'A "{INCOMPLETE_MARK.strip()}" after the average marks a step lacking '
            "some tasks; it is not ranked against complete steps."
        )
    body = "".join(f"- {n}\n" for n in notes)
    return f"# {title}\n\nBest checkpoint: step {best.step} (average {best_avg}).\n\n{table}\n\nNotes:\n\n{body}"


def _values(series: list[SeriesPoint], key: str, attr: str) -> list[float]:
    """One attribute of a task's cells along the series; NaN where the step lacks the task."""
    out = []
    for p in series:
        cell = p.cells.get(key)
        value = getattr(cell, attr) if cell is not None else None
        out.append(math.nan if value is None else float(value))
    return out


def plot_series(
    columns: list[str], series: list[SeriesPoint], best: SeriesPoint, title: str, path: Path | None
) -> str | None:
    """Accuracy vs step: a line and 95% band per task, the average dashed, best step marked
    (PNG to `path`, or SVG text returned when `path` is None).

    Matplotlib is imported here (it is slow to import) and drawn on an Agg canvas directly,
    leaving pyplot's global backend alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIG_SIZE)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = [p.step for p in series]
    for key in columns:
        (line,) = ax.plot(steps, _values(series, key, "accuracy"), marker="o", label=task_label(key))
        ax.fill_between(
            steps,
            _values(series, key, "lo"),
            _values(series, key, "hi"),
            color=line.get_color(),
            alpha=BAND_ALPHA,
            linewidth=0,
        )
    averages = [p.average if p.complete and p.average is not None else math.nan for p in series]
    ax.plot(steps, averages, color="black", linestyle="--", linewidth=AVERAGE_WIDTH, label="average")
    if best.average is not None:
        ax.axvline(best.step, color="grey", linestyle=":")
        ax.plot(
            [best.step],
            [best.average],
            marker="*",
            color="black",
            markersize=BEST_MARKER_SIZE,
            linestyle="none",
            label=f"best (step {best.step})",
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=BAND_ALPHA)
    ax.legend(loc="upper left", bbox_to_anchor=LEGEND_ANCHOR, fontsize="small")
    fig.tight_layout()
    return render_figure(fig, path, FIG_DPI)


def series_records(folder: Path) -> dict[int, RunRecord]:
    """Step -> run record of the finished `step-N` run folders under `folder` (an `igpo eval
    --run` series or an ablation job's)."""
    from harness.eval.results import RESULTS_FILE, load_results

    out = {}
    for step_dir in sorted(Path(folder).glob("step-*")):
        if step_dir.name[5:].isdigit() and (step_dir / RESULTS_FILE).is_file():
            out[int(step_dir.name[5:])] = load_results(step_dir)
    return out


def _title(points: list[tuple[int, RunRecord]]) -> str:
    first = min(points, key=lambda point: point[0])[1]
    return f"Checkpoint series: {model_label(first, with_adapter=False)} ({protocol_label(first)})"


def series_svg(points: list[tuple[int, RunRecord]]) -> tuple[str, int]:
    """(the accuracy-vs-step plot as SVG text, best step): write_series' figure, for the report."""
    columns, series = _points(points)
    best = best_point(series)
    svg = plot_series(columns, series, best, _title(points), None)
    assert svg is not None
    return svg, best.step


def write_series(points: list[tuple[int, RunRecord]], out_dir: Path) -> tuple[Path, Path, int]:
    """Write series.md and series.png for (step, results record) points; return paths, best step."""
    columns, series = _points(points)
    best = best_point(series)
    title = _title(points)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, png_path = out_dir / SERIES_MD, out_dir / SERIES_PNG
    atomic_write_text(md_path, render_series_md(columns, series, best, title))
    plot_series(columns, series, best, title, png_path)
    return md_path, png_path, best.step
