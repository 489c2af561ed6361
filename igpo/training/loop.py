"""The training skeleton SFT and RL share: output folder, accelerate, model and optimiser, the
forked RNG, the step loop with progress bar, metrics log and checkpoint cadence.

A trainer opens a `Session` (which loads the model), builds what its steps need from it, then
hands `run_steps` one function: `step(step, generator) -> metrics`. Every step's randomness
comes from (seed, step, rank) (seeds.step_generator), so a resumed run draws exactly what an
uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from igpo.errors import IgpoError
from igpo.models import TokenSpec
from igpo.progress import say
from igpo.training import sharding
from igpo.training.checkpoints import check_resume_config, resume_checkpoint, save_checkpoint
from igpo.training.model import build_model, make_optimizer, make_scheduler
from igpo.training.run_folder import MetricsLog, check_output_folder, config_inputs, prepare_output, run_kind
from igpo.training.seeds import Stream, check_seed, lone_cpu_launch, step_generator, torch_seed
from igpo.training.settings import CheckpointSettings, LogSettings, ModelSettings, OptimSettings, TrainingError


class TrainConfig(Protocol):
    """What the loop reads of a trainer's config (SFTConfig and RLConfig have it all)."""

    model: ModelSettings
    optim: OptimSettings
    checkpoint: CheckpointSettings
    log: LogSettings
    max_steps: int
    seed: int


@dataclass
class Session:
    """One training run's process-level state, ready for steps."""

    accelerator: Any
    model: nn.Module
    """Wrapped by accelerate (use model.base_module for the bare model)."""
    tokenizer: Any
    spec: TokenSpec
    optimizer: torch.optim.Optimizer
    scheduler: Any
    out: Path
    lock: Any = None
    """The output folder's lock (igpo.outputs), held by the main process until run_steps ends."""

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def open_session(
    cfg: TrainConfig, out: Path, *, resume: bool, overwrite: bool, optimizer_steps: int | None = None
) -> Session:
    """Check the output folder (a resume's config first, before any model load), load the
    model, create the output folder, build optimiser and scheduler (`optimizer_steps` updates,
    default max_steps) and hand both to accelerate."""
    from accelerate import Accelerator

    check_seed(cfg.seed)
    plan = check_launch_config(cfg, resume=resume)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    inputs, trainer = config_inputs(cfg), run_kind(cfg)
    command = "sft" if trainer == "sft" else "train"  # the progress lines' tag

    def check() -> None:  # one line, no model load
        check_output_folder(out, resume=resume, overwrite=overwrite, inputs=inputs, trainer=trainer)
        if resume:
            check_resume_config(out, cfg, sharded=plan is not None)

    on_main_first(accelerator, check)
    lone = lone_cpu_launch()
    if lone:
        say(command, lone)
    model, tokenizer = build_model(cfg.model, device=accelerator.device, seed=cfg.seed)
    if plan is not None:
        model = sharding.shard(model, plan)
        if accelerator.is_main_process:
            say(command, sharding.describe(model, plan, accelerator.num_processes, accelerator.device))
    lock = None
    if accelerator.is_main_process:
        lock = prepare_output(out, resume=resume, overwrite=overwrite, inputs=inputs, trainer=trainer)
    accelerator.wait_for_everyone()
    spec = model.token_spec
    try:
        optimizer = make_optimizer(model, cfg.optim)
        scheduler = make_scheduler(optimizer, cfg.optim, optimizer_steps or cfg.max_steps)
        if plan is not None:  # sharded already: no DDP wrapper (CPU), no second wrapping pass (GPU)
            optimizer = accelerator.prepare_optimizer(optimizer)
        else:
            model, optimizer = accelerator.prepare(model, optimizer)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    return Session(accelerator, model, tokenizer, spec, optimizer, scheduler, out, lock)


def check_launch_config(cfg: TrainConfig, *, resume: bool = False) -> sharding.ShardPlan | None:
    """The launch config's FSDP plan (None without one), refused in one line where the trainer
    would not honour it (sharding.requested, sharding.check_plan) rather than quietly run as
    plain DDP; DeepSpeed refused without a GPU or without its package (the igpo[deepspeed] extra)."""
    import importlib.util
    import os

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        if not torch.cuda.is_available():
            raise TrainingError(
                "the launch config asks for DeepSpeed, which igpo trains with on GPUs only; without one, "
                "launch with --multi_gpu (DDP over gloo), an FSDP2 config, or igpo train --processes N"
            )
        if importlib.util.find_spec("deepspeed") is None:
            raise TrainingError(
                "the launch config asks for DeepSpeed, which is not installed: pip install 'igpo[deepspeed]'"
            )
        if resume:
            raise TrainingError(
                "--resume under DeepSpeed: ZeRO-2 partitions the optimiser state over the processes and igpo's "
                "checkpoints do not gather it (their weights are whole); resume under DDP or FSDP, or start again"
            )
    plan = sharding.requested()
    if plan is not None:
        sharding.check_config(cfg)
    return plan


def on_main_first(accelerator, check: Callable[[], None]) -> None:
    """Run `check` on the main process only (the other processes would race its lock and its
    files) and raise its error, if any, on every process, before the model loads."""
    error = None
    if accelerator.is_main_process:
        try:
            check()
        except IgpoError as err:
            error = err
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error = broadcast_object_list([error])[0]
    if error is not None:
        raise error


StepFn = Callable[[int, torch.Generator], dict[str, Any]]
"""One training step: (0-based step, the step's generator) -> its metrics."""


def run_steps(
    session: Session,
    cfg: TrainConfig,
    step_fn: StepFn,
    *,
    resume: bool,
    desc: str,
    postfix: Callable[[dict[str, Any]], dict[str, str]],
) -> Path:
    """Steps from the newest checkpoint (or 0) to cfg.max_steps: seed the step, run it, add
    step_time and lr, log, checkpoint when due. Returns the output folder."""
    from tqdm import tqdm

    s = session
    with (
        s.lock or contextlib.nullcontext(),
        torch.random.fork_rng(devices=[]),
    ):  # dropout's global RNG: forked, the caller's is untouched
        start = resume_checkpoint(s.out, s.model, s.optimizer, s.scheduler, cfg) if resume else 0
        log = MetricsLog(s.out, cfg.log, cfg, resume_step=start, enabled=s.main)
        bar = tqdm(
            range(start, cfg.max_steps),
            initial=start,
            total=cfg.max_steps,
            desc=desc,
            disable=not (s.main and cfg.log.progress),
        )
        for step in bar:
            started = time.perf_counter()
            generator = step_generator(cfg.seed, step, s.rank)
            torch.manual_seed(torch_seed(cfg.seed, step, s.rank, stream=Stream.DROPOUT))
            metrics = step_fn(step, generator)
            metrics["step_time"] = time.perf_counter() - started
            metrics["lr"] = s.scheduler.get_last_lr()[0]
            log.log(step + 1, metrics)
            bar.set_postfix(**postfix(metrics))
            done = step + 1
            if cfg.checkpoint.due(done, cfg.max_steps):
                whole = sharding.gather_state(s.model, s.optimizer) if sharding.is_sharded(s.model) else None
                if s.main:
                    save_checkpoint(
                        s.out, done, s.model, s.tokenizer, s.optimizer, s.scheduler, cfg, metrics, cfg.checkpoint,
                        cfg.model.path, gathered=whole,
                    )  # fmt: skip
            s.accelerator.wait_for_everyone()
        log.close()
    return s.out
