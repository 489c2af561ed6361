"""`igpo check`: is a candidate model worse than a baseline run? A paired regression test for CI.

The candidate is either an existing run (a folder with results.json) or a model / adapter, which
is then evaluated here with the baseline's own protocol, seeds, limit and decoding settings. Both
runs are paired item by item and each task gets a verdict.

Pairing. Samples are grouped by (task key, doc_id); an item's score is its mean correctness over
all its seeds x repeats, so the k samples of one problem form one cluster. Items present in only
one run are an error (equal settings and data hash give equal item sets, so a difference means a
partial or foreign run); with --allow-mismatch they are dropped and the report says how many.

Statistics, per task with n paired items, d_i = candidate_i - baseline_i:
- difference D = mean(d); standard error SE = sqrt(sum (d_i - D)^2 / (n (n - 1))), the
  item-clustered SE (for one sample per item it is the usual paired-proportion SE); the interval
  is D +- z_{1-alpha/2} SE (Wald; 95% at the default alpha). `naive_se` (JSON only) treats the
  n x k sample pairs as independent, to show what clustering changes.
- p-value: one sample per item on both sides -> exact McNemar, the two-sided binomial test of the
  discordant pairs: p = min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c, 1/2), b = right->wrong
  (losses), c = wrong->right (wins), computed with exact integers. Several samples per item ->
  paired cluster bootstrap: items resampled with replacement (B = 10,000, seeded per task), the
  null imposed by centring, p = (1 + #{|mean(d* - D)| >= |D|}) / (B + 1).
- minimum detectable drop at 80% power (normal approximation):
  MDD = max(z sqrt(m2 / n), z^2 g / n), z = z_{1-alpha/2} + z_{0.80}, m2 = mean(d_i^2) (the
  discordance rate (b + c) / n for one sample per item: the variance of d under "no change"),
  g = 1 / samples per item (the smallest possible |d_i|). The second term is the floor reached
  when all observed disagreement would be the drop itself (m2 >= g |D| always holds), so two
  identical runs still report a finite MDD (z^2 / n for pass@1). `predicted_power` inverts it.
- verdict: "regression" when p < alpha and D < 0; otherwise "pass" when the interval's lower end
  is >= -max_drop (a drop larger than --max-drop points is ruled out at this level); otherwise
  "inconclusive-under-max-drop" (no significant drop, but one larger than max_drop is not ruled
  out: the task is too small or too noisy). Exit code: 1 if any task regressed, else 0; 2 on bad
  input (see harness.errors).

Comparability. Runs whose protocol (name, file hash), or any compared task's decoding settings,
version, data hash, repeats, seeds or limit differ are refused with the differing fields named,
e.g. `igpo_gsm8k.decoding.steps: 256 != 128` (baseline != candidate), unless --allow-mismatch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from harness.errors import UserError
from harness.results import (
    RESULTS_FILE,
    SAMPLES_FILE,
    ResultsError,
    load_results,
    load_samples,
    results_path,
)
from igpo.atomic import atomic_write_bytes, atomic_write_text
from igpo.errors import InvalidSetting, MissingInput

DEFAULT_ALPHA = 0.05
DEFAULT_MAX_DROP_POINTS = 1.0
"""Largest drop (percentage points) a task may be unable to rule out and still pass."""
TARGET_POWER = 0.80
"""Power at which the minimum detectable drop is reported."""
BOOTSTRAP_RESAMPLES = 10_000
"""Monte-Carlo SE of a bootstrap p near 0.05 is about 0.002 with this many resamples."""
BOOTSTRAP_SEED = 0
BOOTSTRAP_CHUNK = 500
"""Resamples drawn together when resampling item indices (bounds memory at chunk x n)."""
MAX_VALUE_CATEGORIES = 256
"""Up to this many distinct d_i values the bootstrap draws multinomial counts per value (exactly
equivalent to resampling items, and much faster); beyond it, item indices are resampled."""
DEFAULT_CHECK_OUT = Path("runs/check")
POINTS = 100.0
"""Fractions -> percentage points."""
HASH_SHOWN = 23
"""Characters of a long value (a hash) shown in a mismatch message."""
FLOAT_SLACK = 1e-12
"""Rounding allowance when comparing float sums (equal values must compare as equal)."""

PASS = "pass"
REGRESSION = "regression"
INCONCLUSIVE = "inconclusive-under-max-drop"
EXIT_PASS = 0
EXIT_REGRESSION = 1
MCNEMAR = "exact-mcnemar"
BOOTSTRAP = "paired-cluster-bootstrap"
CHECK_FORMAT = "igpo-check"
ADAPTER_CONFIG = "adapter_config.json"
CHECKPOINT_MARKER = "igpo_checkpoint.json"
"""Written by igpo.training.runtime into each checkpoint (kind: adapter | full, base_model)."""
TASK_FIELDS = ("version", "repeats", "seeds", "limit")
"""Per-task record fields that must agree (besides decoding.* and data.hash)."""

_NORMAL = NormalDist()


class CheckError(UserError):
    """Runs that cannot be compared (different settings or items); printed as one line."""


# --------------------------------------------------------------------------- statistics


def mcnemar_exact_p(losses: int, wins: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of the discordant pairs against 1/2."""
    m = losses + wins
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(losses, wins) + 1))
    return min(1.0, 2 * tail / 2**m)  # exact integers; int / int rounds once


