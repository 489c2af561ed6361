"""What the HTML report shows, as plain data (checked in pytest without a browser).

`build_payload` turns run folders, an optional baseline, training folders, checkpoint-series
folders and ablation results folders into one JSON-ready dict; `harness.report.page` embeds it
in the page, whose script only draws it.
"""

from __future__ import annotations

import base64
import difflib
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.eval.records import RunRecord, Sample
from igpo.errors import MissingInput

if TYPE_CHECKING:
    from harness.check import CheckReport, CheckSettings

TOKEN = re.compile(r"\s+|[^\s]+")
"""Diff tokens: runs of whitespace and runs of anything else."""
PROVENANCE_KEYS = (
    "git_commit",
    "command",
    "versions",
    "wall_time_s",
    "tokens_per_s",
    "nfe_per_token",
    "world_size",
    "requests_decoded",
    "requests_from_cache",
    "warnings",
)
"""Provenance fields shown per run."""
BROKE, FIXED = "broke", "fixed"
"""Directions of a flipped item: right -> wrong in the candidate, wrong -> right."""


@dataclass
class ReportInputs:
    """The folders a report is made of, sorted by kind (see `classify`)."""

    runs: list[Path] = field(default_factory=list)
    """igpo eval run folders (results.json + samples.jsonl)."""
    baseline: Path | None = None
    """A run to compare every other run against (paired, as igpo check does)."""
    training: list[Path] = field(default_factory=list)
    """Training output folders (metrics.jsonl)."""
    series: list[Path] = field(default_factory=list)
    """`igpo eval --run` folders (step-N run folders)."""
    ablations: list[Path] = field(default_factory=list)
    """`igpo ablate` results folders (paper.json or <grid>.json)."""


def classify(paths: list[Path], baseline: Path | None = None) -> ReportInputs:
    """Sort the given paths into run, training, series and ablation folders; a folder of runs
    (e.g. runs/eval) contributes every run under it."""
    from harness.eval.leaderboard import discover_runs
    from harness.eval.results import RESULTS_FILE, unique_runs
    from igpo.training.run_folder import METRICS_FILE

    out = ReportInputs(baseline=_run_folder(baseline) if baseline else None)
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise MissingInput(f"no such run or folder: {path}")
        folder = path.parent if path.is_file() else path
        if (folder / RESULTS_FILE).is_file():
            out.runs.append(folder)
        elif (folder / METRICS_FILE).is_file():
            out.training.append(folder)
        elif any(folder.glob(f"step-*/{RESULTS_FILE}")):
            out.series.append(folder)
        elif _ablation_json(folder) is not None:
            out.ablations.append(folder)
        else:
            found = [p.parent if p.is_file() else p for p in discover_runs(folder)]
            if not found:
                raise MissingInput(
                    f"{path}: not a run, training, checkpoint-series or ablation folder, and no runs under it"
                )
            out.runs.extend(found)
    out.runs = unique_runs(out.runs)  # a run given as folder and as results.json is one run
    if out.baseline is not None:
        out.runs = [r for r in out.runs if r.resolve() != out.baseline.resolve()]
    return out


def _run_folder(path: Path) -> Path:
    from harness.eval.results import results_path

    file = results_path(path)
    if not file.is_file():
        raise MissingInput(f"--baseline {path}: no results.json there")
    return file.parent


def _ablation_json(folder: Path) -> Path | None:
    for candidate in sorted(folder.glob("*.json")):
        if candidate.name != "claims.json" and candidate.with_suffix(".md").is_file():
            return candidate
    return None


