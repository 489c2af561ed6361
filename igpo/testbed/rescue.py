"""Where hints can teach: per arith level, how often the RL base's groups are all wrong, how often
hinted re-sampling rescues them, and how off-policy the rescued rollouts' hint tokens are.

`python -m igpo.testbed.rescue [--recipe igpo_tiny_released] [--per-level 32] [--out FILE] [key=value ...]` runs
the recipe's own rollout, reward and rescue stages (no update) on fresh problems of each level
(1-6 operations) and scores the hint tokens of every rescued rollout with the recipe's
estimator under the base policy. A level whose hint tokens the base finds very unlikely gives
gradients that push it far from its own samples (the issue's measured -9.5 nats per kept hint
token); a level with all-wrong groups that hints rescue at a moderate cost is where IGPO can work.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from igpo.arith import ArithConfig
from igpo.atomic import atomic_write_text
from igpo.config import load_config, resolve_recipe
from igpo.data import load_examples
from igpo.training.loss import completion_mask
from igpo.training.model import build_model
from igpo.training.rl import Trainer
from igpo.training.rl_config import RLConfig
from igpo.training.rollouts import StepTimer

LEVELS = range(1, 7)
PROBLEM_SEED = 11
"""arith seed of the measured problems (training uses seed 1, the test set its own)."""


@dataclass
class LevelRescue:
    level: int
    groups: int
    all_wrong: int
    rescued: int
    hint_logp: float | None
    """Mean log p of a rescued rollout's hint tokens under the base (mean over tokens)."""
    hint_tokens: int
    generated_logp: float | None
    """The same for the tokens the hinted rollouts generated themselves (the scale to compare)."""


def measure_level(trainer: Trainer, cfg: RLConfig, level: int, per_level: int) -> LevelRescue:
    """Roll out `per_level` fresh problems with `level` operations, G each, with IGPO's rescue."""
    arith = {**cfg.data.arith, "min_steps": level, "max_steps": level, "seed": PROBLEM_SEED + level}
    ArithConfig(**arith)  # checked here, before any decoding
    examples = load_examples(replace(cfg.data, arith=arith, arith_size=per_level))[:per_level]
    gen = torch.Generator().manual_seed(PROBLEM_SEED + level)
    groups = []
    for start in range(0, len(examples), cfg.prompts_per_step):
        groups += trainer.rollout_groups(examples[start : start + cfg.prompts_per_step], gen, StepTimer())
    hints, generated = [], []
    with torch.no_grad():
        for group in groups:
            if group.hinted is not None:
                logp = trainer.logprobs(trainer.model, group, None).logp
                own = completion_mask(group.completions, trainer.spec.eos_id) & ~group.hint_mask
                hints.append(logp[group.hint_mask])
                generated.append(logp[own & group.hinted[:, None]])
    hint = torch.cat(hints) if hints else torch.zeros(0)
    made = torch.cat(generated) if generated else torch.zeros(0)
    return LevelRescue(
        level=level,
        groups=len(groups),
        all_wrong=sum(g.all_wrong for g in groups),
        rescued=sum(g.all_wrong and g.replaced > 0 for g in groups),
        hint_logp=float(hint.mean()) if hint.numel() else None,
        hint_tokens=int(hint.numel()),
        generated_logp=float(made.mean()) if made.numel() else None,
    )


def render(recipe: str, rows: list[LevelRescue]) -> str:
    lines = [
        f"# Rescue by level ({recipe}, the untrained RL base; `python -m igpo.testbed.rescue`)",
        "",
        "| level | groups | all-wrong % | rescued % of all-wrong | hint tokens scored | mean log p: hint token | mean log p: generated token |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wrong = 100 * r.all_wrong / max(1, r.groups)
        rescued = f"{100 * r.rescued / r.all_wrong:.0f}" if r.all_wrong else "-"
        logp = "-" if r.hint_logp is None else f"{r.hint_logp:.2f}"
        own = "-" if r.generated_logp is None else f"{r.generated_logp:.2f}"
        lines.append(f"| {r.level} | {r.groups} | {wrong:.0f} | {rescued} | {r.hint_tokens} | {logp} | {own} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="igpo_tiny_released")
    parser.add_argument("--per-level", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("results/testbed/rescue_by_level.md"))
    parser.add_argument("overrides", nargs="*", help="recipe overrides, key=value")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(RLConfig, resolve_recipe(args.recipe), args.overrides)
    cfg.batch_rollouts = True
    model, tokenizer = build_model(cfg.model, device="cpu", seed=cfg.seed)
    trainer = Trainer(cfg, model, tokenizer, None)
    rows = []
    for level in LEVELS:
        rows.append(measure_level(trainer, cfg, level, args.per_level))
        print(render(args.recipe, rows).splitlines()[-1], flush=True)
    atomic_write_text(args.out, render(args.recipe, rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
