"""The report of an ablation grid: tables (markdown + JSON) and plots from its finished jobs.

Per cell: final accuracy (each seed's last checkpoint) averaged over seeds with a 95% Student-t
interval over seeds (one seed: the evaluation's own interval over items), accuracy per arith
level, and training statistics from metrics.jsonl (all-wrong ratio, rescued share, rollouts
replaced per step). Plots are drawn on Agg canvases of their own (pyplot's global state is left
alone) and, like the tables, written through a temporary file and a rename."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.ablate.grid import STEP_DIR, CellSpec, GridSpec, Job, job_config
from harness.eval.curves import still_wrong_ratio
from harness.eval.records import RunRecord
from harness.eval.results import RESULTS_FILE
from harness.eval.stats import t_interval
from igpo.atomic import atomic_write_text, save_png

PERCENT = 100.0
SMOOTH_STEPS = 5
"""Trailing window (training steps) of the all-wrong-ratio curves: one step has few groups."""
FIG_SIZE = (8.0, 4.8)
FIG_DPI = 120
BAND_ALPHA = 0.18
LEGEND_ANCHOR = (1.01, 1.0)
SEED_DOT_SIZE = 14
SEED_DOT_OFFSET = 0.12
"""Seed dots sit just right of their cell's mean marker."""
SEED_DOT_ALPHA = 0.6
STEP_LABEL = "training step"
MIN_ACCURACY_TOP = 10.0
"""Accuracy axes reach at least this many percent (an all-zero curve still gets a scale)."""


# ---------------------------------------------------------------------------- aggregation
@dataclass
class SeedRun:
    """A finished job's numbers."""

    seed: int
    curve: dict[int, float]
    """Step -> accuracy (mean over the eval tasks); step 0 is the start model."""
    final_interval: tuple[float, float] | None
    """The last step's own 95% interval (single task only), used when a cell has one seed."""
    final_interval_kind: str
    levels: dict[int, float]
    """Operations -> accuracy at the last step (arith's acc_steps_<L>)."""
    metrics: list[dict[str, Any]]
    """metrics.jsonl rows of the training run."""

    @property
    def final(self) -> float:
        return self.curve[max(self.curve)]


@dataclass
class CellResult:
    """A cell aggregated over its finished seeds."""

    name: str
    spec: CellSpec
    planned: list[int]
    runs: list[SeedRun]
    rescues: bool
    """Whether the cell re-samples all-wrong groups at all (igpo.resample != none)."""
    mean: float | None = None
    interval: tuple[float, float] | None = None
    interval_kind: str = ""


@dataclass
class BaseResult:
    """The start model (step 0 of every curve)."""

    accuracy: float
    interval: tuple[float, float] | None
    interval_kind: str
    levels: dict[int, float]


def _record_numbers(record: RunRecord) -> tuple[float, tuple[float, float] | None, str, dict[int, float]]:
    """(accuracy averaged over tasks, interval and its kind if one task, per-level accuracy)."""
    interval, kind = None, "-"
    if len(record.tasks) == 1:
        only = next(iter(record.tasks.values()))
        interval, kind = only.ci95, only.ci_kind
    return record.mean_accuracy(), interval, kind, record.level_accuracy()


def load_seed_run(job: Job) -> SeedRun | None:
    """A finished job's curve, final numbers and training metrics; None if not finished."""
    if not job.done_file.is_file():
        return None
    from harness.eval.series import series_records

    records = series_records(job.series)
    if not records:
        return None
    curve = {step: _record_numbers(rec)[0] for step, rec in records.items()}
    _, interval, kind, levels = _record_numbers(records[max(records)])
    from harness.eval.curves import metrics_rows

    return SeedRun(job.seed, curve, interval, kind, levels, metrics_rows(job.folder))


