"""The check report (markdown and JSON) and the comparison of two loaded run records."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.check.common import (
    CANNOT_RULE_OUT,
    CHECK_FORMAT,
    PASS,
    POINTS,
    REGRESSION,
    VERDICT_EXIT,
    CheckError,
)
from harness.check.compare import (
    CheckSettings,
    TaskComparison,
    compare_task,
    mismatches,
    select_tasks,
)
from harness.check.pairing import (
    _Item,
    item_table,
    pair_task,
)
from harness.eval.leaderboard import protocol_label
from harness.eval.records import RunRecord, Sample
from harness.eval.results import (
    SAMPLES_FILE,
    ResultsError,
    load_results,
    load_samples,
)
from harness.markdown import one_line, table


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
    baseline_run: str = ""
    """Protocol (`*` when the run deviates from it) and device: the header's words on each run."""
    candidate_run: str = ""

    @property
    def verdict(self) -> str:
        """The worst task's: regression, else cannot-rule-out, else pass."""
        verdicts = {t.verdict for t in self.tasks}
        return next((v for v in (REGRESSION, CANNOT_RULE_OUT) if v in verdicts), PASS)

    @property
    def exit_code(self) -> int:
        """0 pass; 1 regression or cannot-rule-out (the gate fails); 2, errors, is harness.errors'."""
        return VERDICT_EXIT[self.verdict]

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
            "baseline_run": self.baseline_run,
            "candidate_run": self.candidate_run,
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
            f"baseline `{self.baseline_label}`{_about(self.baseline_run)} vs candidate "
            f"`{self.candidate_label}`{_about(self.candidate_run)} "
            f"(alpha {s.alpha:g}, max drop {s.max_drop * POINTS:g} pp, power {s.power:.0%})",
            "",
        ]
        rows = []
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
            rows.append(cells)
        headers = ["task", "items", "baseline %", "candidate %", f"diff (pp) [{level} CI]", "SE (pp)", "p"]
        headers += ["min detectable drop (pp)", "verdict"]
        lines.append(table(headers, rows, ["left", *["right"] * 7, "left"]))
        lines += ["", f"**Overall: {self.verdict}** - {self.overall_reason()}", ""]
        lines.append(
            f"Tests: one sample per item -> exact McNemar, Tango's score interval; avg@k -> paired "
            f"cluster bootstrap ({s.resamples:,} resamples, items as clusters; its percentile "
            f"interval at least as wide as the score interval with no discordant item). Pass "
            f"(exit 0) = no significant drop and the interval's lower end >= -{s.max_drop * POINTS:g} pp; regression "
            f"(exit 1) = a significant drop; cannot-rule-out (exit 1) = neither."
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
        unsure = [t for t in self.tasks if t.verdict == CANNOT_RULE_OUT]
        limit = f"-{self.settings.max_drop * POINTS:g} pp"
        if unsure:
            return (
                f"no significant drop, but a drop beyond {limit} is not ruled out for "
                + "; ".join(f"{t.task} (lower end {t.ci95[0] * POINTS:+.2f} pp; {_needed_text(t)})" for t in unsure)
                + f". Items needed at each task's discordance for {self.settings.power:.0%} power, "
                "were the candidate truly no worse."
            )
        count = len(self.tasks)
        if self.settings.exact:
            return f"--exact: no item changed ({count} task(s))"
        return f"no significant drop; every interval's lower end is >= {limit} ({count} task(s))"


def _needed_text(t: TaskComparison) -> str:
    """How many items would rule the drop out (stats.items_to_rule_out), or why none would."""
    if t.items_to_rule_out is None:
        return "no number of items would rule out every drop: --max-drop is 0"
    return f"about {t.items_to_rule_out:,} items would rule it out, not {t.n_items:,}"


def _mdd_text(mdd: float) -> str:
    """Points, or >100 when no possible drop would be detected at this size."""
    return f"{mdd * POINTS:.2f}" if mdd < 1 else f">{POINTS:g}"


def _p_text(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def _label(record: RunRecord, path: str) -> str:
    """The run's name as shown in a code span of the report: one line, no backtick to end it."""
    return one_line(record.label or record.model.name_or_path or path).replace("`", "'")


def _run_words(record: RunRecord) -> str:
    """`protocol igpo*, device cpu`: the run's protocol label (marked when it deviates) and the
    device it ran on (records written before it was recorded: none)."""
    words = [f"protocol {protocol_label(record)}"]
    if record.model.device:
        words.append(f"device {record.model.device}")
    return one_line(", ".join(words))


def _about(words: str) -> str:
    return f" ({words})" if words else ""


SAMPLES_TOLERANCE = 1e-9
"""Largest |accuracy from samples - accuracy in results.json| taken as the same number."""


def _check_samples_match(record: RunRecord, key: str, items: dict[Any, _Item], where: str) -> None:
    """The samples must reproduce the run's own headline accuracy (an edited or swapped
    samples.jsonl would otherwise be compared in silence)."""
    stated = record.tasks[key].accuracy
    from_samples = sum(i.total / i.count for i in items.values()) / len(items)
    if abs(stated - from_samples) > SAMPLES_TOLERANCE:
        raise ResultsError(
            f"{Path(where).with_name(SAMPLES_FILE)}: its samples of {key} give accuracy "
            f"{100 * from_samples:.2f}% but {Path(where).name} reports {100 * stated:.2f}% "
            "(edited or mismatched files)"
        )


def compare_records(
    baseline: RunRecord,
    baseline_rows: Iterable[Sample],
    candidate: RunRecord,
    candidate_rows: Iterable[Sample],
    settings: CheckSettings,
) -> CheckReport:
    """Compare two loaded runs (records + sample rows); raises CheckError when not comparable."""
    settings.validate()
    keys = select_tasks(baseline, settings.tasks)
    notes: list[str] = []
    missing = [k for k in keys if k not in candidate.tasks]
    if missing:
        if not settings.allow_mismatch:
            raise CheckError(
                f"the candidate lacks task(s) {', '.join(missing)} (use --allow-mismatch to compare the others)"
            )
        notes.append(f"not in the candidate, skipped: {', '.join(missing)}")
        keys = [k for k in keys if k not in missing]
    if not keys:
        raise CheckError("no task in common between the runs")
    extra = [k for k in candidate.tasks if k not in baseline.tasks]
    if extra:
        notes.append(f"candidate tasks not in the baseline, ignored: {', '.join(extra)}")
    diffs = mismatches(baseline, candidate, keys)
    if diffs and not settings.allow_mismatch:
        raise CheckError("runs are not comparable: " + "; ".join(diffs) + " (use --allow-mismatch)")
    b_path = str(baseline.path) if baseline.path else "baseline"
    c_path = str(candidate.path) if candidate.path else "candidate"
    b_table = item_table(baseline_rows, set(keys))
    c_table = item_table(candidate_rows, set(keys))
    comparisons = []
    for key in keys:
        for items, where, record in ((b_table, b_path, baseline), (c_table, c_path, candidate)):
            if not items[key]:
                raise ResultsError(f"{Path(where).with_name(SAMPLES_FILE)} has no samples of task {key}")
            _check_samples_match(record, key, items[key], where)
        paired = pair_task(key, b_table[key], c_table[key], settings.allow_mismatch)
        comparisons.append(compare_task(paired, settings))
    return CheckReport(
        baseline=b_path,
        candidate=c_path,
        baseline_label=_label(baseline, b_path),
        candidate_label=_label(candidate, c_path),
        baseline_run=_run_words(baseline),
        candidate_run=_run_words(candidate),
        settings=settings,
        tasks=comparisons,
        mismatches=diffs,
        notes=notes,
    )


def compare_runs(baseline: str | Path, candidate: str | Path, settings: CheckSettings) -> CheckReport:
    """Load two run folders (or results.json paths) and compare them."""
    b_record, c_record = load_results(baseline), load_results(candidate)
    return compare_records(b_record, load_samples(baseline), c_record, load_samples(candidate), settings)