def paired_bootstrap_p(
    d: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int | Sequence[int] = BOOTSTRAP_SEED
) -> float:
    """Two-sided p-value of mean(d) = 0 by resampling items (clusters) with the null imposed.

    Resampling n items with replacement gives each distinct value of d a multinomial count, so
    with few distinct values (avg@k differences are multiples of 1/k) the counts are drawn
    directly: the same distribution as index resampling at a fraction of the cost.
    """
    n = len(d)
    if n == 0:
        return 1.0
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    values, counts = np.unique(d, return_counts=True)
    centred = values - observed
    if len(values) <= MAX_VALUE_CATEGORIES:
        draws = rng.multinomial(n, counts / n, size=resamples)
        means = draws @ centred / n
    else:
        shifted = d - observed
        means = np.concatenate(
            [
                shifted[rng.integers(0, n, size=(min(BOOTSTRAP_CHUNK, resamples - start), n))].mean(
                    axis=1
                )
                for start in range(0, resamples, BOOTSTRAP_CHUNK)
            ]
        )
    extreme = np.count_nonzero(np.abs(means) >= abs(observed) - FLOAT_SLACK)
    return float((1 + extreme) / (resamples + 1))


def _z_sum(alpha: float, power: float) -> float:
    return _NORMAL.inv_cdf(1 - alpha / 2) + _NORMAL.inv_cdf(power)


def min_detectable_drop(
    n: int,
    second_moment: float,
    granularity: float = 1.0,
    alpha: float = DEFAULT_ALPHA,
    power: float = TARGET_POWER,
) -> float:
    """Smallest true drop (fraction) detected with `power`: max(z sqrt(m2/n), z^2 g/n).

    Normal approximation of the paired test with the null variance m2 = mean(d^2) (McNemar's
    discordance rate for one sample per item); since m2 >= g |drop|, a drop too small to
    produce z^2 discordant items' worth of disagreement is never detectable (the floor).
    """
    if n <= 0:
        return math.inf
    z = _z_sum(alpha, power)
    return max(z * math.sqrt(max(second_moment, 0.0) / n), z * z * granularity / n)


def predicted_power(
    drop: float,
    n: int,
    second_moment: float,
    granularity: float = 1.0,
    alpha: float = DEFAULT_ALPHA,
) -> float:
    """Probability that a true drop `drop` (> 0, fraction) is flagged: the MDD formula inverted,
    Phi(drop sqrt(n / max(m2, g drop)) - z_{1-alpha/2})."""
    if drop <= 0 or n <= 0:
        return 0.0
    variance = max(second_moment, granularity * drop)
    return _NORMAL.cdf(drop * math.sqrt(n / variance) - _NORMAL.inv_cdf(1 - alpha / 2))


# --------------------------------------------------------------------------- pairing


@dataclass
class PairedTask:
    """One task's items present in both runs, in a common order."""

    key: str
    doc_ids: list[Any]
    baseline: np.ndarray
    """Per-item mean correctness of the baseline (one cluster per item)."""
    candidate: np.ndarray
    samples_per_item: int
    """Largest number of samples of an item in either run (1: pass@1 with one seed)."""
    sample_diffs: np.ndarray | None = None
    """Per-sample differences paired by (seed, repeat); None when they do not pair up."""
    notes: list[str] = field(default_factory=list)


@dataclass
class _Item:
    total: float = 0.0
    count: int = 0
    by_sample: dict[tuple[Any, Any], float] = field(default_factory=dict)


