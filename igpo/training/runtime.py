"""Training plumbing shared by SFT and RL: model + LoRA, optimiser, schedule, output folder,
checkpoints that resume exactly, and the metrics log."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from enum import IntEnum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from igpo.atomic import atomic_write_bytes
from igpo.config import ConfigError, read_yaml, to_dict
from igpo.errors import PATH_ERRORS, IgpoError, InvalidSetting
from igpo.jsonfile import finite, read_json_object
from igpo.models import load_model, load_tokenizer, save_model
from igpo.models.loading import damaged_file_errors, torch_load
from igpo.training.settings import CheckpointSettings, LogSettings, ModelSettings, OptimSettings

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step-"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
MARKER_FILE = "igpo_checkpoint.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


class TrainingError(InvalidSetting):
    """Bad training input (output folder, data, resume state); printed as one line by the CLI."""


OUTPUT_KIND = "train"
OUTPUT_NAMES = (CHECKPOINT_DIR, METRICS_FILE, "tensorboard", "wandb", "DONE", "series-*")
"""What a training folder holds (ablate adds DONE and the series of its evaluations)."""


def config_inputs(config: Any) -> list[str | None]:
    """The paths a training config reads (model, tokenizer, adapter, data): never an output."""
    from igpo.outputs import model_input

    model, data = config.model, getattr(config, "data", None)
    return [model_input(model.path), model_input(model.tokenizer), model.adapter, getattr(data, "path", None)]


def check_output_folder(
    out: Path, *, resume: bool, overwrite: bool, inputs: Any = (), trainer: str | None = None
) -> None:
    """Refuse (changing nothing) an output folder that is an input or holds one, a protected
    folder, a folder igpo did not make, a run of another `trainer` (run_kind), or a non-empty
    one without --resume / --overwrite."""
    from igpo import outputs

    if resume and overwrite:
        raise TrainingError("--resume and --overwrite exclude each other")
    outputs.check_output(out, inputs, clears=overwrite)
    outputs.ensure_free(out)
    outputs.check_variant(out, trainer)
    if resume:
        if not latest_checkpoint(out):
            raise TrainingError(f"nothing to resume: no checkpoint under {out / CHECKPOINT_DIR}")
        return
    exists = out.is_dir() and any(p.name not in outputs.OWN for p in out.iterdir())
    if exists and not overwrite:
        raise TrainingError(f"output folder {out} exists; pass --resume to continue or --overwrite to replace it")
    outputs.check_folder(out, kind=OUTPUT_KIND, known=OUTPUT_NAMES, overwrite=overwrite)


def run_kind(config: Any) -> str:
    """'sft' or 'rl': the trainer a config drives, recorded in its output folder's marker."""
    return "sft" if type(config).__name__ == "SFTConfig" else "rl"


def prepare_output(out: Path, *, resume: bool, overwrite: bool, inputs: Any = (), trainer: str | None = None):
    """Check the output folder, take its lock (one writer per folder), clear it with --overwrite
    (only what training writes, only in a folder igpo made for the same `trainer`). Returns the
    held lock: close it when the run ends."""
    from igpo import outputs

    check_output_folder(out, resume=resume, overwrite=overwrite, inputs=inputs, trainer=trainer)
    lock = outputs.acquire(out)
    try:
        check_output_folder(out, resume=resume, overwrite=overwrite, inputs=inputs, trainer=trainer)  # now, locked
        if not resume:
            outputs.claim_folder(out, kind=OUTPUT_KIND, known=OUTPUT_NAMES, overwrite=overwrite, variant=trainer)
    except BaseException:
        lock.close()
        raise
    return lock


