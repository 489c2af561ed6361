"""`igpo sft` and `igpo train`: recipe + key=value overrides -> a training run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.errors import friendly

RecipeOpt = Annotated[
    str, typer.Option("--recipe", "-r", help="Recipe YAML, or the name of a shipped one (igpo_tiny, grpo_llada, ...).")
]
OutOpt = Annotated[Path | None, typer.Option(help="Output folder (default: runs/train/<recipe name>).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing --out that igpo made (only what training wrote there).")
]
OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="Config overrides, e.g. max_steps=2 optim.lr=1e-5 igpo.resample=none.")
]


def _out(recipe: Path, out: Path | None) -> Path:
    return out if out is not None else Path("runs/train") / recipe.stem


def _run(
    config_cls, trainer, recipe: str, out: Path | None, resume: bool, overwrite: bool, overrides: list[str] | None
) -> None:
    """Load a recipe with overrides into `config_cls` and hand it to `trainer`."""
    from igpo.atomic import check_output_path
    from igpo.config import load_config, resolve_recipe
    from igpo.outputs import check_output

    path = resolve_recipe(recipe)
    check_output_path(_out(path, out), "--out", folder=True)
    check_output(_out(path, out), [path], clears=overwrite)  # the recipe (model, data: the trainer's check)
    cfg = load_config(config_cls, path, overrides or [])
    folder = trainer(cfg, _out(path, out), resume=resume, overwrite=overwrite)
    typer.echo(f"checkpoints: {folder / 'checkpoints'}")


@friendly
def sft(
    recipe: RecipeOpt,
    out: OutOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    overrides: OverridesArg = None,
) -> None:
    """Masked-diffusion SFT (LLaDA objective) with length-aligned filtering; LoRA or full weights."""
    from igpo.training.sft import SFTConfig, train_sft

    _run(SFTConfig, train_sft, recipe, out, resume, overwrite, overrides)


@friendly
def train(
    recipe: RecipeOpt,
    out: OutOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    overrides: OverridesArg = None,
) -> None:
    """GRPO / IGPO reinforcement learning with diffusion rollouts (igpo.resample: hints|plain|none)."""
    from igpo.training.rl import RLConfig, train_rl

    _run(RLConfig, train_rl, recipe, out, resume, overwrite, overrides)
