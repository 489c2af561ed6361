"""N processes run the same experiment as one: `accelerate launch --multi_gpu --num_processes 2`
(two real processes, gloo on the CPU) against one process, same recipe and seed.

prompts_per_step is global (split over processes) and every random draw of a prompt group is
keyed by the group's place in the step, so the logged groups, rewards and accuracy are equal and
the weights differ only by the order of the gradient reduction (tolerance: ADAPTER_TOLERANCE).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_checkpoint
from safetensors.torch import load_file
from typer.testing import CliRunner

from harness.bench.scale import ADAPTER_TOLERANCE  # measured: docs/training.md "Several processes"
from harness.cli import app
from harness.train_cli import launch_command

REPO = Path(__file__).resolve().parents[1]
EXACT_KEYS = ("reward", "accuracy", "all_wrong_ratio", "rescued_ratio", "replaced", "groups", "etas", "hinted_rollouts")
runner = CliRunner()


def launch(args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    """`igpo ARGS` under accelerate launch with `processes` CPU processes."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run(
        launch_command(processes, args), cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def adapter(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"step-{step:06d}" / "adapter_model.safetensors"))


def assert_same_experiment(one: Path, two: Path, steps: int) -> float:
    """Equal logged groups per step, adapters within tolerance; returns the largest difference."""
    a, b = metrics(one), metrics(two)
    assert [m["step"] for m in a] == [m["step"] for m in b] == list(range(1, steps + 1))
    for x, y in zip(a, b, strict=True):
        assert {k: x.get(k) for k in EXACT_KEYS} == {k: y.get(k) for k in EXACT_KEYS}
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-5)
        assert (x["processes"], y["processes"]) == (1, 2)
    wa, wb = adapter(one, steps), adapter(two, steps)
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst <= ADAPTER_TOLERANCE
    return worst


def test_grpo_tiny_on_two_processes_is_the_one_process_run(tmp_path):
    """Through igpo's own launcher (`--processes 2`); the next test uses accelerate launch."""
    args = ["train", "--recipe", "grpo_tiny", "max_steps=2", "checkpoint.every=2", "log.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "harness.cli", *args, "--processes", "2", "--out", str(tmp_path / "two")]
    two = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("checkpoints:") == 1  # said once, not once per process
    one = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    assert_same_experiment(tmp_path / "one", tmp_path / "two", 2)


def test_igpo_rescue_on_two_processes_is_the_one_process_run(tmp_path):
    """Hinted rescues, etas and the released loss (mu 2, KL) agree across process counts too."""
    model = save_tiny_checkpoint(tmp_path / "m")
    data = tmp_path / "train.jsonl"
    trace = "<reasoning> 3 and 4 is 59 </reasoning> <answer> \\boxed{59} </answer>"
    rows = [{"prompt": f"what is 3 and {i}", "answer": "59", "trace": trace} for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
model: {{path: {model}, lora: {{enabled: true, r: 4, alpha: 8, dropout: 0.0}}}}
data: {{source: jsonl, path: {data}}}
decode: {{gen_length: 16, block_length: 8, steps: 4, temperature: 1.0}}
hints: {{eta_low: 1.0, eta_high: 1.0, min_chunk: 1, max_chunk: 2, tail_free: 2}}
optim: {{lr: 1.0e-3, warmup_steps: 1}}
instruction: ""
num_generations: 4
prompts_per_step: 4
mu: 2
max_steps: 2
checkpoint: {{every: 2}}
log: {{progress: false}}
""")
    args = ["train", "--recipe", str(recipe)]
    two = launch([*args, "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    one = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    assert assert_same_experiment(tmp_path / "one", tmp_path / "two", 2) >= 0
    assert sum(m["hinted_rollouts"] for m in metrics(tmp_path / "one")) > 0  # the rescue ran


def test_two_process_bad_input_is_one_error_line(tmp_path):
    """`igpo train --processes 2` checks the recipe, data and output in one process first: one
    `error:` line, exit 2, no launch and nothing written."""
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "train", "--recipe", "grpo_tiny", "--processes", "2",
         "prompts_per_step=3", "--out", str(tmp_path / "o")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: prompts_per_step=3 does not divide over 2 processes (it counts prompts per step over all of them)"
    ]
    assert not (tmp_path / "o").exists()


def test_raw_launch_prints_the_error_once(tmp_path):
    """Under `accelerate launch` itself every process meets the bad input; only rank 0 says it
    (the launcher then adds its own failure report and exit code 1, which igpo cannot change)."""
    proc = launch(["train", "--recipe", "grpo_tiny", "prompts_per_step=3", "--out", str(tmp_path / "o")])
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: prompts_per_step=3 does not divide over 2 processes (it counts prompts per step over all of them)"
    ]


def test_sft_on_two_processes_is_the_one_process_run(tmp_path):
    """SFT's noise masks are drawn for the whole step and sliced, and prompts padded to the
    step's widest: a row trains the same on any process count."""
    args = ["sft", "--recipe", "sft_tiny", "max_steps=2", "checkpoint.every=2", "log.progress=false"]
    two = launch([*args, "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    one = runner.invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    for x, y in zip(metrics(tmp_path / "one"), metrics(tmp_path / "two"), strict=True):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-5)
    wa, wb = adapter(tmp_path / "one", 2), adapter(tmp_path / "two", 2)
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= ADAPTER_TOLERANCE


def test_a_cpu_launch_that_started_one_process_is_said():
    """accelerate's CPU launcher without an MPI hostfile runs the script once, setting only the
    rendezvous address: igpo says so instead of running as one process without a word."""
    from igpo.training.seeds import lone_cpu_launch

    lone = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert "started ONE process" in lone_cpu_launch(lone)
    assert lone_cpu_launch({"ACCELERATE_USE_CPU": "True"}) is None  # --cpu, one process asked
    assert lone_cpu_launch({**lone, "WORLD_SIZE": "2"}) is None  # torchrun
    assert lone_cpu_launch({**lone, "PMI_SIZE": "2"}) is None  # MPI
