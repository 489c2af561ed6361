"""`igpo ablate`: a grid of RL trainings (cells x seeds), every checkpoint evaluated, one report.

A grid (harness/ablate/grids/*.yaml or any YAML file, unknown keys rejected) names a base recipe and
cells, each a list of RLConfig `key=value` overrides, trained under several seeds from the same
start model (the recipe's model.path). For every (cell, seed) job:

    <out>/<cell>/seed<k>/                   train_rl output (checkpoints/, metrics.jsonl)
    <out>/<cell>/seed<k>/series-seed<k>/    run_series: step-000000 (the start model), step-N
    <out>/<cell>/seed<k>/DONE               written last; a rerun skips the job

The start model is evaluated once and copied into every series (`<out>/base/`). A job without
DONE resumes: training continues from its newest checkpoint, evaluation reuses finished steps.
The report (harness/ablate/report.py) goes to `<results>/<grid>.md` (+ .json) and its PNG plots
(accuracy vs step, all-wrong ratio vs step, final accuracy per cell, per level, training curves). `--launcher slurm` writes
one sbatch array job instead (one array task per job, `--only-index`); `--aggregate-only` then
writes the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.ablate.grid import (  # noqa: F401  (re-exported: harness.ablate.run is the public entry)
    BASE_DIR,
    CELL_NAME,
    DEFAULT_GRID,
    DEFAULT_OUT_ROOT,
    DEFAULT_RESULTS,
    DONE_FILE,
    GRID_DIR,
    LAUNCHERS,
    QUICK_GRID,
    SBATCH_FILE,
    SERIES_PREFIX,
    SLURM_LOGS,
    STEP_DIR,
    CellSpec,
    EvalSettings,
    GridSpec,
    Job,
    SlurmSettings,
    _check_grid,
    _parse_cells,
    check_grid_folders,
    claim_grid_folder,
    grid_jobs,
    job_config,
    load_grid,
    resolve_grid,
)
from harness.errors import UserError
from harness.eval.results import RESULTS_FILE, atomic_write_text
from igpo.progress import say


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(spec: GridSpec, cfg) -> str:
    """Hash of what a job's results depend on: its full training config and the eval settings."""
    from igpo.config import to_dict

    return _digest({"train": to_dict(cfg), "eval": asdict(spec.eval)})


# ---------------------------------------------------------------------------- running
@dataclass
class JobOutcome:
    """What happened to one job in this invocation."""

    job: Job
    skipped: bool
    train_s: float = 0.0
    eval_s: float = 0.0


def _say(message: str) -> None:
    say("ablate", message)


def _eval_request(spec: GridSpec, out: Path):
    from harness.eval.run import EvalRequest

    ev = spec.eval
    return EvalRequest(
        model="",
        tasks=list(ev.tasks),
        protocol=ev.protocol,
        limit=ev.limit,
        out=out,
        batch_size=ev.batch_size,
        device=ev.device,
        dtype=ev.dtype,
        leaderboard=None,
    )


def _base_cache(spec: GridSpec, model_path: str) -> Path:
    """Where the start model's evaluation is kept for every series of the grid."""
    from harness.eval.run import slug

    key = _digest({"model": model_path, "eval": asdict(spec.eval)})[:12]
    return spec.out_dir / BASE_DIR / f"{slug(Path(model_path).name)}-{key}"