RESUME_MAY_CHANGE = ("max_steps", "checkpoint", "log")
"""Top-level config keys a resumed run may change: they are applied and the next checkpoint
records them. Any other difference from the checkpoint's config.yaml is refused."""


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flat(inner, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def normalised_config(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """A saved config.yaml as today's config class reads it: keys added since take their
    defaults, so a checkpoint written before a new field does not count as changed."""
    from igpo.config import ConfigError, build

    try:
        return json.loads(json.dumps(to_dict(build(cls, raw))))
    except ConfigError:  # a key removed since: compare what both still have
        return json.loads(json.dumps(raw))


def check_resume_config(out: Path, config: Any) -> None:
    """Refuse to resume under settings other than the run's own (a resumed run that silently kept
    its old learning rate while its next checkpoint recorded the new one would lie)."""
    last = resumable_checkpoint(out)
    if last is not None:
        compare_config(last[0], last[1], config)


def resumable_checkpoint(out: Path) -> tuple[Path, dict[str, Any]] | None:
    """(folder, saved config) of the newest checkpoint whose trainer_state.json and config.yaml
    read, the one --resume starts from unless its weights are damaged (resume_checkpoint says
    why a newer one is skipped); None without checkpoints. When none reads, the newest one's
    problem is raised (TrainingError), before any model loads."""
    found = checkpoint_dirs(out)
    for path in reversed(found):
        try:
            checkpoint_step(path)
            return path, checkpoint_config(path)
        except TrainingError:
            continue
    if found:
        checkpoint_step(found[-1])
        checkpoint_config(found[-1])
    return None


def compare_config(last: Path, raw: dict[str, Any], config: Any) -> None:
    """Refuse `config` when it differs from the checkpoint's saved one (`raw`) outside
    RESUME_MAY_CHANGE."""
    out = last.parent.parent
    saved = _flat(normalised_config(type(config), raw))
    now = _flat(json.loads(json.dumps(to_dict(config))))
    changed = sorted(
        k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k.split(".")[0] not in RESUME_MAY_CHANGE
    )
    if changed:
        shown = ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in changed[:5])
        raise TrainingError(
            f"--resume continues {out} under its own settings, but these differ from "
            f"{last / CONFIG_FILE}: {shown}{' ...' if len(changed) > 5 else ''}; "
            "start a new run (--overwrite or another --out) to change them"
        )


def build_model(settings: ModelSettings, device: torch.device | str | None = None, seed: int = 0):
    """(policy, tokenizer): the model with a trainable LoRA adapter, or fully trainable.

    New LoRA weights are drawn under a forked RNG seeded from `seed`, so the same config always
    starts from the same adapter and the caller's global RNG is left untouched."""
    model = load_model(settings.path, dtype=settings.dtype, device=device)
    if settings.gradient_checkpointing:
        if not hasattr(model, "gradient_checkpointing"):
            raise TrainingError("model.gradient_checkpointing needs a native model (llada, Dream, igpo_tiny)")
        model.gradient_checkpointing = True
    tokenizer = load_tokenizer(settings.tokenizer or settings.path)
    lora = settings.lora
    if settings.adapter:
        from igpo.models.adapter import load_adapter

        model = load_adapter(model, settings.adapter, trainable=True)
    elif lora.enabled:
        from peft import LoraConfig, get_peft_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed(seed, 0, 0, Stream.ADAPTER_INIT))
            model = get_peft_model(
                model,
                LoraConfig(
                    r=lora.r,
                    lora_alpha=lora.alpha,
                    lora_dropout=lora.dropout,
                    target_modules=list(lora.target_modules),
                    bias="none",
                ),
            )
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return model, tokenizer  # peft wrappers forward attribute reads, `token_spec` included


def base_module(model: nn.Module) -> nn.Module:
    """The underlying BidirectionalLM (inside DDP and peft wrappers)."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner


def is_peft(model: nn.Module) -> bool:
    return hasattr(getattr(model, "module", model), "disable_adapter")


def make_optimizer(model: nn.Module, cfg: OptimSettings) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters")
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimSettings, total_steps: int):
    """Linear warm-up, then constant / cosine / linear decay over the remaining optimiser steps."""
    if cfg.schedule not in ("constant", "cosine", "linear"):
        raise TrainingError(f"optim.schedule must be constant, cosine or linear, got {cfg.schedule!r}")
    warm = max(0, cfg.warmup_steps)

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        span = max(1, total_steps - warm)
        done = min(1.0, (step - warm) / span)
        return 0.5 * (1 + math.cos(math.pi * done)) if cfg.schedule == "cosine" else 1.0 - done

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def checkpoint_dirs(out: Path) -> list[Path]:
    root = out / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.name.startswith(CHECKPOINT_PREFIX)
        and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
        and (p / MARKER_FILE).is_file()
    ]  # not step-N.tmp
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def latest_checkpoint(out: Path) -> Path | None:
    dirs = checkpoint_dirs(out)
    return dirs[-1] if dirs else None


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint's trainer_state.json records; TrainingError naming the file when it
    is missing, damaged, or records another step than the folder's name."""
    file = path / STATE_FILE
    try:
        step = read_json_object(file, "step")["step"]
    except (IgpoError, *PATH_ERRORS) as err:
        raise TrainingError(f"cannot read checkpoint {path} (damaged?): {err}") from None
    expected = int(path.name[len(CHECKPOINT_PREFIX) :])
    if isinstance(step, bool) or not isinstance(step, int) or step != expected:
        raise TrainingError(f"cannot read checkpoint {path} (damaged?): {file} records step {step!r}, not {expected}")
    return step


