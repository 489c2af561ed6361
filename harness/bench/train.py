"""RL step-time benchmark: where a GRPO and an IGPO step spend their time, with exact and fast
rollouts.

Runs a few training steps of each recipe as shipped (same model, data and seed) under each
rollout mode of ROLLOUT_MODES (fixed before measuring) and reports the mean seconds per step
split into generation / hinting / scoring / log-prob / backward, from metrics.jsonl.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.bench.common import machine_line, write_markdown
from harness.markdown import table
from igpo.training.run_folder import METRICS_FILE

PARTS = ("generation", "hinting", "scoring", "logprob", "backward")
ROLLOUT_MODES = {
    "exact": [],
    "exact, batched": ["batch_rollouts=true"],
    "threshold 0.9": ["decode.threshold=0.9"],
    "dual cache + threshold 0.9": ["decode.cache=dual", "decode.threshold=0.9"],
    "dual cache + threshold 0.9, batched": ["decode.cache=dual", "decode.threshold=0.9", "batch_rollouts=true"],
}
"""Rollout modes, as recipe overrides: exact decoding (one decoder call per group, as shipped);
a step's groups in one call (batch_rollouts); Fast-dLLM's parallel rule; and with its dual cache."""


@dataclass
class TrainBenchConfig:
    model: str | None = None
    """Model folder; default: the recipes' own model.path (the embedded testbed-sign)."""
    steps: int = 3
    """Training steps per (trainer, mode); the first is dropped (one-off warm-up costs)."""
    out: Path = Path("results/bench/train.md")


def _model_path(cfg: TrainBenchConfig, recipe_model: str) -> tuple[str, str]:
    """--model if given, else the recipes' own start model (the embedded testbed-sign)."""
    if cfg.model:
        return cfg.model, cfg.model
    return recipe_model, f"{recipe_model} (the recipes' model.path)"


def _run(kind: str, model: str, steps: int, out: Path, mode: list[str]) -> dict[str, float]:
    from igpo.config import load_config, resolve_recipe
    from igpo.training.rl import train_rl
    from igpo.training.rl_config import RLConfig

    overrides = [f"model.path={model}", f"max_steps={steps}", "checkpoint.every=0", "log.progress=false", *mode]
    cfg = load_config(RLConfig, resolve_recipe(f"{kind}_tiny"), overrides)
    train_rl(cfg, out)
    rows = [json.loads(x) for x in (out / METRICS_FILE).read_text().splitlines()]
    rows = rows[1:] if len(rows) > 1 else rows  # first step includes one-off warm-up costs
    summary = {p: statistics.mean(r.get(f"time_{p}", 0.0) for r in rows) for p in PARTS}
    summary["step"] = statistics.mean(r["step_time"] for r in rows)
    summary["all_wrong_ratio"] = statistics.mean(r["all_wrong_ratio"] for r in rows)
    summary["replaced"] = statistics.mean(r["replaced"] for r in rows)
    summary["tokens_per_s"] = statistics.mean(r["tokens_per_s"] for r in rows)
    return summary


def run(cfg: TrainBenchConfig) -> dict[str, dict[str, float]]:
    from igpo.config import load_config, resolve_recipe
    from igpo.training.rl_config import RLConfig

    recipe = load_config(RLConfig, resolve_recipe("grpo_tiny"))
    results: dict[str, dict[str, float]] = {}
    model, name = _model_path(cfg, recipe.model.path)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for kind in ("grpo", "igpo"):
            for i, (mode, overrides) in enumerate(ROLLOUT_MODES.items()):
                results[f"{kind.upper()} | {mode}"] = _run(kind, model, cfg.steps, scratch / f"{kind}-{i}", overrides)
    lines = [
        "# RL step-time benchmark",
        "",
        f"Machine: {machine_line()}. Model: {name}. Recipes grpo_tiny / igpo_tiny as shipped (G "
        f"{recipe.num_generations}, {recipe.prompts_per_step} prompts per step, mu {recipe.mu}, "
        f"{recipe.decode.gen_length}-token rollouts, {recipe.logprob_estimator} log-probs with "
        f"k {recipe.trajectory_group_steps}), {cfg.steps} steps each, the first dropped; mean seconds per step.",
        "Command: `igpo bench train`.",
        "",
        table(
            ["trainer", "rollouts", "step", "generation", "hinting", "scoring", "log-prob", "backward"]
            + ["all-wrong groups", "replaced / step", "rollout tokens/s"],
            [
                [*key.split(" | "), f"{r['step']:.2f}", *(f"{r[p]:.2f}" for p in PARTS)]
                + [f"{r['all_wrong_ratio']:.2f}", f"{r['replaced']:.1f}", f"{r['tokens_per_s']:.0f}"]
                for key, r in results.items()
            ],
        ),
    ]
    lines += [
        "",
        "generation = the first G rollouts of every group; hinting = building hint canvases plus the",
        "re-sampled (inpainted) rollouts of all-wrong groups; log-prob = old-policy and reference passes",
        "before the updates; backward = the mu updates (their log-prob passes included). batched = one",
        "decoder call for all groups of a step, and one for the re-samples of all its all-wrong groups.",
        "",
    ]
    text = "\n".join(lines)
    write_markdown(cfg.out, text)
    print(text)
    return results