def _copy_dir(src: Path, dest: Path) -> None:
    """Copy a folder so that `dest` appears complete or not at all (a concurrent copy wins)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        os.replace(tmp, dest)
    except OSError:
        if not (dest / RESULTS_FILE).is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_resume(job: Job, cfg) -> None:
    """A half-finished job resumes only under the config it was started with."""
    from igpo.config import to_dict
    from igpo.training.checkpoints import normalised_config, resumable_checkpoint

    last = resumable_checkpoint(job.folder)  # a damaged newest checkpoint: the one before
    if last is None:
        return
    saved = normalised_config(type(cfg), last[1])
    if saved != json.loads(json.dumps(to_dict(cfg))):
        raise UserError(
            f"{job.folder} was started with other settings than the grid gives now; delete that folder to rerun the job"
        )


def train_job(job: Job, cfg) -> None:
    """Train (or finish training) one job; no-op when its last step is checkpointed."""
    from igpo.training.checkpoints import checkpoint_step, latest_checkpoint, resumable_checkpoint
    from igpo.training.rl import train_rl

    if latest_checkpoint(job.folder) is not None:
        _check_resume(job, cfg)
        last = resumable_checkpoint(job.folder)
        if last is not None and checkpoint_step(last[0]) >= cfg.max_steps:
            return
        train_rl(cfg, job.folder, resume=True)
    else:  # nothing to keep: a fresh start (clears a run that died before its first checkpoint)
        train_rl(cfg, job.folder, overwrite=True)


def evaluate_job(spec: GridSpec, job: Job, cfg) -> None:
    """Evaluate every checkpoint of a job (step 0: the start model, shared across the grid)."""
    from harness.eval.run import run_series

    shared = _base_cache(spec, cfg.model.path)
    own = job.series / STEP_DIR.format(0)
    if (shared / RESULTS_FILE).is_file() and not (own / RESULTS_FILE).is_file():
        _copy_dir(shared, own)
    run_series(_eval_request(spec, job.folder), job.folder, spec.eval.every)
    if (own / RESULTS_FILE).is_file() and not (shared / RESULTS_FILE).is_file():
        _copy_dir(own, shared)


def run_job(spec: GridSpec, job: Job, count: int) -> JobOutcome:
    """Train and evaluate one job unless its DONE marker says it is finished."""
    cfg = job_config(spec, job)
    stamp = fingerprint(spec, cfg)
    where = f"{job.index + 1}/{count} {job.label}"
    if job.done_file.is_file():
        done = json.loads(job.done_file.read_text())
        if done.get("fingerprint") != stamp:
            raise UserError(
                f"{job.folder} finished under other settings than the grid gives now; "
                "delete that folder to rerun the job"
            )
        _say(f"{where}: skipped (finished)")
        return JobOutcome(job, skipped=True, train_s=done.get("train_s", 0.0), eval_s=done.get("eval_s", 0.0))
    _say(f"{where}: start ({' '.join(job.overrides)})")
    started = time.perf_counter()
    train_job(job, cfg)
    trained = time.perf_counter()
    evaluate_job(spec, job, cfg)
    finished = time.perf_counter()
    outcome = JobOutcome(job, skipped=False, train_s=trained - started, eval_s=finished - trained)
    record = {
        "cell": job.cell,
        "seed": job.seed,
        "overrides": job.overrides,
        "fingerprint": stamp,
        "train_s": round(outcome.train_s, 2),
        "eval_s": round(outcome.eval_s, 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_text(job.done_file, json.dumps(record, indent=2) + "\n")
    _say(f"{where}: done in {finished - started:.1f}s (train {outcome.train_s:.1f}s, eval {outcome.eval_s:.1f}s)")
    return outcome


def validate(spec: GridSpec, jobs: list[Job], check_eval: bool) -> None:
    """Fail before any work: every job's config must load, and (locally) the eval must plan."""
    configs = [job_config(spec, job) for job in jobs]
    check_grid_folders(spec, configs)
    if check_eval:
        from harness.eval.run import plan

        for path in sorted({c.model.path for c in configs}):
            req = _eval_request(spec, spec.out_dir)
            req.model = path
            plan(req)


