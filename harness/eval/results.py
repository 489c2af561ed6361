"""The run record `igpo eval` writes (results.json + samples.jsonl) and reads back.

A run folder holds:
- `results.json`: schema below (`format: "igpo-results"`, `format_version: 1`);
- `samples.jsonl`: one line per (task, doc, seed, repeat) with prompt, response, extracted
  answer, gold and correctness.

results.json (harness.eval.records.RunRecord)
    format, format_version, run_name, created (ISO time), label, label_given
    model: {name_or_path, hash, adapter, adapter_hash, family, token_spec}
    protocol: {name, file_hash, seeds, seeds_run, overrides, description, source, decoding, ...}
    tasks: {<task key, e.g. "igpo_gsm8k" or "igpo_gsm8k@256">: TaskResult as dict}
    provenance: {versions, git_commit, command, wall_time_s, tokens_per_s, nfe_per_token, ...}
    lm_eval: {<seed>: lm-eval's aggregate "results" dict for that seed}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.eval.records import FORMAT, FORMAT_VERSION, ResultsError, RunRecord, Sample, TaskResult, parse_samples
from igpo.atomic import atomic_write_text
from igpo.errors import require_file
from igpo.jsonfile import finite

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "RESULTS_FILE",
    "SAMPLES_FILE",
    "ResultsError",
    "RunRecord",
    "Sample",
    "TaskResult",
    "atomic_write_text",
    "load_results",
    "load_samples",
    "results_path",
    "unique_runs",
    "write_results",
]

RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"


def write_results(run_dir: Path, record: RunRecord, samples: list[dict[str, Any]]) -> Path:
    """Write samples.jsonl then results.json (results last: its presence means a finished run);
    a NaN or infinite value (lm-eval's mean of an empty level under --limit) is written as null.
    Sets `record.path`."""
    lines = "".join(json.dumps(finite(s), ensure_ascii=False, allow_nan=False) + "\n" for s in samples)
    atomic_write_text(run_dir / SAMPLES_FILE, lines)
    path = run_dir / RESULTS_FILE
    atomic_write_text(path, json.dumps(finite(record.to_dict()), indent=2, allow_nan=False) + "\n")
    record.path = path
    return path


def results_path(path: str | Path) -> Path:
    """The results.json of a run folder, or the file itself."""
    p = Path(path)
    return p / RESULTS_FILE if p.is_dir() else p


def unique_runs(paths: list[Path]) -> list[Path]:
    """Each run once, in first-given order: a run given as its folder and as its results.json,
    twice, or through a link is one run (listed twice it would be counted twice)."""
    seen: set[Path] = set()
    out = []
    for path in paths:
        key = results_path(path).resolve()
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def load_results(path: str | Path) -> RunRecord:
    """Read and validate a results.json (or run folder); ResultsError names what is wrong."""
    file = results_path(path)
    require_file(file, "results file", f"no results file at {file}", ResultsError)
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultsError(f"{file} is not valid JSON ({err})") from None
    except RecursionError:
        raise ResultsError(f"{file}: JSON nested too deeply to read") from None
    return RunRecord.parse(raw, file)


def load_samples(path: str | Path) -> list[Sample]:
    """Per-sample records of a run (folder or results.json path), each validated, and as a set
    against the run's results.json when there is one (no duplicated or foreign rows)."""
    file = results_path(path).with_name(SAMPLES_FILE)
    require_file(file, "samples file", f"no samples file at {file}", ResultsError)
    record_file = file.with_name(RESULTS_FILE)
    record = load_results(record_file) if record_file.is_file() else None
    rows = []
    with open(file, "rb") as f:  # written whole (atomically): a damaged line is refused, not skipped
        for n, raw in enumerate(f, 1):
            if raw.strip():
                try:
                    rows.append((n, json.loads(raw.decode("utf-8"))))
                except UnicodeDecodeError:
                    raise ResultsError(f"{file}: line {n} is not UTF-8 text") from None
                except (json.JSONDecodeError, RecursionError):
                    raise ResultsError(f"{file}: line {n} is not valid JSON") from None
    return parse_samples(rows, file, record)
