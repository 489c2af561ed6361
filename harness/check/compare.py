"""One task of a candidate against the baseline: settings, comparability checks and the verdict."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.check.common import (
    BOOTSTRAP,
    BOOTSTRAP_INTERVAL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CANNOT_RULE_OUT,
    DEFAULT_ALPHA,
    DEFAULT_MAX_DROP_POINTS,
    FLOAT_SLACK,
    HASH_SHOWN,
    MCNEMAR,
    PASS,
    POINTS,
    REGRESSION,
    TANGO,
    TARGET_POWER,
    TASK_FIELDS,
)
from harness.check.pairing import (
    PairedTask,
    flipped,
)
from harness.check.stats import (
    items_to_rule_out,
    mcnemar_exact_p,
    min_detectable_drop,
    paired_bootstrap,
    tango_interval,
)
from harness.eval.records import RunRecord
from igpo.errors import InvalidSetting

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
    broke: list[Any] = field(default_factory=list)
    """Doc ids of the losses (the report's flipped items; in --json too)."""
    fixed: list[Any] = field(default_factory=list)
    """Doc ids of the wins."""
    interval: str = TANGO
    """How ci95 was made: Tango's score interval, or (avg@k) the cluster bootstrap's."""
    items_to_rule_out: int | None = None
    """Items at which a drop of max_drop would be ruled out at this discordance (None: never)."""
    identical: bool = False
    """Both runs gave the same responses on every sample (a run checked against itself)."""


def compare_task(paired: PairedTask, settings: CheckSettings) -> TaskComparison:
    """The paired test, interval, MDD and verdict of one task (see the package docstring)."""
    d = paired.candidate - paired.baseline
    n = len(d)
    diff = float(d.mean())
    down, up = flipped(paired)
    test, p, ci, interval = _test_and_interval(paired, d, len(down), len(up), settings)
    naive = None
    if paired.sample_diffs is not None and len(paired.sample_diffs) > 1:
        naive = float(paired.sample_diffs.std(ddof=1) / math.sqrt(len(paired.sample_diffs)))
    second_moment = float(np.mean(d * d))
    needed = items_to_rule_out(settings.max_drop, second_moment, settings.alpha, settings.power)
    notes = list(paired.notes)
    if paired.identical:
        notes.append(
            "candidate and baseline are the same run (identical responses on every sample): the "
            f"interval is what {n} items can rule out, not a measured change"
        )
    verdict = _verdict(p < settings.alpha, diff, ci, len(down), len(up), settings, notes)
    return TaskComparison(
        task=paired.key,
        n_items=n,
        samples_per_item=paired.samples_per_item,
        test=test,
        baseline_accuracy=float(paired.baseline.mean()),
        candidate_accuracy=float(paired.candidate.mean()),
        diff=diff,
        se=float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        naive_se=naive,
        ci95=ci,
        p_value=p,
        min_detectable_drop=min_detectable_drop(
            n, second_moment, 1.0 / paired.samples_per_item, settings.alpha, settings.power
        ),
        losses=len(down),
        wins=len(up),
        verdict=verdict,
        improved=p < settings.alpha and diff > 0,
        notes=notes,
        broke=down,
        fixed=up,
        interval=interval,
        items_to_rule_out=int(needed) if math.isfinite(needed) else None,
        identical=paired.identical,
    )


def _test_and_interval(
    paired: PairedTask, d: np.ndarray, losses: int, wins: int, settings: CheckSettings
) -> tuple[str, float, tuple[float, float], str]:
    """(test, p, interval, interval kind): exact McNemar and Tango's score interval for one sample
    per item; the paired cluster bootstrap (seeded per task) for avg@k."""
    if paired.samples_per_item == 1:
        low, high = tango_interval(losses, wins, len(d), settings.alpha)
        return MCNEMAR, mcnemar_exact_p(losses, wins), (float(low), float(high)), TANGO
    seed = [settings.seed, zlib.crc32(paired.key.encode())]
    p, ci = paired_bootstrap(d, settings.resamples, seed, settings.alpha)
    return BOOTSTRAP, p, ci, BOOTSTRAP_INTERVAL


def _verdict(
    significant: bool,
    diff: float,
    ci: tuple[float, float],
    losses: int,
    wins: int,
    settings: CheckSettings,
    notes: list[str],
) -> str:
    """regression (a significant drop; in --exact mode any changed item), pass (a drop beyond
    max_drop ruled out; in --exact mode no item changed), else cannot-rule-out."""
    if settings.exact:
        if losses or wins:
            notes.append(f"exact mode: {losses + wins} item(s) changed ({losses} down, {wins} up)")
            return REGRESSION
        return PASS
    if significant and diff < 0:
        return REGRESSION
    if ci[0] >= -settings.max_drop - FLOAT_SLACK:
        return PASS
    return CANNOT_RULE_OUT


def select_tasks(baseline: RunRecord, wanted: Sequence[str]) -> list[str]:
    """Baseline task keys to compare: all, or those matching names like gsm8k / igpo_gsm8k@256."""
    keys = list(baseline.tasks)
    if not wanted:
        return keys
    chosen: list[str] = []
    for name in wanted:
        hits = [
            k
            for k in keys
            if name in (k, k.split("@")[0], k.removeprefix("igpo_"), k.split("@")[0].removeprefix("igpo_"))
        ]
        if not hits:
            raise InvalidSetting(f"task {name!r} is not in the baseline (it has: {', '.join(keys)})")
        chosen.extend(k for k in hits if k not in chosen)
    return chosen


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= HASH_SHOWN else text[:HASH_SHOWN] + "..."


def mismatches(baseline: RunRecord, candidate: RunRecord, keys: Iterable[str]) -> list[str]:
    """`field: baseline != candidate` for every compared setting that differs."""
    out = []
    for name in ("name", "file_hash"):
        b, c = getattr(baseline.protocol, name), getattr(candidate.protocol, name)
        if b != c:
            out.append(f"protocol.{name}: {_shown(b)} != {_shown(c)}")
    for key in keys:
        b_task, c_task = baseline.tasks[key], candidate.tasks.get(key)
        if c_task is None:
            continue
        b_dec, c_dec = with_defaults(b_task.decoding), with_defaults(c_task.decoding)
        fields_ = [(f"decoding.{k}", b_dec.get(k), c_dec.get(k)) for k in sorted(set(b_dec) | set(c_dec))]
        fields_ += [(k, getattr(b_task, k), getattr(c_task, k)) for k in TASK_FIELDS]
        fields_.append(("data.hash", b_task.data.get("hash"), c_task.data.get("hash")))
        out.extend(f"{key}.{name}: {_shown(b)} != {_shown(c)}" for name, b, c in fields_ if b != c)
    return out


def with_defaults(decoding: dict[str, Any] | None) -> dict[str, Any]:
    """A run's decoding settings with each setting its record lacks at the decoder's default: a
    record written before a setting existed decoded as that default does (e.g. `last_tokens`)."""
    from igpo.decoding import DecodeConfig

    decoding = dict(decoding or {})
    return {**{k: v for k, v in DecodeConfig().to_dict().items() if k not in decoding}, **decoding} if decoding else {}
