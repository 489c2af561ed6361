"""Leaderboard of eval runs beside published reference numbers, as markdown, LaTeX or CSV.

One row per run (model + adapter/checkpoint, protocol), one column per task key; each cell is
accuracy in percent with its 95% interval. Reference rows (harness/eval/reference.yaml, shipped with
the package and linked as results/reference.yaml) are published point values, marked "reported"
and listed after the runs.

A run whose settings differ from its protocol's (decoding overrides, a --limit, fewer seeds)
is labelled `<protocol>*` with a footnote listing the differences: it is never shown as
comparable to the published rows of that protocol. `--label` (record `label_given`) names a row.

Average: the mean of the row's own non-missing task columns. A row missing some columns gets
a `*` after its average (it covers fewer tasks, so it is not comparable); complete rows sort
before incomplete ones, each group by average, best first.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tabulate import LATEX_ESCAPE_RULES, tabulate

from harness.eval.records import UNKNOWN, RunRecord
from harness.eval.results import RESULTS_FILE, atomic_write_text, load_results, unique_runs
from harness.markdown import one_line
from harness.markdown import table as markdown_table
from igpo.config import read_yaml
from igpo.errors import BadFile, InvalidSetting, MissingInput, require_file

DEFAULT_REFERENCE = Path(__file__).resolve().parent / "reference.yaml"
"""The published numbers, shipped as package data (found from any working folder)."""
DEVIATION_MARK = "*"
"""Appended to the protocol name of a run whose settings differ from the protocol's."""
DEFAULT_OUT = Path("results/leaderboard.md")

TABLE_FORMATS: dict[str, str | None] = {
    "markdown": "pipe",
    "github": "github",
    "latex": "latex_booktabs",
    "csv": None,
}
"""Output format -> tabulate table format (None: written with the csv module)."""

TASK_PREFIX = "igpo_"
LENGTH_SEP = "@"
TASK_ORDER = ("gsm8k", "math500", "amc", "amc23", "arith")
"""Column order of known tasks (prefix stripped); other tasks follow alphabetically."""

PERCENT = 100.0
PCT_DIGITS = 1
"""Decimals shown for percentages in tables."""
CSV_DIGITS = 3
"""Decimals kept for percentages in CSV."""

MEASURED = "measured"
REPORTED = "reported"
MISSING = "-"
INCOMPLETE_MARK = " *"

WILSON = "wilson"
CLUSTER = "cluster"
CI_KIND_TEXT = {
    WILSON: "Wilson score interval (one sample per item)",
    CLUSTER: "item-clustered normal interval (avg@k or several seeds)",
    "wilson-items": "Wilson score interval over items (every item scored alike, so the clustered interval would collapse)",
}
REFERENCE_FIELDS = {"model", "protocol", "source", "accuracy"}
CHECKPOINT_PREFIXES = ("checkpoint", "step", "ckpt")
"""Adapter folder names this generic get their parent folder's name in front."""


@dataclass(frozen=True)
class ReferenceRow:
    """A published result: one model under one protocol, accuracy per task key in percent."""

    model: str
    protocol: str
    source: str
    accuracy: dict[str, float]


@dataclass(frozen=True)
class Cell:
    """One task's accuracy in percent; the 95% interval is None for reported values."""

    accuracy: float
    lo: float | None = None
    hi: float | None = None
    ci_kind: str | None = None
    samples_per_item: int | None = None


@dataclass
class Row:
    """One leaderboard line: a measured run or a reported reference result."""

    model: str
    protocol: str
    result: str
    source: str
    cells: dict[str, Cell]
    average: float | None = None
    complete: bool = True


@dataclass
class Leaderboard:
    """Rows in display order, task columns in display order, and the footnotes."""

    columns: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


# Task keys


def split_task_key(key: str) -> tuple[str, str | None]:
    """("igpo_gsm8k", "256") for "igpo_gsm8k@256"; the length is None without a suffix."""
    name, sep, length = key.partition(LENGTH_SEP)
    return name, (length if sep else None)


