"""`igpo check` end to end: compare or evaluate, decide, write the report."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.check.candidate import (
    CandidateModel,
    evaluate_candidate,
    is_run,
    looks_like_model,
    update_baseline,
)
from harness.check.common import (
    EXIT_PASS,
    CheckError,
)
from harness.check.compare import (
    CheckSettings,
    select_tasks,
)
from harness.check.report import (
    CheckReport,
    compare_runs,
)
from harness.errors import UserError
from harness.eval.results import (
    ResultsError,
    load_results,
    results_path,
)
from igpo.atomic import atomic_write_text
from igpo.errors import MissingInput

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
    on_compared: Callable[[Path], None] | None = None
    """Called with the candidate's run folder after the comparison (the CLI's --html writes the
    report there; harness.report imports this package, never the reverse)."""


def run_check(req: CheckRequest) -> int:
    """Compare (evaluating the candidate first if it is a model), write the outputs, return the
    exit code: 0 pass, 1 regression or cannot-rule-out (0 after a deliberate --update-baseline)."""
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
    if req.on_compared is not None:
        req.on_compared(Path(candidate_run))
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
    targets = [
        (Path(p), content, flag)
        for p, content, flag in ((json_out, data, "--json"), (summary, text, "--summary"))
        if p is not None
    ]
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