def collect(spec: GridSpec, jobs: list[Job]) -> tuple[list[CellResult], BaseResult | None]:
    """Finished runs grouped by cell, with final accuracy mean and 95% interval per cell."""
    from harness.eval.results import load_results

    cells: list[CellResult] = []
    base_record = None
    for name, cell in spec.cells.items():
        own = [j for j in jobs if j.cell == name]
        runs = [r for r in (load_seed_run(j) for j in own) if r is not None]
        rescues = job_config(spec, own[0]).igpo.resample != "none"
        result = CellResult(name, cell, [j.seed for j in own], runs, rescues)
        if runs:
            finals = [r.final for r in runs]
            result.mean = sum(finals) / len(finals)
            if len(runs) > 1:
                result.interval = t_interval(finals)
                result.interval_kind = f"t over {len(runs)} seeds"
            else:
                result.interval = runs[0].final_interval
                result.interval_kind = f"{runs[0].final_interval_kind} over items (1 seed)"
        cells.append(result)
        for job in own if base_record is None else []:
            step0 = job.series / STEP_DIR.format(0)
            if job.done_file.is_file() and (step0 / RESULTS_FILE).is_file():
                base_record = load_results(step0)
                break
    base = None
    if base_record is not None:
        acc, interval, kind, levels = _record_numbers(base_record)
        base = BaseResult(acc, interval, kind, levels)
    return cells, base


def _mean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


@dataclass
class TrainingStats:
    """What a cell's training logs say about its groups (means over steps and seeds)."""

    all_wrong: float | None
    """Share of prompt groups whose G first rollouts were all wrong."""
    rescued: float | None
    """Share of those all-wrong groups in which re-sampling replaced at least one rollout."""
    zero_gradient: float | None
    """Share of groups still all wrong after re-sampling: they teach nothing (all advantages 0)."""
    replaced: float | None
    """Rollouts replaced per step."""


def training_stats(runs: list[SeedRun]) -> TrainingStats:
    rows = [row for r in runs for row in r.metrics]
    if not rows:
        return TrainingStats(None, None, None, None)
    all_wrong = _mean(float(row.get("all_wrong_ratio", math.nan)) for row in rows)
    groups = sum(row.get("groups", 1.0) for row in rows)
    wrong_groups = sum(row.get("all_wrong_ratio", 0.0) * row.get("groups", 1.0) for row in rows)
    still_wrong = sum(still_wrong_ratio(row, missing=0.0) * row.get("groups", 1.0) for row in rows)
    replaced = _mean(float(row.get("replaced", math.nan)) for row in rows)
    return TrainingStats(
        all_wrong,
        (wrong_groups - still_wrong) / wrong_groups if wrong_groups else None,
        still_wrong / groups if groups else None,
        replaced,
    )


# ---------------------------------------------------------------------------- report
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{PERCENT * value:.1f}"


def _interval_text(interval: tuple[float, float] | None) -> str:
    return "-" if interval is None else f"[{_pct(interval[0])}, {_pct(interval[1])}]"


def render_report(spec: GridSpec, cells: list[CellResult], base: BaseResult | None, jobs: list[Job]) -> str:
    """The markdown report: final numbers per cell, accuracy vs step, the grid itself."""
    table, curves, grid = _final_table(cells, base), _curves_table(cells), _grid_table(spec)
    body = "".join(f"- {n}\n" for n in _notes(spec, jobs))
    about = f"{spec.description}\n\n" if spec.description else ""
    title = f"# Ablations: {spec.name}\n\n{about}"
    return (
        f"{title}{table}\n\n## Accuracy vs step (%, mean over seeds)\n\n{curves}\n\n"
        f"## Grid\n\n{grid}\n\nNotes:\n\n{body}"
    )