def task_sort_key(key: str) -> tuple[int, str, int, float, str]:
    """Known tasks in TASK_ORDER first, others alphabetically; lengths ascending, none first."""
    name, length = split_task_key(key)
    base = name.removeprefix(TASK_PREFIX)
    rank = TASK_ORDER.index(base) if base in TASK_ORDER else len(TASK_ORDER)
    if length is None:
        return (rank, base, 0, 0.0, "")
    number = float(length) if length.isdigit() else math.inf
    return (rank, base, 1, number, length)


def task_label(key: str) -> str:
    """Column header: the task key without the igpo_ prefix ("gsm8k@256")."""
    return key.removeprefix(TASK_PREFIX)


def order_tasks(keys: Iterable[str]) -> list[str]:
    """Distinct task keys in display order."""
    return sorted(set(keys), key=task_sort_key)


# Reference file


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _reference_row(path: Path, n: int, raw: Any) -> ReferenceRow:
    """Validate one entry of the reference file's rows list."""
    where = f"{path}: row {n}"
    if not isinstance(raw, dict):
        raise BadFile(f"{where} is not a mapping")
    unknown = sorted(set(raw) - REFERENCE_FIELDS)
    if unknown:
        raise BadFile(f"{where} has unknown field(s) {', '.join(map(str, unknown))}")
    for name in ("model", "protocol", "source"):
        if not isinstance(raw.get(name), str) or not raw[name].strip():
            raise BadFile(f"{where} needs a non-empty string {name!r}")
    acc = raw.get("accuracy")
    if not isinstance(acc, dict) or not acc:
        raise BadFile(f"{where} ({raw['model']}) needs a non-empty 'accuracy' mapping")
    for key, value in acc.items():
        if not isinstance(key, str) or not _is_number(value) or not 0 <= value <= PERCENT:
            raise InvalidSetting(f"{where} ({raw['model']}): accuracy {key!r}: {value!r} is not a percentage")
    return ReferenceRow(
        model=raw["model"].strip(),
        protocol=raw["protocol"].strip(),
        source=raw["source"].strip(),
        accuracy={k: float(v) for k, v in acc.items()},
    )


