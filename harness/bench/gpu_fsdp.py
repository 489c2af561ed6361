"""The GPU check's FSDP stage: the full-weight recipe (grpo_tiny_full, 2 steps) sharded with
`igpo train --fsdp` on every visible device, against one plain process on the same device:
equal groups and rewards, and how far the weights are apart. On a CPU (the tiny shape, in the
test suite) it runs on 2 gloo processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from harness.bench.scale import same_training, train_lines

RECIPE = "grpo_tiny_full"
STEPS = 2
HEADER = ["run", "processes", "device", "wall s", "reward per step", "max abs weight diff vs plain", "status"]
WEIGHT_TOLERANCE = 1e-6
"""Largest |difference| between sharded and plain float32 weights after STEPS counted as equal:
the gradients are reduce-scattered instead of summed in one process (measured 1.3e-7 on CPU)."""


def _train(out: Path, processes: int, fsdp: bool, timeout: float) -> tuple[float, str]:
    """(wall s, '' or the failure's last line) of one run through the CLI."""
    args = [sys.executable, "-m", "harness.cli", "train", "--recipe", RECIPE, "--out", str(out), "log.progress=false"]
    if fsdp:
        args += ["--processes", str(processes), "--fsdp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    try:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        return time.perf_counter() - started, "timed out"
    lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
    failure = "" if proc.returncode == 0 else (lines[-1] if lines else f"exit {proc.returncode}")
    return time.perf_counter() - started, failure


def fsdp_rows(workdir: Path, processes: int, device: str, deadline: float) -> list[list[str]]:
    """The stage's rows: the plain run, then the sharded one compared with it."""
    rows = []
    plain, sharded = workdir / "plain", workdir / "fsdp"
    for name, out, n, fsdp in (("plain", plain, 1, False), ("FSDP2", sharded, processes, True)):
        wall, failure = _train(out, n, fsdp, deadline - time.perf_counter())
        rewards = "" if failure else " / ".join(f"{m['reward']:.3f}" for m in train_lines(out))
        rows.append([name, str(n), device, f"{wall:.1f}", rewards, "", failure or "ran"])
        if failure:
            return rows
    same, diff = same_training(plain, sharded, "model.safetensors", STEPS)
    rows[-1][5] = f"{diff:.2e}"
    rows[-1][6] = "groups and rewards equal" if same else "groups or rewards DIFFER"
    if same and diff > WEIGHT_TOLERANCE:
        rows[-1][6] += f"; weights beyond {WEIGHT_TOLERANCE:g} (bf16 on a GPU rounds more)"
    return rows