def _final_table(cells: list[CellResult], base: BaseResult | None) -> str:
    """Final accuracy, its interval, per-level accuracy and training statistics, one row per cell."""
    from harness.markdown import table as markdown_table

    levels = sorted({lv for c in cells for r in c.runs for lv in r.levels} | set(base.levels if base else {}))
    headers = [
        "cell",
        "seeds",
        "final acc %",
        "95% interval",
        "interval",
        "per seed",
        *(f"L{lv} %" for lv in levels),
        "all-wrong %",
        "rescued %",
        "zero-gradient %",
        "replaced / step",
    ]
    rows = []
    if base is not None:
        rows.append(
            [
                "base (step 0)",
                "-",
                _pct(base.accuracy),
                _interval_text(base.interval),
                f"{base.interval_kind} over items",
                "-",
                *(_pct(base.levels.get(lv)) for lv in levels),
                "-",
                "-",
                "-",
                "-",
            ]
        )
    for c in cells:
        stats = training_stats(c.runs)
        per_seed = ", ".join(f"{_pct(r.final)} (s{r.seed})" for r in c.runs) or "-"
        rows.append(
            [
                c.name,
                f"{len(c.runs)}/{len(c.planned)}",
                _pct(c.mean),
                _interval_text(c.interval),
                c.interval_kind or "-",
                per_seed,
                *(_pct(_mean(r.levels.get(lv, math.nan) for r in c.runs)) for lv in levels),
                _pct(stats.all_wrong),
                _pct(stats.rescued) if c.rescues else "n/a",
                _pct(stats.zero_gradient),
                "-" if stats.replaced is None else f"{stats.replaced:.2f}",
            ]
        )
    return markdown_table(headers, rows)


def _curves_table(cells: list[CellResult]) -> str:
    """Accuracy at each evaluated step, mean over seeds, one row per cell with finished runs."""
    from harness.markdown import table as markdown_table

    steps = sorted({s for c in cells for r in c.runs for s in r.curve})
    curve_rows = [
        [c.name, *(_pct(_mean(r.curve.get(s, math.nan) for r in c.runs)) for s in steps)] for c in cells if c.runs
    ]
    return (
        markdown_table(["cell", *(f"step {s}" for s in steps)], curve_rows) if curve_rows else "(no finished runs yet)"
    )


def _grid_table(spec: GridSpec) -> str:
    """The grid itself: each cell's overrides, seeds and description."""
    from harness.markdown import table as markdown_table

    grid_rows = [
        [
            name,
            ", ".join(f"`{o}`" for o in cell.overrides) or "(recipe as is)",
            ", ".join(map(str, spec.seeds_of(name))),
            cell.description,
        ]
        for name, cell in spec.cells.items()
    ]
    return markdown_table(["cell", "overrides", "seeds", "what"], grid_rows)


def _notes(spec: GridSpec, jobs: list[Job]) -> list[str]:
    """What the report's columns and plots mean, and which jobs have not finished."""
    missing = [j.label for j in jobs if not j.done_file.is_file()]
    ev = spec.eval
    notes = [
        f"Recipe `{spec.recipe}`"
        + (f" with {', '.join(f'`{o}`' for o in spec.overrides)}" if spec.overrides else "")
        + "; every cell starts from the "
        "recipe's model.path (the base row, step 0 of every curve).",
        f"Evaluation: tasks {', '.join(ev.tasks)}, protocol `{ev.protocol}`, "
        f"{'all problems' if ev.limit is None else f'first {ev.limit} problems'}, every "
        f"{'' if ev.every == 1 else f'{ev.every}-th '}checkpoint.",
        "final acc: accuracy at each seed's last checkpoint (mean over the tasks), averaged over "
        "seeds; 95% interval: Student-t over seeds (seed-to-seed spread of training, the width "
        "to compare cells by); with one seed, the last evaluation's own interval over items "
        "(Wilson), which leaves training noise out.",
        "L<k>: accuracy on problems with k operations at the last checkpoint (mean over seeds).",
        "all-wrong: share of prompt groups whose G rollouts were all wrong, mean over training "
        "steps and seeds; rescued: share of all-wrong groups in which at least one rollout was "
        "replaced by a correct re-sampled one (n/a: the cell never re-samples); zero-gradient: "
        "share of groups still all wrong after re-sampling (all advantages zero, the prompt "
        "teaches nothing); replaced: rollouts replaced per step.",
        f"Plots: `{spec.name}_accuracy.png` (mean over seeds, band min..max), "
        f"`{spec.name}_all_wrong.png` (trailing mean over {SMOOTH_STEPS} steps, band min..max "
        f"over seeds; dashed: still all wrong after re-sampling), `{spec.name}_final.png` (mean "
        f"and 95% interval, dots: seeds), `{spec.name}_levels.png` (final accuracy per number of "
        "operations, mean over seeds; only for tasks with levels).",
    ]
    if missing:
        notes.append(f"Not finished ({len(missing)}): {', '.join(missing)}.")
    return notes


