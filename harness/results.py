"""The run record `igpo eval` writes (results.json + samples.jsonl) and reads back.

A run folder holds:
- `results.json`: schema below (`format: "igpo-results"`, `format_version: 1`);
- `samples.jsonl`: one line per (task, doc, seed, repeat) with prompt, response, extracted
  answer, gold and correctness.

results.json
    format, format_version, run_name, created (ISO time)
    model: {name_or_path, hash, adapter, adapter_hash, family}
    protocol: {name, file_hash, description, source}
    tasks: {<task key, e.g. "igpo_gsm8k" or "igpo_gsm8k@256">: TaskResult as dict}
    provenance: {versions, git_commit, command, wall_time_s, tokens_per_s, nfe_per_token, ...}
    lm_eval: {<seed>: lm-eval's aggregate "results" dict for that seed}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from igpo.atomic import atomic_write_text
from igpo.errors import BadFile
from igpo.jsonfile import finite

FORMAT = "igpo-results"
FORMAT_VERSION = 1
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"


class ResultsError(BadFile):
    """A results file that is missing, corrupt or not written by igpo."""


@dataclass
class TaskResult:
    """One task's outcome under one protocol, over all seeds and repeats."""

    task: str
    """lm-eval task name (without the @length suffix)."""
    metric: str
    """Headline metric, e.g. exact_match (math-verify)."""
    accuracy: float
    """Mean correctness over items (each item averaged over its seeds x repeats first)."""
    n_items: int
    samples_per_item: int
    """Seeds x repeats: 1 for pass@1 with one seed, 16 for avg@16, ..."""
    ci95: tuple[float, float]
    ci_kind: str
    """How the interval was computed: "wilson" (one sample per item) or "cluster" (normal
    approximation with item-clustered standard error)."""
    stderr: float
    metrics: dict[str, float] = field(default_factory=dict)
    """Every aggregated metric (exact_match, strict_match, timeouts, ...)."""
    per_seed: dict[str, dict[str, float]] = field(default_factory=dict)
    decoding: dict[str, Any] = field(default_factory=dict)
    """Every decoding setting actually used."""
    repeats: int = 1
    seeds: list[int] = field(default_factory=list)
    limit: int | None = None
    version: Any = None
    data: dict[str, Any] = field(default_factory=dict)
    """{source: "hub"|"local", id or path, hash}."""


def write_results(run_dir: Path, record: dict[str, Any], samples: list[dict[str, Any]]) -> Path:
    """Write samples.jsonl then results.json (results last: its presence means a finished run);
    a NaN or infinite value (lm-eval's mean of an empty level under --limit) is written as null."""
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, **record}
    record["tasks"] = {k: asdict(v) if isinstance(v, TaskResult) else v for k, v in record["tasks"].items()}
    lines = "".join(json.dumps(finite(s), ensure_ascii=False, allow_nan=False) + "\n" for s in samples)
    atomic_write_text(run_dir / SAMPLES_FILE, lines)
    atomic_write_text(run_dir / RESULTS_FILE, json.dumps(finite(record), indent=2, allow_nan=False) + "\n")
    return run_dir / RESULTS_FILE


def results_path(path: str | Path) -> Path:
    """The results.json of a run folder, or the file itself."""
    p = Path(path)
    return p / RESULTS_FILE if p.is_dir() else p


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results.json (or run folder); ResultsError names what is wrong."""
    file = results_path(path)
    if not file.is_file():
        raise ResultsError(f"no results file at {file}")
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultsError(f"{file} is not valid JSON ({err})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ResultsError(f"{file} is not an igpo results file (no format: {FORMAT!r})")
    if record.get("format_version") != FORMAT_VERSION:
        raise ResultsError(f"{file} has format_version {record.get('format_version')!r}; expected {FORMAT_VERSION}")
    tasks = record.get("tasks")
    if not isinstance(tasks, dict):
        raise ResultsError(f"{file} has no tasks table")
    for key, task in tasks.items():
        if not isinstance(task, dict):
            raise ResultsError(f"{file}: task {key!r} is not a table")
        missing = [f for f in ("task", "accuracy", "n_items", "ci95") if f not in task]
        if missing:
            raise ResultsError(f"{file}: task {key!r} lacks {', '.join(missing)}")
    record["_path"] = str(file)
    return record


def load_samples(path: str | Path) -> list[dict[str, Any]]:
    """Per-sample records of a run (folder or results.json path)."""
    file = results_path(path).with_name(SAMPLES_FILE)
    if not file.is_file():
        raise ResultsError(f"no samples file at {file}")
    out = []
    with open(file, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ResultsError(f"{file}: line {n} is not valid JSON") from None
    return out
