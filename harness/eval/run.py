"""`igpo eval`: run lm-eval with the `dllm` model under a protocol and write a run record.

Validation happens before any model is loaded or file written; responses are cached as they
finish, so rerunning an interrupted command reuses them; results are written atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import one_line
from harness.eval.leaderboard import DEFAULT_REFERENCE, discover_runs, protocol_label, write_leaderboard
from harness.eval.protocols import Protocol, check_seeds, load_protocol
from harness.eval.provenance import folder_hash, git_commit, versions
from harness.eval.records import ModelInfo, ProtocolInfo, RunRecord, TaskResult
from harness.eval.results import RESULTS_FILE, ResultsError, load_results, write_results
from harness.eval.series import write_series
from harness.eval.stats import accuracy_interval
from harness.lmeval.adapters import base_for_adapter, model_and_adapter
from igpo.atomic import check_output_path
from igpo.decoding import DecodeConfig, DecodeOverrides
from igpo.decoding.config import MAX_BATCH_SIZE
from igpo.errors import InvalidSetting, MissingInput
from igpo.jsonfile import read_json_object
from igpo.models.adapter import check_adapter_folder
from igpo.models.loading import EMBEDDED_MODELS, looks_like_hub_id
from igpo.outputs import check_folder, check_output, claimed, model_input, real
from igpo.progress import say, verbose
from igpo.scoring.answers import strict_correct
from igpo.scoring.pool import shared_verdicts, start_worker_in_background, verify_answer
from igpo.training.checkpoints import MARKER_FILE, checkpoint_dirs
from tasks.registry import (
    DATA_DIR_ENV,
    GROUPS,
    SPECS,
    TASK_DIR,
    data_dir_or_env,
    data_hash,
    dataset_source,
    hub_error_types,
    local_data_file,
    resolve_tasks,
    task_overrides,
)
from tasks.registry import task_config as yaml_config

HEADLINE_METRIC = "exact_match"
CACHE_FILE = "responses.jsonl"
DEFAULT_OUT = Path("runs/eval")
DEFAULT_LEADERBOARD = Path("results/leaderboard.md")


@dataclass
class EvalRequest:
    """Everything `igpo eval` was asked to do."""

    model: str
    tasks: list[str]
    protocol: str = "igpo"
    adapter: str | None = None
    limit: int | None = None
    seeds: list[int] | None = None
    data_dir: Path | None = None
    out: Path = DEFAULT_OUT
    name: str | None = None
    batch_size: int = 8
    device: str | None = None
    dtype: str | None = None
    overrides: DecodeOverrides = field(default_factory=DecodeOverrides)
    """The user's decoding flags, applied over the protocol's settings of every task."""
    leaderboard: Path | None = DEFAULT_LEADERBOARD
    trust_remote_code: bool = False
    label: str | None = None
    """Display name in leaderboards (default: the model path's last part, plus adapter)."""
    allow_base_mismatch: bool = False
    """Apply --adapter to a --model other than the base its adapter_config.json records."""


@dataclass
class Plan:
    protocol: Protocol
    leaves: list[str]
    data_dir: Path | None
    run_dir: Path
    model: str = ""
    """The model to load: --model, or the base an adapter folder given as --model names."""
    adapter: str | None = None
    """--adapter, or the adapter folder given as --model."""
    settings: dict[tuple[str, str], tuple[DecodeConfig, int]] = field(default_factory=dict)
    """(result-key suffix, task) -> its decoding settings and repeats, resolved once by `plan`:
    one entry per distinct decoding of a task (Protocol.task_variants)."""

    def batches(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """Per generation length of the protocol (one lm-eval call per seed each): its suffix and
        the (task, result-key suffix) pairs it decodes. A task keyed without a length (its lengths
        all decode alike) runs with the first."""
        suffixes = [suffix for suffix, _ in self.protocol.variants()]
        return [
            (suffix, [(leaf, key) for key, leaf in self.settings if key == suffix or (not i and not key)])
            for i, suffix in enumerate(suffixes)
        ]


def is_plain_name(name: str) -> bool:
    """Whether a run name is one folder under --out (no separators, not '.' / '..', no NUL)."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def run_name(model: str, adapter: str | None, protocol: str) -> str:
    """The default run folder name: model (a folder's last part, else the Hub id), adapter
    folder, protocol, e.g. `testbed-step-000015-igpo` (igpo eval and igpo check's candidates)."""
    model_part = slug(Path(model).name if Path(model).exists() else model)
    adapter_part = slug(Path(adapter).name) if adapter else None
    return "-".join(filter(None, [model_part, adapter_part, slug(protocol)]))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/")).strip("_")[-80:] or "model"


def torch_device_type(text: str) -> str:
    import torch

    return torch.device(text).type


MAX_LIMIT = 10**9
"""The largest `--limit` (problems per task): far above any benchmark, below the sizes lm-eval's
slicing and numpy's index types take."""


def check_sizes(req: EvalRequest) -> None:
    """`--limit` and `--batch-size` within 1 .. MAX_LIMIT / MAX_BATCH_SIZE, and the seeds (when given)."""
    if req.limit is not None and not 0 < req.limit <= MAX_LIMIT:
        raise InvalidSetting(f"--limit must be a positive number of problems <= {MAX_LIMIT}, got {req.limit}")
    if not 0 < req.batch_size <= MAX_BATCH_SIZE:
        raise InvalidSetting(f"--batch-size must be >= 1 and <= {MAX_BATCH_SIZE}, got {req.batch_size}")
    if req.seeds is not None:
        check_seeds(req.seeds, "--seeds")


def plan(req: EvalRequest) -> Plan:
    """Check every input and decide what to run; raises a one-line error on bad input."""
    check_request(req)
    protocol = load_protocol(req.protocol)
    leaves = task_leaves(req.tasks)
    settings = task_settings(protocol, leaves, req.overrides)
    data_dir = checked_data_dir(req.data_dir, leaves)
    req = with_model(req)
    if req.name is not None and not is_plain_name(req.name):
        raise InvalidSetting(
            f"--name {req.name!r} must be a plain folder name (no path separators, not '.' or "
            "'..'), so the run stays under --out"
        )
    name = req.name or run_name(req.model, req.adapter, protocol.name)
    check_output_path(req.out / name, "--name" if req.name else "--out", folder=True)
    check_run_folder(req, req.out / name, protocol, leaves, data_dir)
    return Plan(
        protocol=protocol,
        leaves=leaves,
        data_dir=data_dir,
        run_dir=req.out / name,
        model=req.model,
        adapter=req.adapter,
        settings=settings,
    )


def check_request(req: EvalRequest) -> None:
    """The sizes, the seeds and a known device."""
    check_sizes(req)
    if req.device:
        try:
            kind = torch_device_type(req.device)
        except (RuntimeError, ValueError):
            raise InvalidSetting(f"unknown --device {req.device!r} (use cpu, cuda or cuda:N)") from None
        if kind not in ("cpu", "cuda", "mps"):
            raise InvalidSetting(f"--device {req.device!r}: only cpu, cuda and mps devices are supported")


def task_leaves(tasks: list[str]) -> list[str]:
    """The leaf tasks named (groups expanded), in order, each once; none is an error."""
    leaves: list[str] = []
    for name in resolve_tasks(tasks):
        for leaf in GROUPS.get(name, (name,)):
            if leaf not in leaves:
                leaves.append(leaf)
    if not leaves:  # an empty task list is no request for the default tasks
        raise InvalidSetting("no task given: name at least one (e.g. --tasks gsm8k)")
    return leaves


def task_settings(
    protocol: Protocol, leaves: list[str], overrides: DecodeOverrides
) -> dict[tuple[str, str], tuple[DecodeConfig, int]]:
    """Every task's final decoding settings and repeats, resolved once before any model loads,
    keyed (result-key suffix, task). A flag the protocol sets per generation length is refused."""
    per_variant = {"gen_length"} | ({"steps"} if protocol.steps_ratio else set())
    fixed = sorted(per_variant & set(overrides.given())) if protocol.gen_lengths else []
    if fixed:
        flags = " / ".join("--" + name.replace("_", "-") for name in fixed)
        raise InvalidSetting(
            f"protocol {protocol.name!r} sets {' and '.join(sorted(per_variant))} per generation length "
            f"({', '.join(map(str, protocol.gen_lengths))}): {flags} does not apply (use a protocol file)"
        )
    settings: dict[tuple[str, str], tuple[DecodeConfig, int]] = {}
    for leaf in leaves:
        try:
            for suffix, cfg, repeats in protocol.task_variants(leaf, overrides):
                settings[(suffix, leaf)] = (cfg, repeats)
        except ValueError as err:
            raise InvalidSetting(f"{leaf}: {err}") from None
    return settings


def checked_data_dir(given: Path | None, leaves: list[str]) -> Path | None:
    """--data-dir (else $IGPO_DATA_DIR): a folder holding every benchmark task's data file."""
    data_dir = data_dir_or_env(given)
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise MissingInput(f"data folder not found: {data_dir}")
        for leaf in leaves:
            if not leaf_is_builtin(leaf):
                local_data_file(leaf, data_dir)
    return data_dir


def with_model(req: EvalRequest) -> EvalRequest:
    """The request with the model to load (an adapter folder given as --model: its base) and
    the adapter, both checked to be there before any model loads."""
    if not req.model and not req.adapter:
        raise InvalidSetting("no model given")
    model, adapter = model_and_adapter(req.model, req.adapter, f"--model BASE --adapter {req.model}")
    if adapter and adapter == req.adapter:  # --adapter goes on its recorded base unless --model names it
        model = base_for_adapter(model, adapter, req.allow_base_mismatch)
    if model not in EMBEDDED_MODELS and not Path(model).exists() and not looks_like_hub_id(model):
        raise MissingInput(f"model path not found: {model}")
    if adapter and not Path(adapter).is_dir():
        raise MissingInput(f"adapter folder not found: {adapter}")
    if adapter:
        check_adapter_folder(adapter)  # config types, rank, weights: before the model loads
    return replace(req, model=model, adapter=adapter)


@contextlib.contextmanager
def hub_download_errors(p: Plan) -> Iterator[None]:
    """A benchmark task read from the Hub while the Hub is out of reach is bad input (no
    --data-dir given), not a bug: one line naming the datasets and the way out."""
    try:
        yield
    except hub_error_types() as err:
        if p.data_dir is not None:
            raise
        hub = [SPECS[leaf].hub_id for leaf in p.leaves if not leaf_is_builtin(leaf) and leaf in SPECS]
        if not hub:
            raise
        raise MissingInput(
            f"could not download {', '.join(hub)} from the Hugging Face Hub ({one_line(err)}): pass "
            f"--data-dir with the offline data folder (or set {DATA_DIR_ENV}), or evaluate the "
            "built-in task with --tasks arith"
        ) from None


def leaf_is_builtin(task: str) -> bool:
    """Tasks that generate their data (no data file needed), e.g. igpo_arith."""
    spec = SPECS.get(task)
    return spec is not None and not getattr(spec, "local_file", None)


def run_eval(req: EvalRequest) -> Path:
    """Evaluate, write results.json + samples.jsonl into the run folder, return its path. Each
    response is scored once: lm-eval's metrics and the samples rows read the same verdict."""
    from igpo.training.seeds import lone_cpu_launch

    lone = lone_cpu_launch()
    if lone:
        say("eval", lone)
    with shared_verdicts(), contextlib.ExitStack() as held:
        return _run_eval(req, held)


RUN_NAMES = ("results.json", "samples.jsonl", "responses*.jsonl")
"""What an eval run folder holds (igpo.outputs refuses a run folder holding anything else)."""


def run_identity(req: EvalRequest, protocol: Protocol, leaves: list[str]) -> dict[str, Any]:
    """What distinguishes one run from another in the same folder: rerunning it resumes from its
    cache, anything else there is refused instead of silently replaced."""

    def where(path: str | None) -> str | None:
        found = model_input(path)
        return str(real(found)) if found and Path(found).exists() else path

    ident = {
        "model": where(req.model),
        "adapter": where(req.adapter),
        "tasks": leaves,
        "protocol": protocol.name,
        "protocol_hash": protocol.file_hash,
        "overrides": dict(sorted(req.overrides.given().items())),
        "limit": req.limit,
        "seeds": req.seeds,
    }
    return json.loads(json.dumps(ident, default=str))


def check_run_folder(req: EvalRequest, run_dir: Path, protocol: Protocol, leaves: list[str], data_dir) -> None:
    """The run folder is not an input, holds nothing igpo did not write there, and no other run."""
    flag = "--name" if req.name else "--out"
    inputs = [model_input(req.model), req.adapter, data_dir, req.protocol if protocol.file_hash else None]
    check_output(req.out, inputs, flag="--out")
    check_output(run_dir, inputs, flag=flag)
    check_folder(run_dir, kind="eval", known=RUN_NAMES, identity=run_identity(req, protocol, leaves), flag=flag)


def _run_eval(req: EvalRequest, held: contextlib.ExitStack) -> Path:
    p = plan(req)
    if os.environ.get("RANK", "0") == "0":  # one writer per run folder (data-parallel ranks share it)
        held.enter_context(
            claimed(p.run_dir, kind="eval", known=RUN_NAMES, identity=run_identity(req, p.protocol, p.leaves))
        )
    req = replace(req, model=p.model, adapter=p.adapter)  # an adapter folder given as --model: its base
    if not all(leaf_is_builtin(leaf) for leaf in p.leaves):  # benchmark answers may need math-verify
        start_worker_in_background()
    started = time.perf_counter()
    lm = load_lm(req, p)
    lm.stats["load_seconds"] = time.perf_counter() - started
    runner = Runner(lm, req, p)
    seeds = req.seeds if req.seeds else p.protocol.seeds
    for suffix, pairs in p.batches():
        for seed_index, seed in enumerate(seeds):
            runner.run(suffix, pairs, seed, first=seed_index == 0)
    stats = gathered_stats(lm)
    if lm.rank != 0:
        return p.run_dir
    wall, got = time.perf_counter() - started, runner.got
    record = RunRecord(
        tasks={key: summarise(key, info, req, p) for key, info in got.per_task.items()},
        model=model_record(req, lm),
        protocol=ProtocolInfo.parse(
            {**p.protocol.to_dict(), "overrides": req.overrides.given(), "seeds_run": list(seeds)}
        ),
        run_name=p.run_dir.name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        label=req.label or default_label(req),
        label_given=req.label is not None,
        provenance={**provenance(stats, wall, lm.world_size), "warnings": list(lm.warnings)},
        lm_eval=got.lm_eval,
        length_conflicts=got.conflicts,
    )
    path = write_results(p.run_dir, record, got.samples)
    print_table(record)
    print_leaderboard(p.run_dir)
    if req.leaderboard is not None:
        refresh_leaderboard(req.out, req.leaderboard)
    return path


def load_lm(req: EvalRequest, p: Plan):
    """The `dllm` model of the run (its response cache in the run folder), checked for a chat
    template and said when it runs on another device than --device asked for."""
    from harness.lmeval import DiffusionLM

    logging.getLogger("lm_eval").setLevel(logging.INFO if verbose() else logging.ERROR)
    lm = DiffusionLM(
        pretrained=req.model,
        adapter=req.adapter,
        batch_size=req.batch_size,
        device=req.device,
        dtype=req.dtype,
        trust_remote_code=req.trust_remote_code,
        cache_file=str(p.run_dir / CACHE_FILE),
    )
    ran_on = model_device(lm)
    if req.device and ran_on and torch_device_type(req.device) != torch_device_type(ran_on):
        lm.warn(f"--device {req.device} was asked for but is not available: the model runs on {ran_on}")
    lm.apply_chat_template([{"role": "user", "content": "?"}])  # no chat template: one line, before any task
    return lm


@dataclass
class Gathered:
    """What the lm-eval calls of one run gathered (rank 0's; the other ranks' stay empty)."""

    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Result key -> task, decoding, repeats, seeds run, per-item verdicts, per-seed metrics."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    lm_eval: dict[str, Any] = field(default_factory=dict)
    """lm-eval's own results, per seed and length."""
    conflicts: dict[str, dict[str, Any]] = field(default_factory=dict)


class Runner:
    """The lm-eval calls of one run: one per generation length and seed, each task handed its
    planned DecodeConfig typed (`DiffusionLM.plan_tasks`)."""

    def __init__(self, lm, req: EvalRequest, p: Plan) -> None:
        from lm_eval.tasks import TaskManager

        self.lm, self.req, self.p = lm, req, p
        self.manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False)
        self.got = Gathered()

    def run(self, suffix: str, pairs: list[tuple[str, str]], seed: int, first: bool) -> None:
        """One lm-eval call: the tasks of one length under one seed (greedy ones on the first seed
        only: they give the same tokens under every seed)."""
        from lm_eval import simple_evaluate

        planned: dict[str, DecodeConfig] = {}
        configs, keys = [], {}
        for leaf, key_suffix in pairs:
            cfg, repeats = self.p.settings[(key_suffix, leaf)]
            if not first and is_deterministic(cfg):
                continue
            key = keys[leaf] = leaf + key_suffix
            entry = self.got.per_task.setdefault(key, new_task_entry(leaf, cfg, repeats))
            entry["seeds"].append(seed)
            planned[leaf] = cfg
            configs.append(task_config(leaf, self.p.data_dir, repeats))
        if not configs:
            return
        say("eval", f"seed {seed}{' ' + suffix if suffix else ''}: {', '.join(c['task'] for c in configs)}")
        self.lm.args.seed = seed
        self.lm.plan_tasks(planned)
        with hub_download_errors(self.p):
            out = simple_evaluate(
                model=self.lm,
                tasks=configs,
                limit=self.req.limit,
                task_manager=self.manager,
                log_samples=True,
                apply_chat_template=True,
                bootstrap_iters=0,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
        log = gathered_request_log(self.lm)  # a collective: every rank, every seed
        if out is not None:  # None on a non-zero rank under data parallel
            self.got.lm_eval[f"seed{seed}{suffix}"] = out["results"]
            self.collect(out, keys, seed, request_records(log))

    def collect(self, out: dict[str, Any], keys: dict[str, str], seed: int, records) -> None:
        """One lm-eval call's metrics, samples and length conflicts, task by task."""
        for task, key in keys.items():
            info = self.got.per_task[key]
            info["per_seed"][str(seed)] = {
                k.split(",")[0]: v
                for k, v in out["results"][task].items()
                if "," in k and "_stderr" not in k and isinstance(v, (int, float))
            }
            count_length_conflicts(self.got.conflicts, key, records, task)
            for s in sorted(out["samples"][task], key=lambda sample: sample["doc_id"]):
                rows = sample_rows(key, s, seed, info["repeats"], records.get((task, s["doc_id"]), []))
                self.got.samples.extend(rows)
                info["items"][s["doc_id"]].extend(r["correct"] for r in rows)


def new_task_entry(task: str, cfg: DecodeConfig, repeats: int) -> dict[str, Any]:
    """A result key's entry before its first seed (Gathered.per_task)."""
    return {
        "task": task,
        "decoding": cfg.to_dict(),
        "repeats": repeats,
        "seeds": [],
        "items": defaultdict(list),
        "per_seed": {},
    }


def print_leaderboard(run_dir: Path) -> None:
    """This run as a leaderboard row, beside the published rows that share its tasks."""
    print("\n" + write_leaderboard([run_dir], None, "markdown", DEFAULT_REFERENCE))


def is_deterministic(cfg: DecodeConfig) -> bool:
    return cfg.temperature == 0 and cfg.remasking == "low_confidence"


def task_config(leaf: str, data_dir: Path | None, repeats: int) -> dict[str, Any]:
    """The lm-eval config of one task with this run's repeats. Its generation_kwargs keep the
    stop strings alone: the task's decoding is its planned DecodeConfig, handed to the model
    typed (`DiffusionLM.plan_tasks`), so no decoding setting travels through lm-eval (nor the
    YAML's default max_gen_toks, which could cut a response shorter than the canvas)."""
    base = task_overrides(leaf, data_dir)
    gen = {k: v for k, v in (base.get("generation_kwargs") or {}).items() if k == "until"}
    return {**base, "generation_kwargs": gen, "repeats": repeats}


def count_length_conflicts(
    conflicts: dict[str, dict[str, Any]], key: str, records: dict[tuple[str, int], list[dict[str, Any]]], task: str
) -> None:
    """Add the task's requests whose max_gen_toks was shorter than their gen_length (the dllm
    request records' `length_conflict`) to the run-level table, in place."""
    for (name, _), recs in records.items():
        for rec in recs if name == task else []:
            info = rec.get("length_conflict")
            if info:
                entry = conflicts.setdefault(key, {**info, "responses": 0})
                entry["responses"] += 1


def request_records(log: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """The dllm request log grouped by (task, doc_id), repeats in order."""
    out: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for rec in log:
        out[(rec.get("task"), rec.get("doc_id"))].append(rec)
    return out


def sample_rows(
    key: str, sample: dict[str, Any], seed: int, repeats: int | None = None, records: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One samples.jsonl row per response, re-scored so every row carries its own verdict, with
    the settings it was decoded with, its token count and whether it hit the length (`records`).

    At most `repeats` rows: under data parallelism lm-eval pads a rank by re-sending its last
    request, whose extra responses (copies, see `padding_copies`) are not samples.
    """
    gold = str(sample["target"])
    responses = sample["filtered_resps"][0] if sample["filtered_resps"] else []
    if isinstance(responses, str):
        responses = [responses]
    if repeats is not None:
        responses = responses[:repeats]
    prompt = sample["arguments"][0][0]
    rows = []
    for repeat, response in enumerate(responses):
        score = verify_answer(gold, response)
        rows.append(
            {
                "task": key,
                "doc_id": sample["doc_id"],
                "seed": seed,
                "repeat": repeat,
                "prompt": prompt,
                "response": response,
                "extracted": score.extracted,
                "gold": gold,
                "correct": bool(score.correct),
                "strict_correct": bool(strict_correct(gold, response).correct),
                "timed_out": bool(score.timed_out),
            }
        )
        if records and repeat < len(records):
            rec = records[repeat]
            rows[-1].update(decoding=rec.get("decode"), tokens=rec.get("tokens"), hit_length=rec.get("hit_length"))
            if rec.get("notes"):
                rows[-1]["decoding_notes"] = rec["notes"]
    return rows


def summarise(key: str, info: dict[str, Any], req: EvalRequest, p: Plan) -> TaskResult:

    item_means = [sum(v) / len(v) for v in info["items"].values() if v]
    per_item = len(info["seeds"]) * info["repeats"]
    acc, ci, se, kind = accuracy_interval(item_means, per_item)
    seeds_metrics = info["per_seed"].values()
    names = {m for d in seeds_metrics for m in d}
    metrics = {m: sum(d.get(m, 0.0) for d in seeds_metrics) / max(1, len(seeds_metrics)) for m in sorted(names)}
    metrics["timeouts"] = sum(d.get("timeouts", 0.0) for d in seeds_metrics)
    version = (yaml_config(info["task"]).get("metadata") or {}).get("version")
    return TaskResult(
        task=info["task"],
        metric=HEADLINE_METRIC,
        accuracy=acc,
        n_items=len(item_means),
        samples_per_item=per_item,
        ci95=ci,
        ci_kind=kind,
        stderr=se,
        metrics=metrics,
        per_seed=info["per_seed"],
        decoding=info["decoding"],
        repeats=info["repeats"],
        seeds=info["seeds"],
        limit=req.limit,
        version=version,
        data={"source": dataset_source(info["task"], p.data_dir), "hash": data_hash(info["task"], p.data_dir)},
    )


def default_label(req: EvalRequest) -> str:
    base = Path(req.model).name if Path(req.model).exists() else req.model
    return base + (f" + {Path(req.adapter).name}" if req.adapter else "")


def model_device(lm) -> str | None:
    """The device the model's weights are on, i.e. where it ran (`--device cuda` without CUDA
    falls back to the CPU); None for a model without parameters."""
    weight = next(iter(lm.model.parameters()), None)
    return str(weight.device) if weight is not None else None


def model_record(req: EvalRequest, lm) -> ModelInfo:

    return ModelInfo(
        name_or_path=req.model,
        hash=folder_hash(req.model),
        adapter=req.adapter,
        adapter_hash=folder_hash(req.adapter),
        family=getattr(lm.model, "family", None),
        token_spec=vars(lm.spec) if hasattr(lm.spec, "__dict__") else None,
        device=model_device(lm),
    )


def gathered_request_log(lm) -> list[dict[str, Any]]:
    """The dllm request records of every data-parallel rank, rank by rank (each rank answers
    whole documents, so a document's repeats stay in order); rank 0 gets them all, the others
    an empty list. Every rank must call this (it is a collective)."""
    own = lm.take_request_log()
    if lm.world_size == 1:
        return own
    parts = lm.gather_object(own, dst=0)
    return [rec for part in parts for rec in part] if parts else []


def gathered_stats(lm) -> dict[str, float]:
    """The model's decode counters and forward-pass seconds, summed over data-parallel ranks.

    Every rank must call this (it is a collective); rank 0 gets the sums, others their own.
    """
    own = {**lm.stats, "forward_seconds": lm._forward_timer.seconds}
    if lm.world_size == 1:
        return own
    parts = lm.gather_object(own, dst=0)
    if not parts:
        return own
    keys = {k for part in parts for k in part}
    return {k: sum(float(part.get(k, 0.0)) for part in parts) for k in keys}


def provenance(st: dict[str, float], wall: float, world_size: int = 1) -> dict[str, Any]:
    """Versions, command and timing; under data parallelism counters and seconds are summed
    over the ranks (so tokens_per_s is per process, and wall time is rank 0's)."""
    decode_s = st.get("decode_seconds", 0.0)
    return {
        "versions": versions(),
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
        "world_size": world_size,
        "wall_time_s": round(wall, 3),
        "load_seconds": round(st.get("load_seconds", 0.0), 3),
        "decode_seconds": round(decode_s, 3),
        "forward_seconds": round(st.get("forward_seconds", 0.0), 3),
        "generated_tokens": int(st.get("generated_tokens", 0)),
        "tokens_per_s": (st.get("generated_tokens", 0) / decode_s) if decode_s else None,
        "nfe_per_token": (st.get("nfe", 0) / st["generated_tokens"]) if st.get("generated_tokens") else None,
        "requests_decoded": int(st.get("requests", 0)),
        "requests_from_cache": int(st.get("cached", 0)),
    }


def print_table(record: RunRecord) -> None:
    from tabulate import tabulate

    rows = []
    for key, t in record.tasks.items():
        lo, hi = t.ci95
        rows.append(
            [
                key,
                f"{100 * t.accuracy:.1f}",
                f"[{100 * lo:.1f}, {100 * hi:.1f}]",
                t.ci_kind,
                t.n_items,
                t.samples_per_item,
                f"{100 * (t.metrics.get('strict_match') or 0):.1f}",
                int(t.metrics.get("timeouts") or 0),
            ]
        )
    print(
        tabulate(
            rows,
            headers=["task", "acc %", "95% CI", "CI", "items", "samples/item", "strict %", "timeouts"],
            tablefmt="github",
        )
    )
    prov = record.provenance
    tps = prov.get("tokens_per_s")
    print(
        f"\nrun: {record.run_name}  protocol: {protocol_label(record)}  device: {record.model.device or '?'}"
        f"  wall: {prov['wall_time_s']:.1f}s" + (f"  tokens/s: {tps:.1f}" if tps else "") + f"  results: {record.where}"
    )


def refresh_leaderboard(runs_root: Path, out: Path) -> None:
    """Rewrite the leaderboard markdown from every finished run under `runs_root`."""
    runs = []
    for run in discover_runs(runs_root):  # a stray or foreign results.json is skipped, not fatal
        try:
            load_results(run)
        except ResultsError as err:
            print(f"warning: leaderboard skips {err}", file=sys.stderr)
            continue
        runs.append(run)
    if runs:
        write_leaderboard(runs, out, "markdown", DEFAULT_REFERENCE)


def run_series(req: EvalRequest, train_dir: Path, every: int = 1, include_base: bool = True) -> Path:
    """Evaluate a training run's checkpoints (every K-th, the last always, and the base model as
    step 0), skipping those already evaluated; write accuracy vs step as table + PNG."""
    if every < 1:
        raise InvalidSetting(f"--every must be >= 1, got {every}")
    checkpoints = checkpoint_dirs(Path(train_dir))
    if not checkpoints:
        raise MissingInput(f"no checkpoints (checkpoints/step-N) under {train_dir}")
    chosen = [c for i, c in enumerate(checkpoints, 1) if i % every == 0 or c == checkpoints[-1]]
    out_root = req.out / f"series-{Path(train_dir).name}"
    markers = [read_json_object(c / MARKER_FILE, "step", "base_model") for c in chosen]
    jobs = [(0, markers[0]["base_model"], None)] if include_base else []
    for ckpt, marker in zip(chosen, markers, strict=True):
        if marker["kind"] == "adapter":
            jobs.append((int(marker["step"]), marker["base_model"], str(ckpt)))
        else:
            jobs.append((int(marker["step"]), str(ckpt), None))
    points = []
    for step, model, adapter in jobs:
        name = f"step-{step:06d}"
        if not (out_root / name / RESULTS_FILE).is_file():
            say("eval", f"checkpoint step {step}")
            run_eval(
                EvalRequest(
                    **{
                        **req.__dict__,
                        "model": model,
                        "adapter": adapter,
                        "out": out_root,
                        "name": name,
                        "leaderboard": None,
                        "label": f"{Path(train_dir).name} step {step}",
                    }
                )
            )
        else:
            say("eval", f"step {step}: already evaluated")
        points.append((step, load_results(out_root / name)))
    table, plot, best = write_series(points, out_root)
    print(f"best checkpoint: step {best}\nseries: {table}\nplot: {plot}")
    curves = write_training_plot(Path(train_dir), points, out_root)
    if curves is not None:
        print(f"training curves: {curves}")
    return out_root


def write_training_plot(train_dir: Path, points, out_root: Path) -> Path | None:
    """training.png: the run's per-step curves (metrics.jsonl) and held-out accuracy per level."""
    from harness.eval.curves import metrics_rows, plot_training_curves

    rows = metrics_rows(train_dir)
    if not rows:
        return None
    levels: dict[int, dict[int, float]] = {}
    for step, record in points:
        for level, value in record.level_accuracy().items():
            levels.setdefault(level, {})[step] = value
    path = out_root / "training.png"
    plot_training_curves(
        [(train_dir.name, [rows])], path, f"{train_dir.name}", {train_dir.name: levels} if levels else None
    )
    return path