def load_reference(path: str | Path) -> list[ReferenceRow]:
    """Read and validate reference.yaml (`rows:` list); ValueError names what is wrong."""
    path = Path(path)
    require_file(path, "reference file", f"no reference file at {path}")
    try:
        data = read_yaml(path, "reference file")  # bounded: size, depth, alias expansion
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise BadFile(f"{path} is not valid YAML ({problem}{at})") from None
    except UnicodeDecodeError as err:
        raise BadFile(f"{path} is not UTF-8 text ({err.reason})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise BadFile(f"{path} needs a top-level 'rows:' list")
    rows = [_reference_row(path, n, raw) for n, raw in enumerate(data["rows"], 1)]
    seen: set[tuple[str, str, str]] = set()
    for row in rows:
        ident = (row.model, row.protocol, row.source)
        if ident in seen:
            raise BadFile(f"{path}: {row.model} ({row.protocol}, {row.source}) appears twice")
        seen.add(ident)
    return rows


# Runs


def _short_name(name_or_path: str) -> str:
    """The last path part of a model id or folder ("GSAI-ML/LLaDA-8B-Instruct" -> "LLaDA-...")."""
    parts = Path(name_or_path.rstrip("/")).parts
    if not parts:
        return name_or_path
    last = parts[-1]
    if last.lower().startswith(CHECKPOINT_PREFIXES) and len(parts) > 1:
        return f"{parts[-2]}/{last}"
    return last


def model_label(record: RunRecord, with_adapter: bool = True) -> str:
    """Model name plus (unless with_adapter is False) the adapter/checkpoint label of a run."""
    name = _short_name(str(record.model.name_or_path or UNKNOWN))
    adapter = record.model.adapter
    return f"{name} + {_short_name(str(adapter))}" if adapter and with_adapter else name


def protocol_name(record: RunRecord) -> str:
    """The protocol name of a run record ("?" if it has none)."""
    return str(record.protocol.name) if record.protocol.name else UNKNOWN


def protocol_label(record: RunRecord) -> str:
    """The protocol column of a run: its name, with DEVIATION_MARK when it deviates."""
    name = protocol_name(record)
    return name + DEVIATION_MARK if name != UNKNOWN and record.deviations() else name


def row_name(record: RunRecord) -> str:
    """The model column of a run: the user's --label, else model (+ adapter)."""
    if record.label_given and record.label:
        return str(record.label)
    return model_label(record)


def shared_protocol(runs: list[RunRecord]) -> str | None:
    """The one known protocol all runs share (a deviating run's is `<name>*`, which no published
    row has); None when mixed, unknown or there are no runs."""
    names = {protocol_label(r) for r in runs}
    name = names.pop() if len(names) == 1 else None
    return None if name == UNKNOWN else name


def run_cells(record: RunRecord) -> dict[str, Cell]:
    """Per-task cells (percent, with interval) of a loaded run record."""
    return {
        key: Cell(t.accuracy * PERCENT, t.ci95[0] * PERCENT, t.ci95[1] * PERCENT, t.ci_kind, t.samples_per_item)
        for key, t in record.tasks.items()
    }


def _run_row(record: RunRecord) -> Row:
    return Row(
        model=row_name(record),
        protocol=protocol_label(record),
        result=MEASURED,
        source=record.source,
        cells=run_cells(record),
    )


def _reference_to_row(ref: ReferenceRow, columns: list[str]) -> Row:
    cells = {k: Cell(v) for k, v in ref.accuracy.items() if k in columns}
    return Row(ref.model, ref.protocol, REPORTED, ref.source, cells)


def _fill_average(row: Row, columns: list[str]) -> Row:
    """Set the row's average over its own non-missing columns and whether it has them all."""
    present = [row.cells[c].accuracy for c in columns if c in row.cells]
    row.average = sum(present) / len(present) if present else None
    row.complete = len(present) == len(columns)
    return row


def _rank(row: Row) -> tuple[bool, float]:
    """Sort key: complete rows first, then by average descending."""
    return (not row.complete, -(row.average if row.average is not None else -math.inf))


# Notes


def _samples_text(samples: set[int | None]) -> str:
    known = sorted(s for s in samples if s is not None)
    return "/".join(map(str, known)) if known else UNKNOWN


def interval_notes(cell_maps: Iterable[dict[str, Cell]], columns: list[str]) -> list[str]:
    """One footnote per interval kind naming its task columns (clustered: with samples/item)."""
    groups: dict[str, dict[str, set[int | None]]] = {}
    for cells in cell_maps:
        for key in columns:
            cell = cells.get(key)
            if cell is not None and cell.ci_kind is not None:
                per_col = groups.setdefault(cell.ci_kind, {})
                per_col.setdefault(key, set()).add(cell.samples_per_item)
    known = list(CI_KIND_TEXT)
    notes = []
    for kind in sorted(groups, key=lambda k: (known.index(k) if k in known else len(known), k)):
        per_col = groups[kind]
        cols = ", ".join(
            task_label(k) if kind == WILSON else f"{task_label(k)} ({_samples_text(per_col[k])} samples/item)"
            for k in order_tasks(per_col)
        )
        notes.append(f"95% intervals: {CI_KIND_TEXT.get(kind, kind)} for {cols}.")
    return notes


def deviation_notes(runs: list[RunRecord]) -> list[str]:
    """One footnote per deviating run: what differs from its protocol."""
    return [
        f"{protocol_label(r)} ({r.source}): differs from protocol {protocol_name(r)} "
        f"({'; '.join(r.deviations())}), so it is not comparable to that protocol's published rows."
        for r in runs
        if protocol_label(r).endswith(DEVIATION_MARK)
    ]


def _notes(rows: list[Row], columns: list[str]) -> list[str]:
    measured = any(r.result == MEASURED for r in rows)
    notes = [f"Cells: accuracy in percent{' [95% interval]' if measured else ''}."]
    notes += interval_notes((r.cells for r in rows), columns)
    notes.append("average: mean over the row's own tasks shown.")
    if any(not r.complete for r in rows):
        notes.append(
            f'A "{INCOMPLETE_MARK.strip()}" after the average marks a row lacking some columns: '
            "its average covers fewer tasks and is not comparable."
        )
    if any(r.result == REPORTED for r in rows):
        notes.append(f"{REPORTED}: published point values (no interval) from the paper and table in the source column.")
    return notes


def build_leaderboard(
    runs: list[RunRecord],
    reference: list[ReferenceRow] | None,
    protocol: str | None,
) -> Leaderboard:
    """Rows for the runs (best average first) then reference rows of `protocol` (all if None).

    Columns are the task keys of the runs; with no runs, those of the reference rows shown.
    Reference rows sharing none of the columns are left out.
    """
    run_rows = [_run_row(r) for r in runs]
    refs = [r for r in reference or [] if protocol is None or r.protocol == protocol]
    if run_rows:
        columns = order_tasks(k for row in run_rows for k in row.cells)
    else:
        columns = order_tasks(k for ref in refs for k in ref.accuracy)
    ref_rows = [_reference_to_row(r, columns) for r in refs]
    ref_rows = [r for r in ref_rows if r.cells]
    run_rows = sorted((_fill_average(r, columns) for r in run_rows), key=_rank)
    group_order = {}
    for r in ref_rows:
        group_order.setdefault((r.protocol, r.source), len(group_order))
    ref_rows = sorted(
        (_fill_average(r, columns) for r in ref_rows),
        key=lambda r: group_order[(r.protocol, r.source)],
    )
    rows = run_rows + ref_rows
    return Leaderboard(columns=columns, rows=rows, notes=_notes(rows, columns) + deviation_notes(runs))


# Rendering


def fmt_pct(value: float) -> str:
    """A percentage with PCT_DIGITS decimals."""
    return f"{value:.{PCT_DIGITS}f}"


def cell_text(cell: Cell | None) -> str:
    """ "81.5 [79.3, 83.5]" for a measured cell, "81.5" for a reported one, "-" if missing."""
    if cell is None:
        return MISSING
    if cell.lo is None or cell.hi is None:
        return fmt_pct(cell.accuracy)
    return f"{fmt_pct(cell.accuracy)} [{fmt_pct(cell.lo)}, {fmt_pct(cell.hi)}]"


def average_text(row: Row) -> str:
    """The row's average, with the incomplete mark when it lacks some columns."""
    if row.average is None:
        return MISSING
    return fmt_pct(row.average) + ("" if row.complete else INCOMPLETE_MARK)


def _headers(lb: Leaderboard) -> list[str]:
    return ["model", "protocol", "result", *map(task_label, lb.columns), "average", "source"]


def _table_rows(lb: Leaderboard) -> list[list[str]]:
    return [
        [r.model, r.protocol, r.result, *(cell_text(r.cells.get(c)) for c in lb.columns), average_text(r), r.source]
        for r in lb.rows
    ]


def _csv_number(value: float | None) -> str:
    return "" if value is None else f"{value:.{CSV_DIGITS}f}"


CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""How a spreadsheet recognises a formula (OWASP's CSV injection list)."""
CSV_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
"""A cell that is a number as it stands (`-1.5`): a spreadsheet reads it as that number."""
CSV_QUOTE = "'"


def csv_cell(text: str) -> str:
    """A text cell that a spreadsheet would run as a formula (a label `=HYPERLINK(...)`, say)
    prefixed with a single quote, OWASP's advice, so it shows as the text it is; a plain number
    such as `-1.5` stays a number."""
    if text.startswith(CSV_FORMULA_START) and not CSV_PLAIN_NUMBER.fullmatch(text):
        return CSV_QUOTE + text
    return text


def _render_csv(lb: Leaderboard) -> str:
    """One line per row; per task: accuracy, lo, hi (percent) and interval kind columns."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["model", "protocol", "result", "source"]
    for key in lb.columns:
        header += [key, f"{key}_lo", f"{key}_hi", f"{key}_ci"]
    writer.writerow([csv_cell(cell) for cell in [*header, "average", "complete"]])  # task names come from runs
    for r in lb.rows:
        line = [r.model, r.protocol, r.result, r.source]
        for key in lb.columns:
            c = r.cells.get(key)
            line += (
                ["", "", "", ""]
                if c is None
                else [_csv_number(c.accuracy), _csv_number(c.lo), _csv_number(c.hi), c.ci_kind or ""]
            )
        writer.writerow([csv_cell(cell) for cell in [*line, _csv_number(r.average), str(r.complete).lower()]])
    return buf.getvalue()


def _latex_escape(text: str) -> str:
    return "".join(LATEX_ESCAPE_RULES.get(ch, ch) for ch in text)


def render(lb: Leaderboard, fmt: str) -> str:
    """The leaderboard as markdown, github, latex or csv text."""
    if fmt not in TABLE_FORMATS:
        raise InvalidSetting(f"unknown format {fmt!r}; choose from {', '.join(TABLE_FORMATS)}")
    if fmt == "csv":
        return _render_csv(lb)
    if fmt == "latex":  # tabulate escapes LaTeX's specials; a line break would split the row's source
        rows = [[one_line(c) for c in r] for r in _table_rows(lb)]
        table = tabulate(rows, headers=_headers(lb), tablefmt=TABLE_FORMATS[fmt], disable_numparse=True)
    else:  # a label cannot forge a row, a cell or an HTML tag
        table = markdown_table(_headers(lb), _table_rows(lb), tablefmt=TABLE_FORMATS[fmt])
    if fmt == "latex":
        notes = "".join(f"{_latex_escape(n)}\\par\n" for n in lb.notes)
        return f"{table}\n\n{{\\footnotesize\n{notes}}}\n"
    notes = "".join(f"- {one_line(n)}\n" for n in lb.notes)
    return f"# Leaderboard\n\n{table}\n\nNotes:\n\n{notes}"


# Files


def discover_runs(root: str | Path) -> list[Path]:
    """Run folders (those holding a results.json) at or under `root`, sorted."""
    root = Path(root)
    if not root.exists():
        raise MissingInput(f"no such folder: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    return sorted({p.parent for p in root.rglob(RESULTS_FILE) if p.is_file()})


def write_leaderboard(
    run_paths: list[Path],
    out: Path | None,
    fmt: str,
    reference_path: Path | None,
    *,
    protocol: str | None = None,
) -> str:
    """Load runs (each once, however often given) and references, render, write `out`
    atomically if given; return the text.

    Reference rows are filtered to `protocol`; when it is None, to the protocol all runs share
    (all reference rows when the runs are mixed or there are none).
    """
    if fmt not in TABLE_FORMATS:
        raise InvalidSetting(f"unknown format {fmt!r}; choose from {', '.join(TABLE_FORMATS)}")
    runs = [load_results(p) for p in unique_runs(run_paths)]  # a run given twice is listed once
    reference = load_reference(reference_path) if reference_path is not None else None
    if not runs and not reference:
        raise InvalidSetting("nothing to show: no runs and no reference rows")
    chosen = protocol if protocol is not None else shared_protocol(runs)
    text = render(build_leaderboard(runs, reference, chosen), fmt)
    if out is not None:
        atomic_write_text(Path(out), text)
    return text
