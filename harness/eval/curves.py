"""Training curves from metrics.jsonl rows: one panel per quantity that says whether RL works.

Shared by `igpo eval --run` (one run, with held-out accuracy per level at each evaluated
checkpoint), the ablation report (a line per cell, mean over its seeds) and `igpo report`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from igpo.atomic import save_png

TRAINING_CURVES = (
    ("reward", "training reward"),
    ("accuracy", "training accuracy"),
    ("kl", "KL to base"),
    ("clip_ratio", "clip ratio"),
    ("entropy", "entropy (loss tokens)"),
    ("all_wrong_ratio", "all-wrong groups"),
    ("rescued_ratio", "all-wrong groups rescued by hints"),
    ("hint_token_fraction", "hint tokens in the loss (share)"),
)
"""metrics.jsonl keys drawn per step, with their panel titles."""
SMOOTH_STEPS = 5
"""Trailing-mean window over training steps."""
PANEL_SIZE = (4.2, 3.2)
FIG_DPI = 120


def metrics_rows(folder: Path) -> list[dict[str, Any]]:
    """A training run's metrics.jsonl rows ([] without one); a torn last line (a crash
    mid-write) is left out, a damaged line elsewhere raises. A value the trainer could not
    measure is written as null (no NaN in JSON files) and read back here as NaN."""
    from igpo.training.run_folder import METRICS_FILE

    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return []
    from igpo.jsonfile import read_log

    rows = []
    for _, obj in read_log(path, "metrics line"):
        row = {k: _number(v) for k, v in obj.items()}
        if isinstance(row.get("step"), float) and math.isfinite(row["step"]):
            rows.append(row)  # a line without a step cannot be placed on a curve
    return rows


def _number(value: Any) -> float:
    """A metric as a float: null (not measured), a string or anything else that is not a number
    reads as NaN (left out of means and curves)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def trailing_mean(values: list[float], window: int = SMOOTH_STEPS) -> list[float]:
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i + 1 - window) : i + 1] if math.isfinite(v)]
        out.append(sum(part) / len(part) if part else math.nan)
    return out


def mean_curve(runs: list[list[dict[str, Any]]], key: str) -> tuple[list[int], list[float]]:
    """Steps and the mean over runs of one metric (NaN where no run has it)."""
    steps = sorted({int(row["step"]) for rows in runs for row in rows})
    by_run = [{int(row["step"]): float(row.get(key, math.nan)) for row in rows} for rows in runs]
    means = []
    for st in steps:
        vals = [b[st] for b in by_run if st in b and math.isfinite(b[st])]
        means.append(sum(vals) / len(vals) if vals else math.nan)
    return steps, means


def plot_training_curves(
    lines: list[tuple[str, list[list[dict[str, Any]]]]],
    path: Path | None,
    title: str,
    levels: dict[str, dict[int, dict[int, float]]] | None = None,
) -> str | None:
    """A grid of panels (TRAINING_CURVES, trailing mean); `levels` (label -> level -> step ->
    accuracy) adds a panel of held-out accuracy per level at each checkpoint. PNG to `path`, or
    SVG text returned when `path` is None."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = len(TRAINING_CURVES) + (1 if levels else 0)
    cols = 3
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (key, name) in zip(axes, TRAINING_CURVES, strict=False):
        for i, (label, runs) in enumerate(lines):
            steps, means = mean_curve(runs, key)
            ax.plot(steps, trailing_mean(means), color=f"C{i % 10}", label=label, linewidth=1)
        ax.set_title(name, fontsize="small")
        ax.set_xlabel("training step", fontsize="small")
        ax.grid(True, alpha=0.18)
    if lines:
        axes[0].legend(fontsize="x-small")
    if levels:
        ax = axes[len(TRAINING_CURVES)]
        for label, by_level in levels.items():
            for j, (level, curve) in enumerate(sorted(by_level.items())):
                steps = sorted(curve)
                ax.plot(
                    steps,
                    [100 * curve[s] for s in steps],
                    marker="o",
                    markersize=3,
                    color=f"C{j % 10}",
                    label=f"{level} ops" if len(levels) == 1 else f"{label} {level} ops",
                )
        ax.set_title("held-out accuracy by level (%)", fontsize="small")
        ax.set_xlabel("training step", fontsize="small")
        ax.grid(True, alpha=0.18)
        ax.legend(fontsize="x-small", ncol=2)
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.suptitle(f"{title} (trailing mean over {SMOOTH_STEPS} steps)")
    fig.tight_layout()
    return render_figure(fig, path, FIG_DPI)


def render_figure(fig, path: Path | None, dpi: int) -> str | None:
    """Write a figure as PNG to `path` (atomically), or return it as SVG text when path is None
    (for the self-contained HTML report)."""
    if path is not None:
        save_png(fig, path, dpi)
        return None
    import io

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    return buffer.getvalue()


def still_wrong_ratio(row: dict[str, Any], missing: float = math.nan) -> float:
    """One metrics row's share of groups still all wrong after re-sampling (no gradient);
    `missing` when the row has no all-wrong ratio."""
    return float(row.get("all_wrong_ratio", missing)) * (1.0 - float(row.get("rescued_ratio", 0.0)))