def run_parallel(spec: GridSpec, jobs: list[Job], extra: list[str], workers: int) -> None:
    """Run unfinished jobs `workers` at a time, each a `--only-index` subprocess with one torch
    thread per core share (oversubscribed threads slow CPU training many times over)."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    logs = spec.out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for job in jobs:  # a finished job must match the grid as it is now (as run_job checks)
        if job.done_file.is_file():
            done = json.loads(job.done_file.read_text())
            if done.get("fingerprint") != fingerprint(spec, job_config(spec, job)):
                raise UserError(
                    f"{job.folder} finished under other settings than the grid gives now; "
                    "delete that folder to rerun the job"
                )
    todo = [j for j in jobs if not j.done_file.is_file()]
    _say(
        f"{len(jobs) - len(todo)} of {len(jobs)} jobs finished; {len(todo)} to run, {workers} at a time (logs: {logs})"
    )

    def one(job: Job) -> int:
        cmd = [sys.executable, "-m", "harness.cli", *_cli_args(spec, extra), "--only-index", str(job.index)]
        with open(logs / f"{job.index:03d}-{job.cell}-seed{job.seed}.log", "w") as log:
            code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        _say(f"{job.index + 1}/{len(jobs)} {job.label}: " + ("done" if code == 0 else f"failed (exit {code})"))
        return code

    with ThreadPoolExecutor(workers) as pool:
        failed = [j for j, code in zip(todo, pool.map(one, todo), strict=True) if code != 0]
    if failed:
        raise UserError(f"{len(failed)} job(s) failed, e.g. {failed[0].label}: see {logs}")


def run_grid(
    spec: GridSpec,
    *,
    launcher: str = "local",
    extra: Iterable[str] = (),
    only_index: int | None = None,
    aggregate_only: bool = False,
    workers: int = 1,
) -> Path:
    """Run (or, with slurm, script) the grid; returns the report or the sbatch file."""
    extra = list(extra)
    if workers < 1:
        raise UserError(f"--jobs must be >= 1, got {workers}")
    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    jobs = grid_jobs(spec, extra)
    if only_index is not None and not 0 <= only_index < len(jobs):
        raise UserError(f"--only-index must lie in 0..{len(jobs) - 1}, got {only_index}")
    from harness.ablate.report import write_report

    if aggregate_only:
        return write_report(spec, jobs)
    validate(spec, jobs, check_eval=launcher == "local")
    claim_grid_folder(spec)
    if launcher == "local":
        _say(f"grid {spec.name}: {len(jobs)} jobs -> {spec.out_dir}")
    if launcher == "slurm":
        if only_index is not None:
            raise UserError("--only-index runs one job here; it does not go with --launcher slurm")
        path = write_sbatch(spec, jobs, extra)
        _say(f"wrote {path} ({len(jobs)} array tasks). Submit it with: sbatch {path}")
        _say(f"then write the report with: {aggregate_command(spec, extra)}")
        return path
    chosen = jobs if only_index is None else [jobs[only_index]]
    started = time.perf_counter()
    if workers > 1 and only_index is None:
        run_parallel(spec, jobs, extra, workers)
        chosen = []
    for job in chosen:
        run_job(spec, job, len(jobs))
    if only_index is not None:
        _say(f"job {only_index} finished; when all are, run: {aggregate_command(spec, extra)}")
        return chosen[0].done_file
    report = write_report(spec, jobs)
    _say(f"grid {spec.name}: {len(jobs)} jobs in {time.perf_counter() - started:.1f}s; report: {report}")
    return report


# ---------------------------------------------------------------------------- slurm
def _cli_args(spec: GridSpec, extra: list[str]) -> list[str]:
    return [
        "ablate",
        "--grid",
        spec.source,
        "--out",
        str(spec.out_dir.resolve()),
        "--results",
        str(spec.results_dir.resolve()),
        *extra,
    ]


def aggregate_command(spec: GridSpec, extra: list[str]) -> str:
    return shlex.join([spec.slurm.command, *_cli_args(spec, extra), "--aggregate-only"])


def render_sbatch(spec: GridSpec, jobs: list[Job], extra: list[str]) -> str:
    """One sbatch array job: task i runs job i of the grid (`--only-index $SLURM_ARRAY_TASK_ID`)."""
    s = spec.slurm
    logs = spec.out_dir.resolve() / SLURM_LOGS
    options = [
        f"--job-name=igpo-ablate-{spec.name}",
        f"--array=0-{len(jobs) - 1}",
        f"--output={logs}/%A_%a.out",
        f"--time={s.time}",
        f"--cpus-per-task={s.cpus_per_task}",
    ]
    if s.gpus_per_task:
        options.append(f"--gpus-per-task={s.gpus_per_task}")
    options += [f"--{k}={v}" for k, v in (("mem", s.mem), ("partition", s.partition), ("account", s.account)) if v]
    options += list(s.extra)
    command = shlex.join([s.command, *_cli_args(spec, extra)])
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {o}" for o in options),
        "#",
        f"# igpo ablate grid {spec.name!r}: {len(jobs)} jobs (array index: cell, seed)",
        *(f"#   {j.index}: {j.cell} seed {j.seed}" for j in jobs),
        f"# When every task has finished: {aggregate_command(spec, extra)}",
        "set -euo pipefail",
        f"cd {shlex.quote(str(Path.cwd()))}",
        *s.setup,
        f'{command} --only-index "$SLURM_ARRAY_TASK_ID"',
        "",
    ]
    return "\n".join(lines)


def write_sbatch(spec: GridSpec, jobs: list[Job], extra: list[str]) -> Path:
    path = spec.out_dir / SBATCH_FILE
    (spec.out_dir / SLURM_LOGS).mkdir(parents=True, exist_ok=True)  # sbatch needs the log folder
    atomic_write_text(path, render_sbatch(spec, jobs, extra))
    return path


# ---------------------------------------------------------------------------- command
def ablate(
    *,
    grid: str | None = None,
    quick: bool = False,
    launcher: str = "local",
    only_index: int | None = None,
    aggregate_only: bool = False,
    out: Path | None = None,
    results: Path | None = None,
    overrides: list[str] | None = None,
    workers: int = 1,
) -> Path:
    """`igpo ablate`: pick the grid, apply folder options, run it (or script it, or report)."""
    if quick and grid is not None:
        raise UserError("--quick runs the shipped quick grid; it does not go with --grid")
    if only_index is not None and aggregate_only:
        raise UserError("--only-index and --aggregate-only exclude each other")
    bad = [o for o in overrides or [] if "=" not in o]
    if bad:
        raise UserError(f"override {bad[0]!r} is not key=value")
    spec = load_grid(QUICK_GRID if quick else grid or DEFAULT_GRID)
    if out is not None:
        spec.out = str(out)
    if results is not None:
        spec.results = str(results)
    return run_grid(
        spec,
        launcher=launcher,
        extra=overrides or [],
        only_index=only_index,
        aggregate_only=aggregate_only,
        workers=workers,
    )
