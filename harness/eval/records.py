"""Typed run records: what `igpo eval` writes (results.json, samples.jsonl), parsed and
validated once, here.

Check, leaderboards, ablation reports, series and the regression gate read attributes of a
RunRecord and of Samples; nothing outside this module walks the JSON. Records written before
a field existed (label, seeds_run, overrides) read with that field's default.

A samples.jsonl line, for example (the first item of the committed testbed baseline):

    {"task": "igpo_arith", "doc_id": 0, "seed": 0, "repeat": 0, "prompt": "...",
     "response": "18 + 8 = 26 . </reasoning> <answer> \\boxed{ 26 } </answer>",
     "extracted": " 26 ", "gold": "26", "correct": true, "strict_correct": true, "timed_out": false}
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from igpo.errors import BadFile

LEVEL_METRIC = re.compile(r"^acc_steps_(\d+)$")
"""Per-level accuracy metrics of a task (arith: acc_steps_<number of operations>)."""
FORMAT = "igpo-results"
FORMAT_VERSION = 1
UNKNOWN = "?"


class ResultsError(BadFile):
    """A results file that is missing, corrupt or not written by igpo."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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

    @classmethod
    def parse(cls, raw: Any, where: str) -> TaskResult:
        """Validate one entry of results.json's tasks table."""
        if not isinstance(raw, dict):
            raise ResultsError(f"{where} is not a table")
        missing = [f for f in ("task", "accuracy", "n_items", "ci95") if f not in raw]
        if missing:
            raise ResultsError(f"{where} lacks {', '.join(missing)}")
        acc, ci = raw["accuracy"], raw["ci95"]
        if not _number(acc) or not 0 <= acc <= 1:
            raise ResultsError(f"{where}: accuracy {acc!r} is not a fraction in [0, 1]")
        if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(map(_number, ci))):
            raise ResultsError(f"{where}: ci95 {ci!r} is not a [lo, hi] pair")
        spi = raw.get("samples_per_item")
        samples = int(spi) if _number(spi) else 1
        known = {f: raw[f] for f in cls.__dataclass_fields__ if f in raw}
        return cls(
            **{
                **known,
                "accuracy": float(acc),
                "ci95": (float(ci[0]), float(ci[1])),
                "metric": str(raw.get("metric") or "exact_match"),
                "samples_per_item": samples,
                "ci_kind": str(raw.get("ci_kind") or ("wilson" if samples == 1 else "cluster")),
                "stderr": float(raw["stderr"]) if _number(raw.get("stderr")) else math.nan,
                "metrics": dict(raw.get("metrics") or {}),
                "per_seed": dict(raw.get("per_seed") or {}),
                "decoding": dict(raw.get("decoding") or {}),
                "seeds": list(raw.get("seeds") or []),
                "data": dict(raw.get("data") or {}),
            }
        )

    def level_accuracy(self) -> dict[int, float]:
        """Level -> accuracy from per-level metrics (arith: acc_steps_<operations>)."""
        out = {}
        for name, value in self.metrics.items():
            match = LEVEL_METRIC.match(name)
            if match and _number(value):
                out[int(match.group(1))] = float(value)
        return out


@dataclass(frozen=True)
class ModelInfo:
    """The evaluated model: path or Hub id, content hashes, optional adapter, the device it ran on."""

    name_or_path: str = UNKNOWN
    hash: str | None = None
    adapter: str | None = None
    adapter_hash: str | None = None
    family: str | None = None
    token_spec: dict[str, Any] | None = None
    device: str | None = None


PROTOCOL_FIELDS = ("name", "file_hash", "seeds", "seeds_run", "overrides")
"""The protocol table's entries ProtocolInfo has fields for; the rest is kept as `settings`."""


@dataclass(frozen=True)
class ProtocolInfo:
    """The protocol a run used, and how the run departed from it."""

    name: str | None = None
    file_hash: str | None = None
    seeds: list[int] = field(default_factory=list)
    """The seeds the protocol asks for."""
    seeds_run: list[int] | None = None
    """The seeds the run used (None in records written before it was recorded)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Decoding settings the command line overrode."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The whole protocol table as written (description, source, decoding, tasks, ...)."""

    def deviations(self, tasks: dict[str, TaskResult]) -> list[str]:
        """How a run departs from this protocol: an edited shipped protocol, overrides, a limit, fewer seeds."""
        from harness.eval.protocols import shipped_difference  # lazy: it imports torch

        out = [d for d in [shipped_difference(self.name, self.file_hash, self.settings, self.seeds)] if d]
        if self.overrides:
            out.append("overrides " + ", ".join(f"{k}={v}" for k, v in sorted(self.overrides.items())))
        limits = sorted({t.limit for t in tasks.values() if t.limit is not None}, key=str)
        if limits:
            out.append("limit " + ", ".join(str(v) for v in limits))
        if self.seeds_run is not None and self.seeds and sorted(self.seeds_run) != sorted(self.seeds):
            out.append(f"seeds {', '.join(map(str, self.seeds_run))} (protocol: {', '.join(map(str, self.seeds))})")
        return out

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> ProtocolInfo:
        """From a results.json protocol table (or Protocol.to_dict() plus seeds_run / overrides)."""
        seeds_run = raw.get("seeds_run")
        return cls(
            name=raw.get("name"),
            file_hash=raw.get("file_hash"),
            seeds=list(raw.get("seeds") or []),
            seeds_run=list(seeds_run) if isinstance(seeds_run, list) else None,
            overrides=dict(raw.get("overrides") or {}),
            settings={k: v for k, v in raw.items() if k not in PROTOCOL_FIELDS},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.settings,
            "name": self.name,
            "file_hash": self.file_hash,
            "seeds": list(self.seeds),
            "overrides": dict(self.overrides),
            **({"seeds_run": list(self.seeds_run)} if self.seeds_run is not None else {}),
        }