def build_payload(
    inputs: ReportInputs, *, title: str = "igpo report", settings: CheckSettings | None = None
) -> dict[str, Any]:
    """Everything the page shows, JSON-ready; `settings` decide the baseline comparison's verdict
    (default: `igpo check`'s, max drop included)."""
    from harness.eval.results import load_results, load_samples

    runs = ([inputs.baseline] if inputs.baseline else []) + inputs.runs
    records = [load_results(r) for r in runs]
    samples = [load_samples(r) for r in runs]
    prompts: dict[str, int] = {}  # each distinct prompt stored once (runs share their problems)
    rows = [sample_row(i, s, prompts) for i, run_rows in enumerate(samples) for s in run_rows]
    payload: dict[str, Any] = {
        "title": title,
        "leaderboard": leaderboard_data(records),
        "runs": [run_data(i, rec) for i, rec in enumerate(records)],
        "prompts": list(prompts),
        "samples": rows,
        "comparisons": [],
        "figures": [],
        "ablations": [],
    }
    if inputs.baseline is not None:
        offsets = [sum(len(r) for r in samples[:i]) for i in range(len(samples))]
        for i in range(1, len(records)):
            payload["comparisons"].append(
                comparison_data(records[0], samples[0], records[i], samples[i], i, (offsets[0], offsets[i]), settings)
            )
    for folder in inputs.series:
        payload["figures"].append(series_figure(folder))
    for folder in inputs.training:
        payload["figures"].append(training_figure(folder))
    for folder in inputs.ablations:
        payload["ablations"].append(ablation_data(folder))
    return payload


def leaderboard_data(records: list[RunRecord]) -> dict[str, Any]:
    """The leaderboard of the runs beside the published rows of their shared protocol."""
    from harness.eval.leaderboard import (
        DEFAULT_REFERENCE,
        build_leaderboard,
        load_reference,
        shared_protocol,
        task_label,
    )

    reference = load_reference(DEFAULT_REFERENCE) if DEFAULT_REFERENCE.is_file() else None
    board = build_leaderboard(records, reference, shared_protocol(records)) if records or reference else None
    if board is None:
        return {"columns": [], "rows": [], "notes": []}
    return {
        "columns": [{"key": c, "label": task_label(c)} for c in board.columns],
        "rows": [
            {
                "model": r.model,
                "protocol": r.protocol,
                "result": r.result,
                "source": r.source,
                "deviates": r.protocol.endswith("*"),
                "average": r.average,
                "cells": {k: [c.accuracy, c.lo, c.hi] for k, c in r.cells.items()},
            }
            for r in board.rows
        ],
        "notes": list(board.notes),
    }


def run_data(index: int, record: RunRecord) -> dict[str, Any]:
    """One run's provenance and per-task / per-level accuracy."""
    from harness.eval.leaderboard import protocol_label

    return {
        "index": index,
        "label": record.label or record.model.name_or_path,
        "source": record.source,
        "path": str(record.path),
        "model": asdict(record.model),
        "protocol": {
            "name": record.protocol.name,
            "label": protocol_label(record),
            "file_hash": record.protocol.file_hash,
            "seeds": record.protocol.seeds_run or record.protocol.seeds,
            "overrides": record.protocol.overrides,
        },
        "deviations": record.deviations(),
        "provenance": {k: record.provenance[k] for k in PROVENANCE_KEYS if k in record.provenance},
        "tasks": [
            {
                "key": key,
                "accuracy": t.accuracy,
                "ci95": list(t.ci95),
                "ci_kind": t.ci_kind,
                "n_items": t.n_items,
                "samples_per_item": t.samples_per_item,
                "decoding": t.decoding,
                "data": t.data,
                "levels": {str(k): v for k, v in sorted(t.level_accuracy().items())},
            }
            for key, t in record.tasks.items()
        ],
    }


def sample_row(run: int, s: Sample, prompts: dict[str, int]) -> dict[str, Any]:
    """One sample as the browser shows it: `prompt` indexes the payload's prompt list, which
    `prompts` collects; hit_length: the response filled its token budget."""
    return {
        "run": run,
        "task": s.task,
        "doc": s.doc_id,
        "seed": s.seed,
        "repeat": s.repeat,
        "prompt": prompts.setdefault(s.prompt, len(prompts)),
        "response": s.response,
        "extracted": s.extracted,
        "gold": s.gold,
        "correct": s.correct,
        "timed_out": s.timed_out,
        "hit_length": bool(s.extra.get("hit_length")),
    }