def summary_json(spec: GridSpec, cells: list[CellResult], base: BaseResult | None) -> str:
    """The report's numbers, machine-readable."""
    out: dict[str, Any] = {
        "grid": spec.name,
        "recipe": spec.recipe,
        "eval": asdict(spec.eval),
        "base": asdict(base) if base else None,
        "cells": {},
    }
    for c in cells:
        stats = training_stats(c.runs)
        out["cells"][c.name] = {
            "overrides": c.spec.overrides,
            "seeds_planned": c.planned,
            "final_accuracy": c.mean,
            "interval": c.interval,
            "interval_kind": c.interval_kind,
            "per_seed": {str(r.seed): {"final": r.final, "curve": r.curve, "levels": r.levels} for r in c.runs},
            "all_wrong_ratio": stats.all_wrong,
            "rescued_share": stats.rescued if c.rescues else None,
            "zero_gradient_share": stats.zero_gradient,
            "replaced_per_step": stats.replaced,
        }
    return json.dumps(out, indent=2) + "\n"


def write_report(spec: GridSpec, jobs: list[Job]) -> Path:
    """Write <results>/<grid>.md, .json, the claims and the plots (accuracy, all-wrong, final, levels,
    training PNGs) from whatever jobs have finished."""
    cells, base = collect(spec, jobs)
    folder = spec.results_dir
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / f"{spec.name}.md"
    atomic_write_text(report, render_report(spec, cells, base, jobs))
    atomic_write_text(folder / f"{spec.name}.json", summary_json(spec, cells, base))
    plot_accuracy(spec, cells, folder / f"{spec.name}_accuracy.png")
    plot_all_wrong(spec, cells, folder / f"{spec.name}_all_wrong.png")
    plot_final(spec, cells, base, folder / f"{spec.name}_final.png")
    plot_levels(spec, cells, base, folder / f"{spec.name}_levels.png")
    plot_training(spec, cells, folder / f"{spec.name}_training.png")
    copy_run_metrics(spec, jobs)
    from harness.ablate.claims import render_claims, write_claims

    claims = write_claims(spec, jobs)
    if claims:
        text = (
            report.read_text() + "\n## Claims (paired per item, seeds pooled; claims.json)\n\n" + render_claims(claims)
        )
        atomic_write_text(report, text)
    return report


RUN_METRICS_SUFFIX = "_runs"
"""<results>/<grid>_runs/<cell>/seed<k>.jsonl: each finished run's per-step metrics (small,
committed: hinted rollouts, etas, gradient shares and rescues per level stay readable)."""


def copy_run_metrics(spec: GridSpec, jobs: list[Job]) -> None:
    """Copy every finished job's metrics.jsonl next to the report, and record the SHA-256 of each
    of its checkpoints' weights (<cell>/seed<k>.sha256: a rerun of the job can be checked
    against it bit for bit); both replaced atomically."""
    from igpo.owned import sha256

    for job in jobs:
        source = job.folder / "metrics.jsonl"
        if not source.is_file():
            continue
        target = spec.results_dir / f"{spec.name}{RUN_METRICS_SUFFIX}" / job.cell / f"seed{job.seed}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, source.read_text(encoding="utf-8"))
        weights = sorted((job.folder / "checkpoints").glob("step-*/*.safetensors"))
        hashes = target.with_suffix(".sha256")
        if _hashed_since(hashes, weights):
            continue  # a finished job's checkpoints do not change: hash gigabytes once, not per report
        lines = [f"{sha256(w)}  {w.relative_to(job.folder)}" for w in weights]
        atomic_write_text(hashes, "".join(line + "\n" for line in lines))


