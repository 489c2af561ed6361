"""The paper's claims tested on a finished ablation grid: paired per-item statistics, one verdict each.

Every accuracy claim compares two cells on the same held-out items at their final checkpoint.
The difference is mean over items of (cell A's seed-averaged correctness - cell B's). Its 95%
interval and p-value come from a two-level (hierarchical) bootstrap: each resample draws the
training seeds of each cell with replacement, then the items with replacement (the same items
for both cells: the pairing), so seed-to-seed training noise and item noise both count.
p = two-sided share of resampled differences on the far side of zero. The item-only paired
bootstrap p of `igpo check` (training runs held fixed) is reported beside it as `p_items`.
Training-statistic claims (all-wrong groups) compare per-seed run means with Welch's t-test.
Verdict: `reproduced` when p < ALPHA in the claimed direction, `not reproduced` when p < ALPHA
against it, else `inconclusive`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.ablate.grid import STEP_DIR, GridSpec, Job
from harness.eval.results import SAMPLES_FILE, atomic_write_text

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CLAIMS_FILE = "claims.json"
BASE = "base"
"""Pseudo-cell name of the start model (step 0 of every series)."""


@dataclass
class ClaimSpec:
    """One comparison: `better` is claimed above `worse` (or, for `lower_is_better`, below)."""

    name: str
    claim: str
    better: str
    worse: str
    metric: str = "accuracy"
    """accuracy (final held-out, paired per item) or zero_gradient_share (training, per seed)."""


PAPER_CLAIMS = (
    ClaimSpec("grpo_above_base", "GRPO (trajectory log-probs) improves the start model", "grpo", BASE),
    ClaimSpec("igpo_above_base", "IGPO (trajectory log-probs) improves the start model", "igpo", BASE),
    ClaimSpec("igpo_vs_grpo", "IGPO ends above GRPO (paper Table 1)", "igpo", "grpo"),
    ClaimSpec(
        "all_wrong_cut",
        "IGPO leaves fewer all-wrong (zero-gradient) groups than GRPO (paper Fig. 1b)",
        "igpo",
        "grpo",
        metric="zero_gradient_share",
    ),
    ClaimSpec(
        "partial_vs_full_hints", "partial hints (eta ~ U[0.2, 0.6]) beat full hints (eta = 1)", "igpo", "full_hints"
    ),
    ClaimSpec(
        "full_hints_vs_none", "full hints beat no hints (sample-matched re-sampling)", "full_hints", "sample_matched"
    ),
    ClaimSpec(
        "tau_0.2_vs_1.0",
        "the entropy filter tau 0.2 beats tau 1.0 (no filter; paper: 1.0 unstable)",
        "igpo",
        "igpo_no_entropy_filter",
    ),
    ClaimSpec(
        "trajectory_vs_mean_field_grpo",
        "GRPO: trajectory log-probs beat mean-field (this project's diagnosis)",
        "grpo",
        "grpo_mean_field",
    ),
    ClaimSpec("trajectory_vs_mean_field_igpo", "IGPO: trajectory log-probs beat mean-field", "igpo", "igpo_mean_field"),
    ClaimSpec("lambda_0.5_vs_0.25", "lambda 0.5 (released) vs 0.25", "igpo", "lambda_0.25"),
    ClaimSpec("lambda_0.5_vs_1.0", "lambda 0.5 (released) vs 1.0", "igpo", "lambda_1.0"),
    ClaimSpec(
        "grpo_exact_vs_fast", "GRPO: fast rollouts (dual cache + threshold 0.9) cost accuracy", "grpo", "grpo_fast"
    ),
    ClaimSpec(
        "igpo_exact_vs_fast", "IGPO: fast rollouts (dual cache + threshold 0.9) cost accuracy", "igpo", "igpo_fast"
    ),
)

RELEASED_CLAIMS = (
    ClaimSpec("released_grpo_above_base", "GRPO (released loss path) improves the start model", "grpo", BASE),
    ClaimSpec("igpo_released_above_base", "IGPO as released improves the start model", "igpo_released", BASE),
    ClaimSpec("igpo_released_vs_grpo", "IGPO as released ends above GRPO (paper Table 1)", "igpo_released", "grpo"),
    ClaimSpec("igpo_paper_vs_grpo", "IGPO as the paper reads ends above GRPO", "igpo_paper", "grpo"),
    ClaimSpec(
        "released_vs_paper_reading",
        "the released hint and loss semantics beat the paper's reading",
        "igpo_released",
        "igpo_paper",
    ),
    ClaimSpec(
        "released_all_wrong_cut",
        "IGPO as released leaves fewer all-wrong (zero-gradient) groups than GRPO (paper Fig. 1b)",
        "igpo_released",
        "grpo",
        metric="zero_gradient_share",
    ),
    ClaimSpec(
        "released_hints_vs_none",
        "hints beat sample-matched re-sampling without them",
        "igpo_released",
        "sample_matched",
    ),
    ClaimSpec(
        "released_partial_vs_full", "partial hints (eta ~ U[0.2, 0.6]) beat full hints", "igpo_released", "full_hints"
    ),
    ClaimSpec("released_tau_0.2_vs_1.0", "the entropy filter tau 0.2 beats tau 1.0", "igpo_released", "no_filter"),
    ClaimSpec(
        "stretch_costs",
        "follow-up: hints at their trace positions beat the released gap stretch",
        "no_spread",
        "igpo_released",
    ),
    ClaimSpec(
        "no_spread_vs_grpo", "follow-up: IGPO as released without the stretch ends above GRPO", "no_spread", "grpo"
    ),
)
"""The released grid's claims (harness/ablate/grids/released.yaml)."""