def item_table(
    rows: Iterable[dict[str, Any]], keys: set[str], where: str
) -> dict[str, dict[Any, _Item]]:
    """(task key -> doc_id -> item) for the wanted task keys; malformed rows raise ResultsError."""
    table: dict[str, dict[Any, _Item]] = {k: {} for k in keys}
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ResultsError(f"{where}: sample {n} is not a JSON object")
        key = row.get("task")
        if key not in table:
            continue
        try:
            doc, correct = row["doc_id"], float(row["correct"])
        except (KeyError, TypeError, ValueError):
            raise ResultsError(
                f"{where}: sample {n} lacks a doc_id or a boolean 'correct'"
            ) from None
        item = table[key].setdefault(_hashable(doc), _Item())
        item.total += correct
        item.count += 1
        item.by_sample[(row.get("seed"), row.get("repeat"))] = correct
    return table


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def pair_task(
    key: str, base: dict[Any, _Item], cand: dict[Any, _Item], allow_missing: bool
) -> PairedTask:
    """Pair the items of one task; items in only one run are an error unless `allow_missing`."""
    only_base = [d for d in base if d not in cand]
    only_cand = [d for d in cand if d not in base]
    notes = []
    if only_base or only_cand:
        what = (
            f"{len(only_base)} item(s) only in the baseline, {len(only_cand)} only in the candidate"
        )
        if not allow_missing:
            example = (only_base or only_cand)[0]
            raise CheckError(
                f"{key}: {what} (e.g. doc_id {example!r}); the runs do not cover the same "
                "problems (use --allow-mismatch to compare the common items)"
            )
        notes.append(f"{what}: dropped")
    docs = [d for d in base if d in cand]
    if not docs:
        raise CheckError(f"{key}: no items in common between the runs")
    b_items = [base[d] for d in docs]
    c_items = [cand[d] for d in docs]
    b = np.fromiter((i.total / i.count for i in b_items), float, len(docs))
    c = np.fromiter((i.total / i.count for i in c_items), float, len(docs))
    per_item = max(max(i.count for i in b_items), max(i.count for i in c_items))
    return PairedTask(key, docs, b, c, per_item, _sample_diffs(b_items, c_items), notes)


def _sample_diffs(b_items: list[_Item], c_items: list[_Item]) -> np.ndarray | None:
    diffs: list[float] = []
    for bi, ci in zip(b_items, c_items, strict=True):
        if bi.by_sample.keys() != ci.by_sample.keys() or len(bi.by_sample) != bi.count:
            return None
        diffs.extend(ci.by_sample[s] - v for s, v in bi.by_sample.items())
    return np.asarray(diffs, dtype=float)


# --------------------------------------------------------------------------- comparison


@dataclass
class CheckSettings:
    """How the comparison decides (fractions, not points)."""

    alpha: float = DEFAULT_ALPHA
    max_drop: float = DEFAULT_MAX_DROP_POINTS / POINTS
    power: float = TARGET_POWER
    resamples: int = BOOTSTRAP_RESAMPLES
    seed: int = BOOTSTRAP_SEED
    allow_mismatch: bool = False
    exact: bool = False
    """Any item whose score moved, in either direction, is a regression: for the CI of decoding
    and scoring code, where results must not change until the baseline is regenerated."""
    tasks: list[str] = field(default_factory=list)
    """Task keys or names to compare (empty: every task of the baseline)."""

    def validate(self) -> None:
        if not 0 < self.alpha < 1:  # also refuses nan
            raise InvalidSetting(f"--alpha must be in (0, 1), got {self.alpha}")
        if not math.isfinite(self.max_drop) or self.max_drop < 0:
            raise InvalidSetting(f"--max-drop must be >= 0 points, got {self.max_drop * POINTS}")
        if self.resamples < 1:
            raise InvalidSetting(f"bootstrap resamples must be >= 1, got {self.resamples}")


@dataclass
class TaskComparison:
    """One task's paired comparison (accuracies and differences as fractions)."""

    task: str
    n_items: int
    samples_per_item: int
    test: str
    baseline_accuracy: float
    candidate_accuracy: float
    diff: float
    se: float
    naive_se: float | None
    ci95: tuple[float, float]
    """The (1 - alpha) interval of the difference (95% at the default alpha)."""
    p_value: float
    min_detectable_drop: float
    losses: int
    """Items whose score went down (right -> wrong for one sample per item)."""
    wins: int
    verdict: str
    improved: bool = False
    """Significant difference in the candidate's favour."""
    notes: list[str] = field(default_factory=list)