def checkpoint_config(path: Path) -> dict[str, Any]:
    """The training config a checkpoint's config.yaml records (a mapping); TrainingError naming
    the file when it is missing or damaged."""
    import yaml

    file = path / CONFIG_FILE
    try:
        raw = read_yaml(file, "config")
    except (OSError, yaml.YAMLError, UnicodeDecodeError, RecursionError, ConfigError) as exc:
        detail = str(exc).strip().splitlines()
        raise TrainingError(
            f"cannot read checkpoint {path} (damaged?): {file}: {detail[0] if detail else type(exc).__name__}"
        ) from None
    if not isinstance(raw, dict):
        raise TrainingError(f"cannot read checkpoint {path} (damaged?): {file} is not a mapping of settings")
    return raw


SEED_STRIDE = 1_000_003
"""Mixes (seed, step, rank) into one generator seed; a prime keeps streams apart."""


class Stream(IntEnum):
    """The named random streams of a training step (step_seed's `stream`): every source of
    randomness draws from its own, so adding draws to one never shifts another."""

    STEP = 0
    """The step's generator: data order within the step, rollouts and hints."""
    DROPOUT = 1
    """torch's global RNG (dropout) within a step."""
    SFT_CANVAS = 2
    """SFT: which canvas length the step trains on."""
    ESTIMATOR = 3
    """RL: one seed per prompt group for the log-prob estimator's random masks."""
    ADAPTER_INIT = 7
    """New LoRA weights (drawn once, at step 0)."""


STREAMS = 8
"""Streams per (seed, step, rank): Stream's values lie below it."""


def process_count() -> int:
    """Processes of this launch: WORLD_SIZE, which torchrun / accelerate launch set (1 alone).
    Read from the environment, not accelerate's state, which the session must make first."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def step_seed(seed: int, step: int, rank: int = 0, stream: int = 0) -> int:
    """The seed of one training step's randomness on one process.

    Deriving it from (seed, step, rank) instead of carrying generator state makes a resumed run
    draw exactly what an uninterrupted one would, on any number of processes. `stream` must lie
    in [0, STREAMS): a larger one would reuse another (step, rank)'s seed.
    """
    if not 0 <= stream < STREAMS or not 0 <= rank < SEED_STRIDE or not 0 <= step < SEED_STRIDE:
        raise InvalidSetting(
            f"seed stream {stream}, step {step} or rank {rank} out of range "
            f"(streams 0..{STREAMS - 1}, steps and ranks below {SEED_STRIDE})"
        )
    return ((seed * SEED_STRIDE + step) * SEED_STRIDE + rank) * STREAMS + stream


MAX_SEED = 2**63 - 1
"""The largest training `seed` (torch.Generator.manual_seed takes it; the data order is drawn
from it directly), and the modulus that brings step_seed's values into that range."""