CLAIMS_BY_GRID = {"released": RELEASED_CLAIMS}
"""A grid's own claims; any other grid is tested on PAPER_CLAIMS. A claim applies when the grid
has both its cells."""


@dataclass
class ClaimResult:
    name: str
    claim: str
    cells: list[str]
    metric: str
    seeds: dict[str, int]
    value_points: dict[str, float]
    difference_points: float
    ci95_points: list[float]
    p_value: float
    test: str
    verdict: str
    p_items: float | None = None
    """Item-only paired bootstrap p (the training runs held fixed); accuracy claims only."""
    by_level_points: dict[str, float] = field(default_factory=dict)
    """accuracy claims: difference per level (number of operations), in points."""


def _final_step(job: Job) -> Path | None:
    steps = sorted(p for p in job.series.glob("step-*") if p.name[5:].isdigit() and (p / SAMPLES_FILE).is_file())
    return steps[-1] if steps else None


def _correct_by_item(folder: Path) -> dict[Any, float]:
    """(task, doc_id) -> mean correctness over the item's samples, read and validated as
    `igpo check` reads them."""
    from harness.check import item_table
    from harness.eval.results import load_samples

    rows = load_samples(folder)
    table = item_table(rows, {row.task for row in rows})
    return {(task, doc): item.total / item.count for task, items in table.items() for doc, item in items.items()}


def _levels() -> dict[Any, int]:
    """(task, doc_id) -> number of operations of the arith task's items."""
    from tasks.arith_utils import test_docs
    from tasks.registry import TASKS

    return {(TASKS["arith"], i): int(doc["steps"]) for i, doc in enumerate(test_docs())}


def cell_items(jobs: list[Job], cell: str) -> tuple[list[dict[Any, float]], int]:
    """Per-seed item correctness at each finished job's final step (BASE: the start model)."""
    if cell == BASE:
        for job in jobs:
            step0 = job.series / STEP_DIR.format(0)
            if job.done_file.is_file() and (step0 / SAMPLES_FILE).is_file():
                return [_correct_by_item(step0)], 1
        return [], 0
    runs = []
    for job in jobs:
        if job.cell == cell and job.done_file.is_file() and (final := _final_step(job)) is not None:
            runs.append(_correct_by_item(final))
    return runs, len(runs)


def _verdict(diff: float, p: float, lower_is_better: bool = False) -> str:
    if p >= ALPHA:
        return "inconclusive"
    good = diff < 0 if lower_is_better else diff > 0
    return "reproduced" if good else "not reproduced"


def _matrix(runs: list[dict[Any, float]], docs: list[Any]) -> np.ndarray:
    return np.array([[r[d] for d in docs] for r in runs], dtype=float)


def hierarchical_bootstrap(
    a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[list[float], float]:
    """95% interval and two-sided p of mean(a) - mean(b) for [seeds, items] correctness matrices
    paired by item: seeds resampled within each cell, then items (shared by both cells)."""
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    draws = np.empty(resamples)
    for r in range(resamples):
        items = rng.integers(0, n, n)
        ma = a[rng.integers(0, a.shape[0], a.shape[0])].mean(axis=0)
        mb = b[rng.integers(0, b.shape[0], b.shape[0])].mean(axis=0)
        draws[r] = (ma - mb)[items].mean()
    below, above = np.count_nonzero(draws <= 0), np.count_nonzero(draws >= 0)
    p = min(1.0, 2 * (1 + min(below, above)) / (resamples + 1))
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))], p