def compare_task(paired: PairedTask, settings: CheckSettings) -> TaskComparison:
    """The paired test, interval, MDD and verdict of one task (see the module docstring)."""
    d = paired.candidate - paired.baseline
    n = len(d)
    diff = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    losses, wins = int(np.count_nonzero(d < 0)), int(np.count_nonzero(d > 0))
    if paired.samples_per_item == 1:
        test, p = MCNEMAR, mcnemar_exact_p(losses, wins)
    else:
        test = BOOTSTRAP
        p = paired_bootstrap_p(
            d, settings.resamples, [settings.seed, zlib.crc32(paired.key.encode())]
        )
    naive = None
    if paired.sample_diffs is not None and len(paired.sample_diffs) > 1:
        naive = float(paired.sample_diffs.std(ddof=1) / math.sqrt(len(paired.sample_diffs)))
    half = _NORMAL.inv_cdf(1 - settings.alpha / 2) * se
    ci = (diff - half, diff + half)
    mdd = min_detectable_drop(
        n, float(np.mean(d * d)), 1.0 / paired.samples_per_item, settings.alpha, settings.power
    )
    significant = p < settings.alpha
    notes = list(paired.notes)
    if settings.exact and (losses or wins):
        verdict = REGRESSION
        notes.append(f"exact mode: {losses + wins} item(s) changed ({losses} down, {wins} up)")
    elif significant and diff < 0:
        verdict = REGRESSION
    elif ci[0] >= -settings.max_drop - FLOAT_SLACK:
        verdict = PASS
    else:
        verdict = INCONCLUSIVE
    return TaskComparison(
        task=paired.key,
        n_items=n,
        samples_per_item=paired.samples_per_item,
        test=test,
        baseline_accuracy=float(paired.baseline.mean()),
        candidate_accuracy=float(paired.candidate.mean()),
        diff=diff,
        se=se,
        naive_se=naive,
        ci95=ci,
        p_value=p,
        min_detectable_drop=mdd,
        losses=losses,
        wins=wins,
        verdict=verdict,
        improved=significant and diff > 0,
        notes=notes,
    )


def select_tasks(baseline: dict[str, Any], wanted: Sequence[str]) -> list[str]:
    """Baseline task keys to compare: all, or those matching names like gsm8k / igpo_gsm8k@256."""
    keys = list(baseline["tasks"])
    if not wanted:
        return keys
    chosen: list[str] = []
    for name in wanted:
        hits = [
            k
            for k in keys
            if name
            in (k, k.split("@")[0], k.removeprefix("igpo_"), k.split("@")[0].removeprefix("igpo_"))
        ]
        if not hits:
            raise InvalidSetting(f"task {name!r} is not in the baseline (it has: {', '.join(keys)})")
        chosen.extend(k for k in hits if k not in chosen)
    return chosen


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= HASH_SHOWN else text[:HASH_SHOWN] + "..."


def mismatches(
    baseline: dict[str, Any], candidate: dict[str, Any], keys: Iterable[str]
) -> list[str]:
    """`field: baseline != candidate` for every compared setting that differs."""
    out = []
    for name in ("name", "file_hash"):
        b, c = (
            (baseline.get("protocol") or {}).get(name),
            (candidate.get("protocol") or {}).get(name),
        )
        if b != c:
            out.append(f"protocol.{name}: {_shown(b)} != {_shown(c)}")
    for key in keys:
        b_task, c_task = baseline["tasks"][key], candidate["tasks"].get(key)
        if c_task is None:
            continue
        b_dec, c_dec = b_task.get("decoding") or {}, c_task.get("decoding") or {}
        fields_ = [
            (f"decoding.{k}", b_dec.get(k), c_dec.get(k)) for k in sorted(set(b_dec) | set(c_dec))
        ]
        fields_ += [(k, b_task.get(k), c_task.get(k)) for k in TASK_FIELDS]
        fields_.append(
            (
                "data.hash",
                (b_task.get("data") or {}).get("hash"),
                (c_task.get("data") or {}).get("hash"),
            )
        )
        out.extend(f"{key}.{name}: {_shown(b)} != {_shown(c)}" for name, b, c in fields_ if b != c)
    return out


