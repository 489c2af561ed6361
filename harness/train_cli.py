"""`igpo sft` and `igpo train`: recipe + key=value overrides -> a training run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.errors import friendly, launch_rank
from igpo.errors import InvalidSetting

SFT_EXAMPLES = {"recipes": ("sft_tiny", "sft_llada"), "overrides": ("max_steps=2", "optim.lr=1e-5", "batch_size=4")}
TRAIN_EXAMPLES = {
    "recipes": ("igpo_tiny", "grpo_llada"),
    "overrides": ("max_steps=2", "optim.lr=1e-5", "igpo.resample=none"),
}
"""What each command's --help shows as examples: every one runs with that command
(tests/test_bad_input.py loads each override into each recipe)."""


def _recipe_opt(examples: dict[str, tuple[str, ...]]) -> typer.models.OptionInfo:
    names = ", ".join(examples["recipes"])
    return typer.Option("--recipe", "-r", help=f"Recipe YAML, or the name of a shipped one ({names}, ...).")


def _overrides_arg(examples: dict[str, tuple[str, ...]]) -> typer.models.ArgumentInfo:
    return typer.Argument(help=f"Config overrides, e.g. {' '.join(examples['overrides'])}.")


SftRecipeOpt = Annotated[str, _recipe_opt(SFT_EXAMPLES)]
TrainRecipeOpt = Annotated[str, _recipe_opt(TRAIN_EXAMPLES)]
OutOpt = Annotated[Path | None, typer.Option(help="Output folder (default: runs/train/<recipe name>).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace an existing --out that igpo made for a run of this kind (only what training wrote there; "
        "never an SFT run with train, nor the reverse, nor a file igpo did not write).",
    ),
]
MAX_PROCESSES = 1024
"""Most processes --processes starts on one machine."""
ProcessesOpt = Annotated[
    int,
    typer.Option(
        "--processes",
        min=1,
        max=MAX_PROCESSES,
        help="Run on N processes (accelerate launch: one per GPU, or N CPU processes over gloo without GPUs). "
        "The recipe, data and --out are checked here first; prompts_per_step / batch_size count over all of them.",
    ),
]
FsdpOpt = Annotated[
    bool,
    typer.Option(
        "--fsdp",
        help="Shard the weights over the processes with FSDP2 (the shipped launch config "
        "igpo/recipes/accelerate/fsdp2.yaml): full-weight recipes (model.lora.enabled=false), a fixed-pass "
        "estimator (mean_field, elbo). Checkpoints hold the gathered weights.",
    ),
]
SftOverridesArg = Annotated[list[str] | None, _overrides_arg(SFT_EXAMPLES)]
TrainOverridesArg = Annotated[list[str] | None, _overrides_arg(TRAIN_EXAMPLES)]


def _out(recipe: Path, out: Path | None) -> Path:
    return out if out is not None else Path("runs/train") / recipe.stem


def _run(
    config_cls,
    trainer,
    recipe: str,
    out: Path | None,
    resume: bool,
    overwrite: bool,
    overrides: list[str] | None,
    processes: int = 1,
    fsdp: bool = False,
) -> None:
    """Load a recipe with overrides into `config_cls` and hand it to `trainer`; a start that
    fails leaves no trace in a folder that was absent or empty (igpo.outputs.leave_no_trace)."""
    from igpo.atomic import check_output_path
    from igpo.config import load_config, resolve_recipe
    from igpo.outputs import OWN, check_output, leave_no_trace

    path = resolve_recipe(recipe)
    target = _out(path, out)
    check_output_path(target, "--out", folder=True)
    check_output(target, [path], clears=overwrite)  # the recipe (model, data: the trainer's check)
    cfg = load_config(config_cls, path, overrides or [])
    if processes > 1 or fsdp:
        preflight(cfg, target, resume=resume, overwrite=overwrite, processes=processes, fsdp=fsdp)
        command = "train" if trainer.__name__ == "train_rl" else "sft"
        argv = [command, "--recipe", str(path), "--out", str(target), *(["--resume"] * resume)]
        from igpo.training.sharding import LAUNCH_CONFIG

        config = LAUNCH_CONFIG if fsdp else None
        raise SystemExit(launch(processes, [*argv, *(["--overwrite"] * overwrite), *(overrides or [])], config))
    made = not target.exists()
    bare = made or (target.is_dir() and all(p.name in OWN for p in target.iterdir()))
    try:
        folder = trainer(cfg, target, resume=resume, overwrite=overwrite)
    except BaseException:
        if bare:
            leave_no_trace(target, made=made)
        raise
    if launch_rank() == 0:
        typer.echo(f"checkpoints: {folder / 'checkpoints'}")


def preflight(cfg, target: Path, *, resume: bool, overwrite: bool, processes: int, fsdp: bool = False) -> None:
    """What a launch would refuse, refused here in one process: the config's own checks, the
    split of each step over `processes`, what FSDP needs, the training data and the output folder."""
    import torch

    from igpo.training.checkpoints import check_resume_config
    from igpo.training.run_folder import check_output_folder, config_inputs, run_kind
    from igpo.training.sharding import check_config

    gpus = torch.cuda.device_count()
    if 0 < gpus < processes:
        raise InvalidSetting(f"--processes {processes} needs {processes} GPUs; this machine has {gpus}")
    if run_kind(cfg) == "rl":
        from igpo.data import load_examples
        from igpo.training.rl_config import check_examples, local_prompts

        cfg.check()
        local_prompts(cfg, processes)
        check_examples(cfg, load_examples(cfg.data))
    else:
        from igpo.training.sft import local_batch

        local_batch(cfg, processes)
    if fsdp:
        check_config(cfg)
    check_output_folder(target, resume=resume, overwrite=overwrite, inputs=config_inputs(cfg), trainer=run_kind(cfg))
    if resume:
        check_resume_config(target, cfg, sharded=fsdp)


def launch_command(processes: int, argv: list[str], config: Path | None = None) -> list[str]:
    """The command that runs `igpo ARGV` on `processes` processes through accelerate launch
    (torchrun: real processes, gloo on a CPU), on a free local port; `config`: an accelerate
    launch config (its num_processes replaced by `processes`), default plain DDP."""
    import socket
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config is not None:
        cmd += ["--config_file", str(config), "--num_processes", str(processes)]
    else:
        cmd += ["--multi_gpu", "--num_processes", str(processes)]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*cmd, "--main_process_port", str(port), "-m", "harness.cli", *argv]


def launch(processes: int, argv: list[str], config: Path | None = None) -> int:
    """`igpo ARGV` on `processes` processes (launch_command); returns its exit code."""
    import subprocess

    return subprocess.run(launch_command(processes, argv, config), check=False).returncode


@friendly
def sft(
    recipe: SftRecipeOpt,
    out: OutOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    processes: ProcessesOpt = 1,
    fsdp: FsdpOpt = False,
    overrides: SftOverridesArg = None,
) -> None:
    """Masked-diffusion SFT (LLaDA objective) with length-aligned filtering; LoRA or full weights."""
    from igpo.training.sft import SFTConfig, train_sft

    _run(SFTConfig, train_sft, recipe, out, resume, overwrite, overrides, processes, fsdp)


@friendly
def train(
    recipe: TrainRecipeOpt,
    out: OutOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    processes: ProcessesOpt = 1,
    fsdp: FsdpOpt = False,
    overrides: TrainOverridesArg = None,
) -> None:
    """GRPO / IGPO reinforcement learning with diffusion rollouts (igpo.resample: hints|plain|none)."""
    from igpo.training.rl import train_rl
    from igpo.training.rl_config import RLConfig

    _run(RLConfig, train_rl, recipe, out, resume, overwrite, overrides, processes, fsdp)