def token_diff(a: str, b: str) -> list[list[str]]:
    """[op, text] runs turning `a` into `b`: "=" kept, "-" only in a, "+" only in b."""
    ta, tb = TOKEN.findall(a or ""), TOKEN.findall(b or "")
    out: list[list[str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ta, b=tb, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(["=", "".join(ta[i1:i2])])
            continue
        if i2 > i1:
            out.append(["-", "".join(ta[i1:i2])])
        if j2 > j1:
            out.append(["+", "".join(tb[j1:j2])])
    return out


def comparison_data(
    base: RunRecord,
    base_rows: list[Sample],
    cand: RunRecord,
    cand_rows: list[Sample],
    cand_index: int,
    offsets: tuple[int, int],
    settings: CheckSettings | None = None,
) -> dict[str, Any]:
    """The paired comparison of one run against the baseline, with its verdict, forest plot data
    and flipped items (right -> wrong first): the same pairing, counts and verdict as `igpo check`
    with these settings (common items when the runs differ). An item points at its first sample
    in each run by index into the payload's samples (`offsets`: where each run's samples start)."""
    from harness.check import CheckSettings, compare_records
    from harness.report.gate import forest_data, forest_svg, verdict_data

    settings = replace(settings or CheckSettings(), allow_mismatch=True)
    report = compare_records(base, base_rows, cand, cand_rows, settings)
    forest = forest_data(report)
    return {
        "baseline": 0,
        "candidate": cand_index,
        **verdict_data(report),
        "forest": forest,
        "forest_svg": forest_svg(forest),
        "tasks": [
            {
                "task": t.task,
                "n_items": t.n_items,
                "baseline": t.baseline_accuracy,
                "candidate": t.candidate_accuracy,
                "diff": t.diff,
                "ci95": list(t.ci95),
                "p": t.p_value,
                "test": t.test,
                "verdict": t.verdict,
                "broke": t.losses,
                "fixed": t.wins,
            }
            for t in report.tasks
        ],
        "items": flipped_items(report, base_rows, cand_rows, offsets),
        "mismatches": report.mismatches,
    }


def flipped_items(
    report: CheckReport, base_rows: list[Sample], cand_rows: list[Sample], offsets: tuple[int, int]
) -> list[dict[str, Any]]:
    """Every item the comparison counts as flipped, right -> wrong (broke) before wrong -> right
    (fixed) across all tasks, each with its first sample in each run and their token diff."""
    first: dict[tuple[int, str, Any], int] = {}
    for run, rows in ((0, base_rows), (1, cand_rows)):
        for n, s in enumerate(rows):
            first.setdefault((run, s.task, s.item), n)
    items = []
    for direction in (BROKE, FIXED):
        for t in report.tasks:
            for doc in t.broke if direction == BROKE else t.fixed:
                bi, ci = first[(0, t.task, doc)], first[(1, t.task, doc)]
                b, c = base_rows[bi], cand_rows[ci]
                items.append(
                    {
                        "task": t.task,
                        "doc": b.doc_id,
                        "direction": direction,
                        "baseline": offsets[0] + bi,
                        "candidate": offsets[1] + ci,
                        "diff": token_diff(b.response, c.response),
                    }
                )
    return items


def series_figure(folder: Path) -> dict[str, Any]:
    """Accuracy vs checkpoint (an `igpo eval --run` folder) as inline SVG."""
    from harness.eval.series import series_records, series_svg

    points = sorted(series_records(folder).items())
    svg, best = series_svg(points)
    levels: dict[str, dict[str, float]] = {}
    for step, record in points:
        for level, value in record.level_accuracy().items():
            levels.setdefault(str(level), {})[str(step)] = value
    return {
        "kind": "series",
        "title": f"{folder.name}: accuracy vs step (best step {best})",
        "svg": svg,
        "levels": levels,
    }


def training_figure(folder: Path) -> dict[str, Any]:
    """A training run's per-step curves (metrics.jsonl) as inline SVG."""
    from harness.eval.curves import metrics_rows, plot_training_curves

    rows = metrics_rows(folder)
    return {
        "kind": "training",
        "title": f"{folder.name}: training curves ({len(rows)} steps)",
        "svg": plot_training_curves([(folder.name, [rows])], None, folder.name),
        "levels": {},
    }


def ablation_data(folder: Path) -> dict[str, Any]:
    """An ablation results folder: its report (markdown, shown as text), plots and claims."""
    import json

    source = _ablation_json(folder)
    assert source is not None
    plots = {
        p.name: "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode("ascii")
        for p in sorted(folder.glob(f"{source.stem}_*.png"))
    }
    claims = folder / "claims.json"
    return {
        "name": source.stem,
        "folder": str(folder),
        "markdown": source.with_suffix(".md").read_text(encoding="utf-8"),
        "plots": plots,
        "claims": json.loads(claims.read_text(encoding="utf-8")) if claims.is_file() else None,
    }