def _length_conflicts(raw: Any, file: Path) -> dict[str, dict[str, Any]]:
    """results.json's length_conflicts table (absent in records written before it existed)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ResultsError(f"{file}: length_conflicts is not a table of task -> table")
    return {str(k): dict(v) for k, v in raw.items()}


@dataclass
class RunRecord:
    """One finished `igpo eval` run (results.json)."""

    tasks: dict[str, TaskResult]
    """Task key ("igpo_gsm8k", or "igpo_gsm8k@256" for a length variant) -> result."""
    model: ModelInfo = field(default_factory=ModelInfo)
    protocol: ProtocolInfo = field(default_factory=ProtocolInfo)
    run_name: str | None = None
    created: str | None = None
    label: str | None = None
    label_given: bool = False
    """Whether the user named the row (--label) rather than accepting the default."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Versions, git commit, command, wall time, token throughput, warnings."""
    lm_eval: dict[str, Any] = field(default_factory=dict)
    """lm-eval's own aggregate results per seed, kept verbatim."""
    length_conflicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Task key -> {max_gen_toks, gen_length, source, responses}: tasks whose lm-eval max_gen_toks
    was shorter than the diffusion gen_length asked for, so responses were cut below the canvas
    (or the canvas shortened); empty when every response kept its whole canvas. A run with any
    is marked as deviating from its protocol."""
    path: Path | None = None
    """The results.json it was read from (None before it is written)."""

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else "results"

    @property
    def source(self) -> str:
        """What identifies the run in a table: its run name, else its folder."""
        if self.run_name:
            return self.run_name
        return (self.path.parent.name if self.path is not None else "") or UNKNOWN

    def mean_accuracy(self) -> float:
        """Accuracy averaged over the run's tasks."""
        return sum(t.accuracy for t in self.tasks.values()) / len(self.tasks)

    def level_accuracy(self) -> dict[int, float]:
        """Level -> accuracy, each level from the first task that reports it (empty when none does)."""
        levels: dict[int, float] = {}
        for task in self.tasks.values():
            for level, value in task.level_accuracy().items():
                levels.setdefault(level, value)
        return levels

    def deviations(self) -> list[str]:
        """How the run departs from its protocol: the protocol's list, then length conflicts."""
        out = self.protocol.deviations(self.tasks)
        for key, info in sorted(self.length_conflicts.items()):
            out.append(
                f"{key}: max_gen_toks {info.get('max_gen_toks')} < gen_length {info.get('gen_length')} "
                f"({info.get('responses', UNKNOWN)} responses)"
            )
        return out

    @classmethod
    def parse(cls, raw: Any, file: Path) -> RunRecord:
        """Validate a results.json's content; ResultsError names the file and the problem."""
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ResultsError(f"{file} is not an igpo results file (no format: {FORMAT!r})")
        if raw.get("format_version") != FORMAT_VERSION:
            raise ResultsError(f"{file} has format_version {raw.get('format_version')!r}; expected {FORMAT_VERSION}")
        tasks = raw.get("tasks")
        if not isinstance(tasks, dict):
            raise ResultsError(f"{file} has no tasks table")
        if not tasks:
            raise ResultsError(f"{file} has an empty tasks table")
        model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
        protocol = raw.get("protocol")
        if isinstance(protocol, str):  # a bare protocol name
            protocol = {"name": protocol}
        protocol = protocol if isinstance(protocol, dict) else {}
        return cls(
            tasks={str(k): TaskResult.parse(v, f"{file}: task {k!r}") for k, v in tasks.items()},
            model=ModelInfo(**{f: model.get(f) for f in ModelInfo.__dataclass_fields__ if model.get(f) is not None}),
            protocol=ProtocolInfo.parse(protocol),
            run_name=raw.get("run_name"),
            created=raw.get("created"),
            label=raw.get("label"),
            label_given=bool(raw.get("label_given")),
            provenance=dict(raw.get("provenance") or {}),
            lm_eval=dict(raw.get("lm_eval") or {}),
            length_conflicts=_length_conflicts(raw.get("length_conflicts"), file),
            path=file,
        )

    def to_dict(self) -> dict[str, Any]:
        """The results.json content (without the path it was read from)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "run_name": self.run_name,
            "created": self.created,
            "label": self.label,
            "label_given": self.label_given,
            "model": asdict(self.model),
            "protocol": self.protocol.to_dict(),
            "tasks": {k: {**asdict(v), "ci95": list(v.ci95)} for k, v in self.tasks.items()},
            "provenance": self.provenance,
            "lm_eval": self.lm_eval,
            "length_conflicts": {k: dict(v) for k, v in self.length_conflicts.items()},
        }


@dataclass(frozen=True)
class Sample:
    """One scored response: (task key, doc, seed, repeat) and its verdict."""

    task: str
    doc_id: Any
    correct: bool
    seed: int | None = None
    repeat: int | None = None
    prompt: str = ""
    response: str = ""
    extracted: Any = None
    gold: Any = None
    strict_correct: bool | None = None
    timed_out: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    """Everything else the row holds (decoding, tokens, hit_length, notes, ...)."""

    @property
    def item(self) -> Any:
        """The doc id as a dict key (lists and dicts serialised)."""
        return json.dumps(self.doc_id, sort_keys=True) if isinstance(self.doc_id, (list, dict)) else self.doc_id

    @classmethod
    def parse(cls, raw: Any, where: str) -> Sample:
        if not isinstance(raw, dict):
            raise ResultsError(f"{where} is not a JSON object")
        if not isinstance(raw.get("task"), str) or "doc_id" not in raw or not isinstance(raw.get("correct"), bool):
            raise ResultsError(f"{where} lacks a task, a doc_id or a boolean 'correct'")
        named = {f: raw[f] for f in cls.__dataclass_fields__ if f in raw and f != "extra"}
        return cls(**named, extra={k: v for k, v in raw.items() if k not in cls.__dataclass_fields__})


def parse_samples(rows: Iterable[tuple[int, Any]], file: Path, record: RunRecord | None = None) -> list[Sample]:
    """samples.jsonl's rows, (line number, decoded JSON) each, parsed and checked as one set.

    A row that repeats an earlier row's (task, doc_id, seed, repeat) is refused, and so, with the
    run's record, is a row the run did not produce: a task, seed or repeat results.json does not
    list, an item beyond its n_items, a sample beyond its samples_per_item. Either would be
    counted as a sample of its own and skew accuracies and intervals (all rows doubled halve the
    drop a check can detect). The error names the file and the line.
    """
    out: list[Sample] = []
    first_line: dict[tuple[Any, ...], int] = {}
    items: dict[str, dict[Any, int]] = {}
    for n, raw in rows:
        where = f"{file}: line {n}"
        sample = Sample.parse(raw, where)
        for name in ("seed", "repeat"):
            value = getattr(sample, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ResultsError(f"{where}: {name} {value!r} is not an integer")
        key = (sample.task, sample.item, sample.seed, sample.repeat)
        if sample.seed is not None and sample.repeat is not None:
            if key in first_line:
                raise ResultsError(
                    f"{where} repeats line {first_line[key]} (task {sample.task}, doc_id {sample.doc_id!r}, "
                    f"seed {sample.seed}, repeat {sample.repeat}): duplicated rows"
                )
            first_line[key] = n
        if record is not None:
            _check_sample_belongs(sample, record, items, where)
        out.append(sample)
    return out


def _check_sample_belongs(sample: Sample, record: RunRecord, items: dict[str, dict[Any, int]], where: str) -> None:
    """Refuse a row the run's results.json cannot account for (`items`: rows so far per item)."""
    results = record.path.name if record.path is not None else "results.json"
    task = record.tasks.get(sample.task)
    if task is None:
        raise ResultsError(
            f"{where}: task {sample.task!r} is not one of the run's tasks in {results} "
            f"({', '.join(sorted(record.tasks))}): a foreign row"
        )
    if sample.seed is not None and task.seeds and sample.seed not in task.seeds:
        raise ResultsError(
            f"{where}: seed {sample.seed!r} is not one of task {sample.task}'s seeds in {results} "
            f"({', '.join(map(str, task.seeds))}): a foreign row"
        )
    if sample.repeat is not None and not (
        isinstance(sample.repeat, int) and 0 <= sample.repeat < max(1, int(task.repeats or 1))
    ):
        raise ResultsError(
            f"{where}: repeat {sample.repeat!r} is outside task {sample.task}'s {task.repeats} repeat(s): a foreign row"
        )
    per_item = items.setdefault(sample.task, {})
    count = per_item.get(sample.item, 0) + 1
    if count == 1 and len(per_item) >= task.n_items:
        raise ResultsError(
            f"{where}: doc_id {sample.doc_id!r} would be item {len(per_item) + 1} of task {sample.task}, "
            f"which has {task.n_items} in {results}: a foreign row"
        )
    if count > task.samples_per_item:
        raise ResultsError(
            f"{where}: sample {count} of doc_id {sample.doc_id!r} of task {sample.task}, which has "
            f"{task.samples_per_item} per item in {results}: a duplicated row"
        )
    per_item[sample.item] = count
