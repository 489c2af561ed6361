"""Scale-out benchmark: the same evaluation and the same 2-step RL run on 1 and on N processes,
checked equal, timed, and set beside the cores the machine has.

Equality is what the harness promises (docs/training.md "Several processes"): the same
samples.jsonl rows for the evaluation, the same logged groups per step and adapters within
ADAPTER_TOLERANCE for training. Speed-up is whatever the machine gives: on 2 cores, two
processes of one thread each share the cores that one process used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.bench.common import machine_line, write_markdown
from harness.markdown import table

ADAPTER_TOLERANCE = 1e-5
"""Largest |difference| between 1- and N-process adapters counted as equal (reduction order)."""
EQUAL_TRAIN_KEYS = ("reward", "accuracy", "all_wrong_ratio", "replaced", "groups", "etas")
EVAL_ARGS = ["--model", "testbed", "--tasks", "arith", "--limit", "40", "--batch-size", "20", "--no-leaderboard"]
TRAIN_ARGS = ["--recipe", "grpo_tiny", "max_steps=2", "checkpoint.every=2", "log.progress=false"]


@dataclass
class ScaleBenchConfig:
    processes: int = 2
    """Processes of the scaled run (against one)."""
    out: Path = Path("results/bench/scale.md")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def _launch(processes: int, args: list[str]) -> float:
    """Seconds of `igpo ARGS` on `processes` processes (accelerate launch unless one)."""
    from harness.train_cli import launch_command  # typer: not needed by the readers below (the GPU check)

    cmd = launch_command(processes, args) if processes > 1 else [sys.executable, "-m", "harness.cli", *args]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args[:3])} on {processes} process(es) failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - started


def _samples(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    return [{k: v for k, v in r.items() if k != "timed_out"} for r in rows]


def train_lines(out: Path) -> list[dict]:
    """A training run's metrics.jsonl, line by line, as written (nulls stay None, for equality)."""
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def same_training(one: Path, many: Path, weights: str, step: int = 2) -> tuple[bool, float]:
    """Same logged groups per step (EQUAL_TRAIN_KEYS), and the largest |difference| between the
    two runs' `weights` file (adapter_model.safetensors, model.safetensors) at `step`."""
    from safetensors.torch import load_file

    same = all(
        {k: a.get(k) for k in EQUAL_TRAIN_KEYS} == {k: b.get(k) for k in EQUAL_TRAIN_KEYS}
        for a, b in zip(train_lines(one), train_lines(many), strict=True)
    )
    wa, wb = (load_file(str(out / "checkpoints" / f"step-{step:06d}" / weights)) for out in (one, many))
    return same, max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def run(cfg: ScaleBenchConfig) -> str:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        times = {}
        for n in (1, cfg.processes):
            times[("eval", n)] = _launch(n, ["eval", *EVAL_ARGS, "--out", str(root / f"eval{n}"), "--name", "run"])
            times[("train", n)] = _launch(n, ["train", *TRAIN_ARGS, "--out", str(root / f"train{n}")])
        eval_equal = _samples(root / "eval1" / "run") == _samples(root / f"eval{cfg.processes}" / "run")
        train_equal, worst = same_training(root / "train1", root / f"train{cfg.processes}", "adapter_model.safetensors")
        for job, equal in (("eval arith --limit 40", eval_equal), ("train grpo_tiny max_steps=2", train_equal)):
            kind = job.split()[0]
            one, many = times[(kind, 1)], times[(kind, cfg.processes)]
            detail = "samples.jsonl equal" if kind == "eval" else f"groups equal, adapters within {worst:.1e}"
            rows.append([job, f"{one:.1f}", f"{many:.1f}", f"{one / many:.2f}x", "yes" if equal else "NO", detail])
    text = "\n".join(
        [
            "# Scale-out: 1 process against N",
            "",
            f"Machine: {machine_line()}; {os.cpu_count()} cores; each process runs one torch thread.",
            f"Command: `igpo bench scale --processes {cfg.processes}`. Seconds are whole commands (start-up included).",
            "",
            table(["job", "1 process, s", f"{cfg.processes} processes, s", "speed-up", "equal", "checked"], rows),
            "",
            "Equal: the N-process run is the one-process experiment (docs/training.md, docs/evaluation.md).",
            "Speed-up needs free cores or GPUs: N processes on fewer cores than N only share them.",
            "",
        ]
    )
    write_markdown(cfg.out, text)
    print(text)
    return text