def paired_accuracy(
    a_runs: list[dict[Any, float]], b_runs: list[dict[Any, float]]
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Correctness matrices [seeds, items] of both cells over the items they all cover."""
    from harness.check import CheckError

    docs = sorted(set.intersection(*(set(r) for r in a_runs + b_runs)))
    if not docs:
        raise CheckError("the cells share no evaluated items")
    return _matrix(a_runs, docs), _matrix(b_runs, docs), docs


def accuracy_claim(spec: ClaimSpec, jobs: list[Job], levels: dict[Any, int] | None = None) -> ClaimResult | None:
    """`levels` (doc_id -> level) adds the difference per level (the arith task's operations)."""
    from harness.check.stats import paired_bootstrap_p

    a_runs, na = cell_items(jobs, spec.better)
    b_runs, nb = cell_items(jobs, spec.worse)
    if not na or not nb:
        return None
    a, b, docs = paired_accuracy(a_runs, b_runs)
    d = a.mean(axis=0) - b.mean(axis=0)
    diff = float(d.mean())
    interval, p = hierarchical_bootstrap(a, b)
    by_level: dict[str, float] = {}
    for level in sorted({levels[doc] for doc in docs if doc in levels}) if levels else []:
        mask = np.array([levels.get(doc) == level for doc in docs])
        by_level[str(level)] = round(100 * float(d[mask].mean()), 2)
    values = {spec.better: round(100 * float(a.mean()), 2), spec.worse: round(100 * float(b.mean()), 2)}
    return ClaimResult(
        spec.name,
        spec.claim,
        [spec.better, spec.worse],
        spec.metric,
        {spec.better: na, spec.worse: nb},
        values,
        round(100 * diff, 2),
        [round(100 * x, 2) for x in interval],
        p,
        f"hierarchical bootstrap: {na} + {nb} seeds, {len(docs)} items paired",
        _verdict(diff, p),
        p_items=paired_bootstrap_p(d),
        by_level_points=by_level,
    )


def _zero_gradient_shares(jobs: list[Job], cell: str) -> list[float]:
    from harness.eval.curves import metrics_rows, still_wrong_ratio

    shares = []
    for job in jobs:
        if job.cell == cell and job.done_file.is_file():
            rows = metrics_rows(job.folder)
            values = [v for v in (still_wrong_ratio(r) for r in rows) if math.isfinite(v)]
            if values:
                shares.append(sum(values) / len(values))
    return shares


def share_claim(spec: ClaimSpec, jobs: list[Job]) -> ClaimResult | None:
    from scipy import stats

    a, b = _zero_gradient_shares(jobs, spec.better), _zero_gradient_shares(jobs, spec.worse)
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return None  # a t-test needs two seeds per cell and some spread
    diff = float(np.mean(a) - np.mean(b))
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / ((va**2 / (len(a) - 1)) + (vb**2 / (len(b) - 1))) if se > 0 else len(a) + len(b) - 2
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    half = float(stats.t.ppf(0.975, dof)) * se
    return ClaimResult(
        spec.name,
        spec.claim,
        [spec.better, spec.worse],
        spec.metric,
        {spec.better: len(a), spec.worse: len(b)},
        {spec.better: round(100 * float(np.mean(a)), 2), spec.worse: round(100 * float(np.mean(b)), 2)},
        round(100 * diff, 2),
        [round(100 * (diff - half), 2), round(100 * (diff + half), 2)],
        p,
        "Welch t-test over seeds (per-run mean share of groups left all wrong)",
        _verdict(diff, p, lower_is_better=True),
    )


def evaluate_claims(spec: GridSpec, jobs: list[Job], claims=None) -> list[ClaimResult]:
    """Every claim (default: the grid's own) whose two cells have finished runs in this grid."""
    claims = CLAIMS_BY_GRID.get(spec.name, PAPER_CLAIMS) if claims is None else claims
    levels = _levels() if list(spec.eval.tasks) == ["arith"] else None
    out = []
    for claim in claims:
        if claim.better not in (*spec.cells, BASE) or claim.worse not in (*spec.cells, BASE):
            continue
        result = (
            share_claim(claim, jobs) if claim.metric == "zero_gradient_share" else accuracy_claim(claim, jobs, levels)
        )
        if result is not None:
            out.append(result)
    return out


def render_claims(results: list[ClaimResult]) -> str:
    """Markdown table of the verdicts (the README's table is this text)."""
    from tabulate import tabulate

    rows = []
    for r in results:
        a, b = r.cells
        unit = "pts" if r.metric == "accuracy" else "pts of groups"
        rows.append(
            [
                r.claim,
                f"{a} ({r.seeds[a]}) vs {b} ({r.seeds[b]})",
                f"{r.value_points[a]:.1f} vs {r.value_points[b]:.1f}",
                f"{r.difference_points:+.1f} {unit} [{r.ci95_points[0]:+.1f}, {r.ci95_points[1]:+.1f}]",
                f"{r.p_value:.3g}",
                "-" if r.p_items is None else f"{r.p_items:.3g}",
                r.verdict,
            ]
        )
    return (
        tabulate(
            rows,
            headers=["claim", "cells (seeds)", "value", "difference [95% CI]", "p", "p (items only)", "verdict"],
            tablefmt="github",
        )
        + "\n"
    )


def write_claims(spec: GridSpec, jobs: list[Job]) -> list[ClaimResult]:
    """claims.json (+ claims.md) next to the grid's report; the results ([]: no claim has its
    cells, nothing written)."""
    results = evaluate_claims(spec, jobs)
    if not results:
        return results
    folder = spec.results_dir
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"grid": spec.name, "alpha": ALPHA, "claims": [asdict(r) for r in results]}
    path = folder / CLAIMS_FILE
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    atomic_write_text(path.with_suffix(".md"), render_claims(results))
    return results