@dataclass
class CheckReport:
    """Everything `igpo check` found; rendered as markdown and JSON."""

    baseline: str
    candidate: str
    baseline_label: str
    candidate_label: str
    settings: CheckSettings
    tasks: list[TaskComparison]
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        verdicts = {t.verdict for t in self.tasks}
        return (
            REGRESSION
            if REGRESSION in verdicts
            else INCONCLUSIVE
            if INCONCLUSIVE in verdicts
            else PASS
        )

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.verdict == REGRESSION else EXIT_PASS

    def to_json(self) -> dict[str, Any]:
        s = self.settings
        return {
            "format": CHECK_FORMAT,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "baseline_label": self.baseline_label,
            "candidate_label": self.candidate_label,
            "alpha": s.alpha,
            "max_drop": s.max_drop,
            "power": s.power,
            "bootstrap_resamples": s.resamples,
            "bootstrap_seed": s.seed,
            "allow_mismatch": s.allow_mismatch,
            "mismatches": self.mismatches,
            "notes": self.notes,
            "tasks": [asdict(t) for t in self.tasks],
        }

    def to_markdown(self) -> str:
        s = self.settings
        level = f"{100 * (1 - s.alpha):g}%"
        lines = [
            f"## igpo check: {self.verdict}",
            "",
            f"baseline `{self.baseline_label}` vs candidate `{self.candidate_label}` "
            f"(alpha {s.alpha:g}, max drop {s.max_drop * POINTS:g} pp, power {s.power:.0%})",
            "",
            f"| task | items | baseline % | candidate % | diff (pp) [{level} CI] | SE (pp) | p "
            f"| min detectable drop (pp) | verdict |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for t in self.tasks:
            items = f"{t.n_items}" + (f" x {t.samples_per_item}" if t.samples_per_item > 1 else "")
            verdict = t.verdict + (" (improved)" if t.improved else "")
            cells = [
                t.task,
                items,
                f"{t.baseline_accuracy * POINTS:.1f}",
                f"{t.candidate_accuracy * POINTS:.1f}",
                f"{t.diff * POINTS:+.2f} [{t.ci95[0] * POINTS:+.2f}, {t.ci95[1] * POINTS:+.2f}]",
                f"{t.se * POINTS:.2f}",
                _p_text(t.p_value),
                _mdd_text(t.min_detectable_drop),
                verdict,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"**Overall: {self.verdict}** - {self.overall_reason()}", ""]
        lines.append(
            f"Tests: one sample per item -> exact McNemar; avg@k -> paired cluster bootstrap "
            f"({s.resamples:,} resamples, items as clusters). Pass = no significant drop and "
            f"the interval's lower end >= -{s.max_drop * POINTS:g} pp."
        )
        for note in self.notes + [f"{t.task}: {n}" for t in self.tasks for n in t.notes]:
            lines.append(f"- note: {note}")
        for m in self.mismatches:
            lines.append(f"- mismatch (allowed): {m}")
        return "\n".join(lines) + "\n"

    def overall_reason(self) -> str:
        bad = [t for t in self.tasks if t.verdict == REGRESSION]
        if bad:
            return "regressed: " + "; ".join(
                f"{t.task} {t.diff * POINTS:+.2f} pp (p {_p_text(t.p_value)})" for t in bad
            )
        unsure = [t for t in self.tasks if t.verdict == INCONCLUSIVE]
        limit = f"-{self.settings.max_drop * POINTS:g} pp"
        if unsure:
            return (
                f"no significant drop, but a drop beyond {limit} is not ruled out for "
                + ", ".join(f"{t.task} (lower end {t.ci95[0] * POINTS:+.2f} pp)" for t in unsure)
            )
        count = len(self.tasks)
        return f"no significant drop; every interval's lower end is >= {limit} ({count} task(s))"


def _mdd_text(mdd: float) -> str:
    """Points, or >100 when no possible drop would be detected at this size."""
    return f"{mdd * POINTS:.2f}" if mdd < 1 else f">{POINTS:g}"


def _p_text(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def _label(record: dict[str, Any], path: str) -> str:
    return str(record.get("label") or (record.get("model") or {}).get("name_or_path") or path)


SAMPLES_TOLERANCE = 1e-9
"""Largest |accuracy from samples - accuracy in results.json| taken as the same number."""


def _check_samples_match(record: dict[str, Any], key: str, items: dict[Any, _Item], where: str) -> None:
    """The samples must reproduce the run's own headline accuracy (an edited or swapped
    samples.jsonl would otherwise be compared in silence)."""
    stated = float(record["tasks"][key]["accuracy"])
    from_samples = sum(i.total / i.count for i in items.values()) / len(items)
    if abs(stated - from_samples) > SAMPLES_TOLERANCE:
        raise ResultsError(
            f"{Path(where).with_name(SAMPLES_FILE)}: its samples of {key} give accuracy "
            f"{100 * from_samples:.2f}% but {Path(where).name} reports {100 * stated:.2f}% "
            "(edited or mismatched files)"
        )


def compare_records(
    baseline: dict[str, Any],
    baseline_rows: Iterable[dict[str, Any]],
    candidate: dict[str, Any],
    candidate_rows: Iterable[dict[str, Any]],
    settings: CheckSettings,
) -> CheckReport:
    """Compare two loaded runs (records + sample rows); raises CheckError when not comparable."""
    settings.validate()
    keys = select_tasks(baseline, settings.tasks)
    notes: list[str] = []
    missing = [k for k in keys if k not in candidate["tasks"]]
    if missing:
        if not settings.allow_mismatch:
            raise CheckError(
                f"the candidate lacks task(s) {', '.join(missing)} "
                "(use --allow-mismatch to compare the others)"
            )
        notes.append(f"not in the candidate, skipped: {', '.join(missing)}")
        keys = [k for k in keys if k not in missing]
    if not keys:
        raise CheckError("no task in common between the runs")
    extra = [k for k in candidate["tasks"] if k not in baseline["tasks"]]
    if extra:
        notes.append(f"candidate tasks not in the baseline, ignored: {', '.join(extra)}")
    diffs = mismatches(baseline, candidate, keys)
    if diffs and not settings.allow_mismatch:
        raise CheckError("runs are not comparable: " + "; ".join(diffs) + " (use --allow-mismatch)")
    b_path, c_path = baseline.get("_path", "baseline"), candidate.get("_path", "candidate")
    b_table = item_table(baseline_rows, set(keys), b_path)
    c_table = item_table(candidate_rows, set(keys), c_path)
    comparisons = []
    for key in keys:
        for table, where, record in ((b_table, b_path, baseline), (c_table, c_path, candidate)):
            if not table[key]:
                raise ResultsError(
                    f"{Path(where).with_name(SAMPLES_FILE)} has no samples of task {key}"
                )
            _check_samples_match(record, key, table[key], where)
        paired = pair_task(key, b_table[key], c_table[key], settings.allow_mismatch)
        comparisons.append(compare_task(paired, settings))
    return CheckReport(
        baseline=b_path,
        candidate=c_path,
        baseline_label=_label(baseline, b_path),
        candidate_label=_label(candidate, c_path),
        settings=settings,
        tasks=comparisons,
        mismatches=diffs,
        notes=notes,
    )


def compare_runs(
    baseline: str | Path, candidate: str | Path, settings: CheckSettings
) -> CheckReport:
    """Load two run folders (or results.json paths) and compare them."""
    b_record, c_record = load_results(baseline), load_results(candidate)
    return compare_records(
        b_record, load_samples(baseline), c_record, load_samples(candidate), settings
    )


# --------------------------------------------------------------------------- candidate model


@dataclass
class CandidateModel:
    """How to evaluate a candidate that is a model rather than a run."""

    out: Path | None = None
    """Run folder for the candidate (default runs/check/<name>)."""
    base_model: str | None = None
    """Base model under an adapter candidate (default: the checkpoint's or the baseline's)."""
    protocol: str | None = None
    """The baseline's protocol YAML when it is not built in (its file hash is checked)."""
    data_dir: Path | None = None
    batch_size: int = 8
    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False


def is_run(candidate: str | Path) -> bool:
    """A run folder (results.json or samples.jsonl inside) or a .json file, not a model."""
    path = Path(candidate)
    if path.is_dir():
        return (path / RESULTS_FILE).exists() or (path / SAMPLES_FILE).exists()
    return path.suffix == ".json"


def looks_like_model(candidate: str) -> bool:
    """An existing folder, a Hub id (owner/name) or a bare name (an embedded model such as
    `testbed`), rather than a local path that does not exist."""
    if Path(candidate).is_dir():
        return True
    return candidate.count("/") <= 1 and not candidate.startswith((".", "/", "~"))


def model_and_adapter(
    candidate: str, baseline: dict[str, Any], base_model: str | None
) -> tuple[str, str | None]:
    """(model, adapter) for a candidate folder or Hub id; adapters sit on a base model."""
    path = Path(candidate)
    marker = path / CHECKPOINT_MARKER
    if marker.is_file():
        info = json.loads(marker.read_text(encoding="utf-8"))
        if info.get("kind") == "adapter":
            return base_model or str(info["base_model"]), candidate
        return candidate, None
    if (path / ADAPTER_CONFIG).is_file():
        base = base_model or (baseline.get("model") or {}).get("name_or_path")
        if not base:
            raise UserError(
                f"{candidate} is an adapter and the baseline names no model: pass --base-model"
            )
        return str(base), candidate
    return candidate, None


def baseline_protocol(baseline: dict[str, Any], allow_mismatch: bool, path: str | None = None):
    """(protocol, reference) of the baseline: the given YAML, else the built-in of that name;
    its file hash must equal the baseline's (a changed protocol file is a mismatch)."""
    from harness.protocols import ProtocolError, load_protocol

    info = baseline.get("protocol") or {}
    ref = path or info.get("name")
    if not ref:
        raise ResultsError(f"{baseline.get('_path', 'the baseline')} names no protocol")
    try:
        protocol = load_protocol(ref)
    except ProtocolError as err:
        raise CheckError(
            f"the baseline's protocol {info.get('name')!r} is not available here "
            f"({err}); pass its YAML with --protocol"
        ) from None
    if protocol.file_hash != info.get("file_hash") and not allow_mismatch:
        raise CheckError(
            f"protocol {ref!r} differs from the baseline's: protocol.file_hash: "
            f"{_shown(info.get('file_hash'))} != {_shown(protocol.file_hash)} (use --allow-mismatch)"
        )
    return protocol, ref


def decoding_overrides(protocol, baseline: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Decoding overrides that make the protocol reproduce the baseline's per-task settings."""
    wanted = {k: baseline["tasks"][k].get("decoding") or {} for k in keys}

    def predicted(proto, key: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        leaf, _, length = key.partition("@")
        variant = dict(proto.variants()).get(f"@{length}" if length else "")
        if variant is None:
            raise CheckError(
                f"the baseline's task {key} is not a variant of protocol {proto.name!r}"
            )
        return proto.for_task(leaf, variant, overrides)[0].to_dict()

    overrides: dict[str, Any] = {}
    for key, target in wanted.items():
        for name, value in target.items():
            if predicted(protocol, key).get(name) != value:
                if name in overrides and overrides[name] != value:
                    raise CheckError(
                        f"the baseline's decoding cannot be reproduced with one override: "
                        f"decoding.{name} is {overrides[name]!r} and {value!r}"
                    )
                overrides[name] = value
    if overrides:  # what `igpo eval` will decode with these overrides (flags win per task)
        bad = [
            f"{k}.decoding.{n}: {_shown(v)} != {_shown(predicted(protocol, k, overrides).get(n))}"
            for k, target in wanted.items()
            for n, v in target.items()
            if predicted(protocol, k, overrides).get(n) != v
        ]
        if bad:
            raise CheckError("the baseline's decoding cannot be reproduced: " + "; ".join(bad))
    return overrides


def baseline_data_dir(baseline: dict[str, Any], keys: Sequence[str]) -> Path | None:
    """The data folder the baseline read (from its local:<path> sources), if it exists here."""
    from tasks.registry import SPECS

    roots = set()
    for key in keys:
        task = baseline["tasks"][key]
        source = str((task.get("data") or {}).get("source") or "")
        spec = SPECS.get(task.get("task", ""))
        rel = getattr(spec, "local_file", None)
        if source.startswith("local:") and rel:
            path = Path(source.removeprefix("local:"))
            if path.as_posix().endswith(rel):
                roots.add(Path(path.as_posix()[: -len(rel)]))
    if len(roots) == 1 and next(iter(roots)).is_dir():
        return next(iter(roots))
    return None


def evaluate_candidate(
    candidate: str,
    baseline: dict[str, Any],
    keys: Sequence[str],
    options: CandidateModel,
    allow_mismatch: bool,
) -> Path:
    """Evaluate a model/adapter with the baseline's protocol, seeds, limit and decoding; the run."""
    from harness.evaluate import EvalRequest, run_eval, slug

    protocol, ref = baseline_protocol(baseline, allow_mismatch, options.protocol)
    overrides = decoding_overrides(protocol, baseline, keys)
    tasks = baseline["tasks"]
    seeds: list[int] = []
    for key in keys:
        seeds.extend(s for s in tasks[key].get("seeds") or [] if s not in seeds)
    limits = {tasks[k].get("limit") for k in keys}
    if len(limits) > 1:
        raise CheckError(
            f"the baseline's tasks use different limits ({sorted(map(str, limits))}); "
            "check them separately with --tasks"
        )
    leaves = list(dict.fromkeys(tasks[k].get("task") or k.split("@")[0] for k in keys))
    model, adapter = model_and_adapter(candidate, baseline, options.base_model)
    out = options.out or DEFAULT_CHECK_OUT / "-".join(
        filter(
            None,
            [slug(Path(model).name), slug(Path(adapter).name) if adapter else None, slug(protocol.name)],
        )
    )
    data_dir = options.data_dir or (
        None if os.environ.get("IGPO_DATA_DIR") else baseline_data_dir(baseline, keys)
    )
    request = EvalRequest(
        model=model,
        adapter=adapter,
        tasks=leaves,
        protocol=ref,
        limit=limits.pop(),
        seeds=seeds or None,
        data_dir=data_dir,
        out=out.parent,
        name=out.name,
        batch_size=options.batch_size,
        device=options.device,
        dtype=options.dtype,
        decode_overrides=overrides,
        leaderboard=None,
        trust_remote_code=options.trust_remote_code,
    )
    print(
        f"[igpo check] evaluating {candidate} with the baseline's settings into {out}",
        file=sys.stderr,
    )
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the check's markdown
        return run_eval(request).parent


# --------------------------------------------------------------------------- baseline update


def update_baseline(candidate_run: str | Path, baseline: str | Path) -> list[Path]:
    """Copy a run's samples.jsonl then results.json into the baseline folder, each atomically.

    The candidate is validated first; other files in the baseline folder are left alone.
    """
    source = results_path(candidate_run)
    load_results(source)
    load_samples(source)
    target = Path(baseline)
    folder = target.parent if target.suffix == ".json" else target
    written = []
    for name in (SAMPLES_FILE, RESULTS_FILE):  # results last: its presence marks a complete run
        atomic_write_bytes(folder / name, source.with_name(name).read_bytes())
        written.append(folder / name)
    return written


# --------------------------------------------------------------------------- the command


@dataclass
class CheckRequest:
    """Everything `igpo check` was asked to do."""

    candidate: str
    baseline: Path
    settings: CheckSettings = field(default_factory=CheckSettings)
    model: CandidateModel = field(default_factory=CandidateModel)
    update_baseline: bool = False
    summary: Path | None = None
    json_out: Path | None = None


def run_check(req: CheckRequest) -> int:
    """Compare (evaluating the candidate first if it is a model), write the outputs, return the
    exit code: 0 pass / inconclusive, 1 regression (0 after a deliberate --update-baseline)."""
    req.settings.validate()
    if req.update_baseline and is_run(req.candidate):
        return _replace_baseline(req, req.candidate)
    if not results_path(req.baseline).exists() and req.update_baseline:
        raise UserError(
            f"no baseline at {req.baseline} to take evaluation settings from: "
            "evaluate with `igpo eval` and pass that run folder as the candidate"
        )
    if not is_run(req.candidate) and not looks_like_model(req.candidate):
        raise MissingInput(f"candidate not found: {req.candidate} (neither a run nor a model)")
    baseline = load_results(req.baseline)
    candidate_run: str | Path = req.candidate
    if not is_run(req.candidate):
        keys = select_tasks(baseline, req.settings.tasks)
        candidate_run = evaluate_candidate(
            req.candidate,
            baseline,
            keys,
            req.model,
            req.settings.allow_mismatch or req.update_baseline,
        )
    if req.update_baseline:
        return _replace_baseline(req, candidate_run)
    report = compare_runs(req.baseline, candidate_run, req.settings)
    emit(report, req.summary, req.json_out)
    return report.exit_code


def _replace_baseline(req: CheckRequest, candidate_run: str | Path) -> int:
    """--update-baseline: show the comparison when one is possible, then write the new baseline.

    A deliberate update never fails on a regression or a settings change (that is often why the
    baseline is being replaced); a missing or unreadable old baseline is simply replaced.
    """
    with contextlib.suppress(CheckError, ResultsError):
        report = compare_runs(req.baseline, candidate_run, _allowing(req.settings))
        emit(report, req.summary, req.json_out)
    for path in update_baseline(candidate_run, req.baseline):
        print(f"wrote baseline {path}")
    return EXIT_PASS


def _allowing(settings: CheckSettings) -> CheckSettings:
    return CheckSettings(**{**asdict(settings), "allow_mismatch": True})


def emit(report: CheckReport, summary: Path | None, json_out: Path | None) -> None:
    """Markdown to stdout (and --summary), JSON to --json: both destinations are checked before
    either is written, so a bad --json never leaves a --summary behind (or the reverse)."""
    text = report.to_markdown()
    data = json.dumps(report.to_json(), indent=2) + "\n"
    targets = [(Path(p), content, flag) for p, content, flag in ((json_out, data, "--json"), (summary, text, "--summary"))
               if p is not None]
    for path, _content, flag in targets:
        _check_writable(path, flag)
    sys.stdout.write(text)
    for path, content, _flag in targets:
        atomic_write_text(path, content)


def _check_writable(path: Path, flag: str) -> None:
    """Refuse an output path that is a folder or lies under a file."""
    if path.is_dir():
        raise CheckError(f"{flag} {path} is a folder, not a file")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise CheckError(f"{flag} {path}: {parent} is a file, not a folder")