def _hashed_since(hashes: Path, weights: list[Path]) -> bool:
    """Whether `hashes` lists exactly these weight files and was written after each of them."""
    if not hashes.is_file():
        return False
    listed = [line.split("  ", 1)[1] for line in hashes.read_text(encoding="utf-8").splitlines() if "  " in line]
    made = hashes.stat().st_mtime
    names = [str(w.relative_to(w.parents[2])) for w in weights]
    return listed == names and all(w.stat().st_mtime <= made for w in weights)


def plot_training(spec: GridSpec, cells: list[CellResult], path: Path) -> None:
    """Per-step training curves per cell (reward, accuracy, KL, clip ratio, entropy, all-wrong)."""
    from harness.eval.curves import plot_training_curves

    lines = [(c.name, [r.metrics for r in c.runs if r.metrics]) for c in cells]
    plot_training_curves(
        [(name, runs) for name, runs in lines if runs], path, f"{spec.name}: training curves (mean over seeds)"
    )


# ---------------------------------------------------------------------------- plots
def _figure():
    """A figure on an Agg canvas of its own (pyplot's global state is left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIG_SIZE)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _color(index: int) -> str:
    return f"C{index % 10}"


def _band(
    ax, x: list[int], per_seed: list[list[float]], color: str, label: str, linestyle: str = "-", band: bool = True
) -> None:
    """Mean line over seeds with a min..max band (no band for one seed)."""
    columns = list(zip(*per_seed, strict=True))
    mean = [_mean(col) for col in columns]
    ax.plot(
        x,
        [math.nan if m is None else PERCENT * m for m in mean],
        marker="o",
        markersize=3,
        color=color,
        label=label,
        linestyle=linestyle,
    )
    if band and len(per_seed) > 1:
        lo = [
            PERCENT * min(v for v in col if math.isfinite(v)) if any(map(math.isfinite, col)) else math.nan
            for col in columns
        ]
        hi = [
            PERCENT * max(v for v in col if math.isfinite(v)) if any(map(math.isfinite, col)) else math.nan
            for col in columns
        ]
        ax.fill_between(x, lo, hi, color=color, alpha=BAND_ALPHA, linewidth=0)


def _seeds(n: int) -> str:
    return f"{n} seed{'' if n == 1 else 's'}"


def _finish(ax, title: str, xlabel: str, ylabel: str, legend: bool, top: float = 0.0) -> None:
    """Titles, a y axis from 0 (at least up to `top`), integer steps, legend beside the axes."""
    from matplotlib.ticker import MaxNLocator

    ax.set_ylim(0.0, max(ax.get_ylim()[1], top))
    if xlabel == STEP_LABEL:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=BAND_ALPHA)
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=LEGEND_ANCHOR, fontsize="small")


def plot_accuracy(spec: GridSpec, cells: list[CellResult], path: Path) -> None:
    """Accuracy vs training step per cell: mean over seeds, band min..max over seeds."""
    fig, ax = _figure()
    for i, c in enumerate(cells):
        if not c.runs:
            continue
        steps = sorted({s for r in c.runs for s in r.curve})
        per_seed = [[r.curve.get(s, math.nan) for s in steps] for r in c.runs]
        _band(ax, steps, per_seed, _color(i), f"{c.name} ({_seeds(len(c.runs))})")
    _finish(
        ax,
        f"{spec.name}: accuracy vs step (mean over seeds, band min..max)",
        STEP_LABEL,
        "accuracy (%)",
        any(c.runs for c in cells),
        top=MIN_ACCURACY_TOP,
    )
    fig.tight_layout()
    save_png(fig, path, FIG_DPI)


def _smooth(values: list[float], window: int) -> list[float]:
    from harness.eval.curves import trailing_mean

    return trailing_mean(values, window)


def plot_all_wrong(spec: GridSpec, cells: list[CellResult], path: Path) -> None:
    """All-wrong group ratio vs step per cell (trailing mean), band min..max over seeds; dashed:
    the share still all wrong after re-sampling (cells that re-sample)."""
    fig, ax = _figure()
    for i, c in enumerate(cells):
        runs = [r for r in c.runs if r.metrics]
        if not runs:
            continue
        steps = sorted({int(row["step"]) for r in runs for row in r.metrics})

        def curve(value, runs=runs, steps=steps) -> list[list[float]]:
            by_seed = [{int(row["step"]): value(row) for row in r.metrics} for r in runs]
            return [_smooth([b.get(s, math.nan) for s in steps], SMOOTH_STEPS) for b in by_seed]

        _band(
            ax,
            steps,
            curve(lambda row: float(row.get("all_wrong_ratio", math.nan))),
            _color(i),
            f"{c.name} ({_seeds(len(runs))})",
        )
        if c.rescues:
            after = curve(still_wrong_ratio)
            _band(ax, steps, after, _color(i), f"{c.name}: after re-sampling", linestyle="--", band=False)
    _finish(
        ax,
        f"{spec.name}: all-wrong groups (trailing mean of {SMOOTH_STEPS} steps)",
        STEP_LABEL,
        "all-wrong groups (%)",
        any(c.runs for c in cells),
        top=PERCENT * 1.05,
    )
    fig.tight_layout()
    save_png(fig, path, FIG_DPI)


def plot_final(spec: GridSpec, cells: list[CellResult], base: BaseResult | None, path: Path) -> None:
    """Final accuracy per cell: mean with its 95% interval, each seed a dot, base dashed."""
    fig, ax = _figure()
    shown = [c for c in cells if c.mean is not None]
    for x, c in enumerate(shown):
        color = _color(cells.index(c))
        mean = PERCENT * c.mean
        if c.interval is not None:
            err = [[max(0.0, mean - PERCENT * c.interval[0])], [max(0.0, PERCENT * c.interval[1] - mean)]]
            ax.errorbar([x], [mean], yerr=err, fmt="o", color=color, capsize=6)
        else:
            ax.plot([x], [mean], "o", color=color)
        ax.scatter(
            [x + SEED_DOT_OFFSET] * len(c.runs),
            [PERCENT * r.final for r in c.runs],
            s=SEED_DOT_SIZE,
            color=color,
            alpha=SEED_DOT_ALPHA,
            zorder=3,
        )
    if base is not None:
        ax.axhline(
            PERCENT * base.accuracy, color="grey", linestyle="--", label=f"base (step 0): {_pct(base.accuracy)}%"
        )
    ax.set_xticks(range(len(shown)), [c.name for c in shown], rotation=30, ha="right")
    ax.set_xlim(-0.5, max(1, len(shown)) - 0.5)
    _finish(
        ax,
        f"{spec.name}: final accuracy (mean, 95% interval; dots: seeds)",
        "cell",
        "accuracy (%)",
        base is not None,
        top=MIN_ACCURACY_TOP,
    )
    fig.tight_layout()
    save_png(fig, path, FIG_DPI)


def plot_levels(spec: GridSpec, cells: list[CellResult], base: BaseResult | None, path: Path) -> None:
    """Final accuracy per arith level (operations), one bar per cell, mean over seeds; the base
    model first. Nothing is written when no run has per-level numbers."""
    series = [("base (step 0)", base.levels)] if base is not None and base.levels else []
    for c in cells:
        levels = sorted({lv for r in c.runs for lv in r.levels})
        if levels:
            series.append((c.name, {lv: _mean(r.levels.get(lv, math.nan) for r in c.runs) for lv in levels}))
    levels = sorted({lv for _, by_level in series for lv in by_level})
    if not levels:
        return
    fig, ax = _figure()
    width = 0.8 / len(series)
    for i, (name, by_level) in enumerate(series):
        xs = [k + (i - (len(series) - 1) / 2) * width for k in range(len(levels))]
        ys = [PERCENT * (by_level.get(lv) or 0.0) for lv in levels]
        ax.bar(xs, ys, width, label=name, color="grey" if name.startswith("base") else _color(i - bool(base)))
    ax.set_xticks(range(len(levels)), [str(lv) for lv in levels])
    _finish(
        ax,
        f"{spec.name}: final accuracy per level (mean over seeds)",
        "operations",
        "accuracy (%)",
        True,
        top=MIN_ACCURACY_TOP,
    )
    fig.tight_layout()
    save_png(fig, path, FIG_DPI)