def check_seed(seed: Any) -> None:
    """Refuse a training `seed` the generators would reject (one line naming it)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise TrainingError(f"seed must be an integer from 0 to {MAX_SEED} (2**63 - 1), got {seed!r}")


def torch_seed(seed: int, step: int, rank: int = 0, stream: int = 0) -> int:
    """step_seed in the range torch.manual_seed takes (unchanged for seeds below ~2 million; a
    larger one would overflow torch's 64 bits)."""
    return step_seed(seed, step, rank, stream) % MAX_SEED


def step_generator(seed: int, step: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(torch_seed(seed, step, rank, stream))


def save_checkpoint(
    out: Path,
    step: int,
    model: nn.Module,
    tokenizer: Any,
    optimizer,
    scheduler,
    config: Any,
    metrics: dict[str, Any],
    settings: CheckpointSettings,
    base_model: str,
) -> Path:
    """Write checkpoints/step-N atomically: weights (adapter or full, safetensors), tokenizer,
    optimiser + scheduler, config and last metrics; prune old ones if asked. Randomness needs
    no saved state: every step derives its generators from (seed, step, rank)."""
    final = out / CHECKPOINT_DIR / f"{CHECKPOINT_PREFIX}{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    unwrapped = getattr(model, "module", model)
    if is_peft(unwrapped):
        unwrapped.save_pretrained(str(tmp), save_embedding_layers=False)
        kind = "adapter"
    else:
        save_model(base_module(unwrapped), tmp)
        kind = "full"
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / OPTIMIZER_FILE)
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, "metrics": metrics}, indent=2) + "\n")
    (tmp / CONFIG_FILE).write_text(_yaml(to_dict(config)))
    (tmp / MARKER_FILE).write_text(
        json.dumps(
            {"step": step, "kind": kind, "base_model": base_model, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        )
        + "\n"
    )
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if settings.keep:
        for old in checkpoint_dirs(out)[: -settings.keep]:
            shutil.rmtree(old)
    return final


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> int:
    """Restore weights, optimiser and scheduler from a checkpoint; returns its step. A damaged
    file fails in one line naming it (TrainingError)."""
    try:
        return _load_checkpoint(path, model, optimizer, scheduler)
    except damaged_file_errors() as err:  # the checkpoint's files, not a bug or out of memory
        text = str(err).strip().splitlines()
        raise TrainingError(
            f"cannot read checkpoint {path} (damaged?): {type(err).__name__}: {text[0] if text else ''}"
        ) from None


def resume_checkpoint(out: Path, model: nn.Module, optimizer, scheduler, config: Any = None) -> int:
    """Restore the newest checkpoint that loads; a damaged one (a crash mid-save that left its
    marker, a disk fault: weights, optimiser state, trainer_state.json or config.yaml) is skipped
    with a message and the previous complete one is used. With `config`, the checkpoint resumed
    must have been saved under the same settings (compare_config). If none loads, the newest
    one's error is raised."""
    found = checkpoint_dirs(out)
    first_error = None
    for path in reversed(found):
        try:
            raw = checkpoint_config(path)
            step = load_checkpoint(path, model, optimizer, scheduler)
        except TrainingError as err:
            first_error = first_error or err
            print(f"warning: {err}; trying the previous checkpoint", file=sys.stderr)
            continue
        if config is not None:
            compare_config(path, raw, config)
        if path != found[-1]:
            print(f"resuming from {path} (step {step}): newer checkpoints could not be read", file=sys.stderr)
        return step
    if first_error is not None:
        raise first_error
    raise TrainingError(f"nothing to resume: no checkpoints under {out / CHECKPOINT_DIR}")


def _load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> int:
    step = checkpoint_step(path)  # before any weight is touched
    unwrapped = getattr(model, "module", model)
    if is_peft(unwrapped):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(unwrapped, load_file(str(path / "adapter_model.safetensors")))
    else:
        from safetensors.torch import load_file

        from igpo.models.families import FAMILIES

        base = base_module(unwrapped)
        family = next(f for f in FAMILIES.values() if f.name == base.family)
        state = {family.to_ours(k): v for k, v in load_file(str(path / "model.safetensors")).items()}
        base.load_state_dict(state)
    opt = torch_load(path / OPTIMIZER_FILE, map_location="cpu")  # load_state_dict moves it to the params' device
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    return step


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def _step_of(line: str, resume_step: int) -> bool:
    """Whether a metrics line belongs to the steps kept on resume; a torn line (a crash
    mid-write) is dropped with a warning instead of failing the resume."""
    if not line.strip():
        return False
    try:
        return int(json.loads(line)["step"]) <= resume_step
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        import logging

        logging.getLogger(__name__).warning("metrics.jsonl: dropped a damaged line (%.40s...)", line)
        return False


class MetricsLog:
    """metrics.jsonl in the output folder (one line per step), plus TensorBoard / W&B if asked."""

    def __init__(self, out: Path, settings: LogSettings, config: Any, resume_step: int = 0, enabled: bool = True):
        self.path = out / METRICS_FILE
        self.enabled = enabled
        self._tb = self._wandb = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        if resume_step and self.path.is_file():  # drop lines written after the checkpoint we resume
            kept = [ln for ln in self.path.read_text(errors="replace").splitlines() if _step_of(ln, resume_step)]
            atomic_write_bytes(self.path, ("\n".join(kept) + ("\n" if kept else "")).encode())
        elif self.path.exists():
            self.path.unlink()
        if settings.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise TrainingError("log.tensorboard needs the tensorboard package (pip install tensorboard)") from err
            self._tb = SummaryWriter(str(out / "tensorboard"))
        if settings.wandb:
            try:
                import wandb
            except ImportError as err:
                raise TrainingError("log.wandb needs the wandb package (pip install wandb)") from err
            self._wandb = wandb.init(project=settings.wandb_project, config=to_dict(config), dir=str(out))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **metrics}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(finite(record), allow_nan=False) + "\n")
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(numeric, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
