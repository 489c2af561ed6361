"""RL step-time benchmark: where a GRPO and an IGPO step spend their time on a tiny model.

Runs a few training steps of each (same model, data and seed) and reports the mean seconds per
step split into generation / hinting / scoring / log-prob / backward, from metrics.jsonl.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.bench.common import machine_line, write_markdown
from harness.markdown import table
from igpo.training.runtime import METRICS_FILE

PARTS = ("generation", "hinting", "scoring", "logprob", "backward")


@dataclass
class TrainBenchConfig:
    model: str | None = None
    """Model folder; default: the embedded testbed if built, else a random testbed-sized model."""
    steps: int = 4
    out: Path = Path("results/bench/train.md")


def _model_path(cfg: TrainBenchConfig, scratch: Path) -> tuple[str, str]:
    from igpo.models.loading import EMBEDDED_MODELS

    if cfg.model:
        return cfg.model, cfg.model
    if (EMBEDDED_MODELS["testbed"] / "config.json").is_file():
        return "testbed", "embedded testbed model"
    from igpo.testbed.build import init_model

    init_model(scratch / "init")
    return str(scratch / "init"), "untrained testbed-sized model (every group all wrong)"


def _run(kind: str, model: str, steps: int, out: Path) -> dict[str, float]:
    from igpo.config import load_config, resolve_recipe
    from igpo.training.rl import RLConfig, train_rl

    overrides = [
        f"model.path={model}",
        f"max_steps={steps}",
        "checkpoint.every=0",
        "log.progress=false",
        "prompts_per_step=2",
        "mu=2",
    ]
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
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        model, name = _model_path(cfg, scratch)
        results = {kind: _run(kind, model, cfg.steps, scratch / kind) for kind in ("grpo", "igpo")}
    lines = [
        "# RL step-time benchmark",
        "",
        f"Machine: {machine_line()}. Model: {name}. Recipes grpo_tiny / igpo_tiny (G=8, 2 prompts per",
        f"step, mu=2, 48-token rollouts), {cfg.steps} steps each, the first dropped; mean seconds per step.",
        "Command: `igpo bench train`.",
        "",
        table(
            ["trainer", "step", "generation", "hinting", "scoring", "log-prob", "backward"]
            + ["all-wrong groups", "replaced / step", "rollout tokens/s"],
            [
                [kind.upper(), f"{r['step']:.2f}", *(f"{r[p]:.2f}" for p in PARTS)]
                + [f"{r['all_wrong_ratio']:.2f}", f"{r['replaced']:.1f}", f"{r['tokens_per_s']:.0f}"]
                for kind, r in results.items()
            ],
        ),
    ]
    lines += [
        "",
        "hinting = building hint canvases plus the extra (inpainted) rollouts for all-wrong groups;",
        "log-prob = old-policy and reference passes before the updates; backward = the mu updates.",
        "",
    ]
    text = "\n".join(lines)
    write_markdown(cfg.out, text)
    print(text)
    return results
