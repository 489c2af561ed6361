"""FSDP2 training (igpo.training.sharding) on a 2-process gloo group: torch's fully_shard on
every transformer block and the root, launched through accelerate with the shipped fsdp2.yaml
(`igpo train --fsdp`), gives the one-process run's rollouts and weights, saves gathered
checkpoints and resumes from them exactly; what it cannot honour is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_scale_out import EXACT_KEYS, metrics
from typer.testing import CliRunner

from harness.bench.gpu_fsdp import WEIGHT_TOLERANCE  # measured: docs/training.md "FSDP2"
from harness.cli import app
from igpo.logprobs import ESTIMATORS
from igpo.training.settings import ModelSettings, TrainingError
from igpo.training.sharding import WRAP_DEFAULT, ShardPlan, check_plan, requested

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def igpo(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


def weights(out: Path, step: int) -> dict:
    return load_file(str(out / "checkpoints" / f"step-{step:06d}" / "model.safetensors"))


def largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_sharded_rl_is_the_one_process_run_and_resumes_exactly(tmp_path):
    recipe = "grpo_tiny_full"
    two = igpo(["train", "--recipe", recipe, "--processes", "2", "--fsdp", "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    assert "FSDP2 (FULL_SHARD): 4 x Block and the root sharded over 2 process(es)" in two.stderr
    one = runner.invoke(app, ["train", "--recipe", recipe, "--out", str(tmp_path / "one"), "log.progress=false"])
    assert one.exit_code == 0, one.output
    for x, y in zip(metrics(tmp_path / "one"), metrics(tmp_path / "two"), strict=True):
        assert {k: x.get(k) for k in EXACT_KEYS} == {k: y.get(k) for k in EXACT_KEYS}
        assert x["kl"] == pytest.approx(y["kl"], abs=1e-7)  # the sharded reference policy
    assert largest_difference(weights(tmp_path / "one", 2), weights(tmp_path / "two", 2)) <= WEIGHT_TOLERANCE
    marker = json.loads((tmp_path / "two/checkpoints/step-000002/igpo_checkpoint.json").read_text())
    assert marker["sharded"] is True and marker["kind"] == "full"

    # a run stopped after step 1 and resumed, sharded, ends where the uninterrupted one did
    part = tmp_path / "part"
    first = igpo(["train", "--recipe", recipe, "--processes", "2", "--fsdp", "--out", str(part), "max_steps=1"])
    assert first.returncode == 0, first.stderr[-3000:]
    rest = igpo(["train", "--recipe", recipe, "--processes", "2", "--fsdp", "--out", str(part), "--resume"])
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert largest_difference(weights(part, 2), weights(tmp_path / "two", 2)) == 0.0

    # a damaged newest checkpoint: every process falls back to the previous one (none left waiting)
    (part / "checkpoints/step-000002/model.safetensors").write_bytes(b"not a safetensors file")
    again = igpo(["train", "--recipe", recipe, "--processes", "2", "--fsdp", "--out", str(part), "--resume"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("trying the previous checkpoint") == 1  # said once, not per process
    assert largest_difference(weights(part, 2), weights(tmp_path / "two", 2)) == 0.0

    # ... and is not resumed without FSDP (its optimiser state is keyed by name)
    plain = igpo(["train", "--recipe", recipe, "--out", str(part), "--resume", "max_steps=3"])
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [
        f"error: {part / 'checkpoints/step-000002'} was saved by an FSDP launch: resume it with an FSDP "
        "launch config (fsdp2.yaml)"
    ]


def test_sharded_sft_is_the_one_process_run(tmp_path):
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("""
model: {path: testbed, lora: {enabled: false}}
data: {source: arith, arith: {min_steps: 1, max_steps: 6, seed: 2}, arith_size: 200, max_completion_tokens: 48}
optim: {lr: 1.0e-4, grad_clip: 1.0, warmup_steps: 1}
batch_size: 8
max_steps: 2
checkpoint: {every: 2}
log: {progress: false}
""")
    two = igpo(["sft", "--recipe", str(recipe), "--processes", "2", "--fsdp", "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    one = runner.invoke(app, ["sft", "--recipe", str(recipe), "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    for x, y in zip(metrics(tmp_path / "one"), metrics(tmp_path / "two"), strict=True):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-5)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-5)  # a replicated DTensor, read whole
    assert largest_difference(weights(tmp_path / "one", 2), weights(tmp_path / "two", 2)) <= WEIGHT_TOLERANCE


FSDP = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}


def test_launch_config_read_as_igpo_applies_it():
    assert requested({}) is None
    assert requested(FSDP) == ShardPlan(wrap=WRAP_DEFAULT, reshard_after_forward=True)
    plan = requested({**FSDP, "FSDP_TRANSFORMER_CLS_TO_WRAP": "Block, Other", "FSDP_RESHARD_AFTER_FORWARD": "false"})
    assert plan == ShardPlan(wrap=("Block", "Other"), reshard_after_forward=False)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FSDP_VERSION": "1"}, "FSDP version 1"),
        ({"FSDP_OFFLOAD_PARAMS": "true"}, "fsdp_offload_params"),
        ({"FSDP_ACTIVATION_CHECKPOINTING": "true"}, "model.gradient_checkpointing"),
        ({"FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT"}, "SHARDED_STATE_DICT"),
        ({"FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, "SIZE_BASED_WRAP"),
        ({"ACCELERATE_MIXED_PRECISION": "bf16"}, "mixed_precision bf16"),
    ],
)
def test_what_igpo_would_not_honour_is_refused(env, named):
    with pytest.raises(TrainingError, match=named):
        requested({**FSDP, **env})


def test_lora_and_data_dependent_passes_are_refused():
    full = ModelSettings(path="testbed")
    full.lora.enabled = False
    check_plan(full, ESTIMATORS["mean_field"])
    with pytest.raises(TrainingError, match="logprob_estimator=trajectory"):
        check_plan(full, ESTIMATORS["trajectory"])
    from igpo.config import load_config, resolve_recipe
    from igpo.training.rl_config import RLConfig
    from igpo.training.sharding import check_config

    check_config(load_config(RLConfig, resolve_recipe("grpo_tiny_full"), []))
    with pytest.raises(TrainingError, match="log.hint_gradients"):
        check_config(load_config(RLConfig, resolve_recipe("grpo_tiny_full"), ["log.hint_gradients=true"]))
    lora = ModelSettings(path="testbed")
    lora.lora.enabled = True
    with pytest.raises(TrainingError, match="LoRA"):
        check_plan(lora)
