"""Checkpoints that resume exactly: checkpoints/step-N folders (weights, optimiser and
scheduler, trainer_state.json, config.yaml, the igpo_checkpoint.json marker), written atomically,
read back with damaged ones skipped, and a resume refused under other settings than the run's."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from igpo.config import ConfigError, read_yaml, to_dict
from igpo.errors import PATH_ERRORS, IgpoError
from igpo.jsonfile import read_json_object
from igpo.models import save_model
from igpo.models.files import damaged_file_errors, torch_load
from igpo.training import sharding
from igpo.training.model import base_module, is_peft
from igpo.training.settings import CheckpointSettings, TrainingError

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step-"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
MARKER_FILE = "igpo_checkpoint.json"
CONFIG_FILE = "config.yaml"

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


def check_resume_config(out: Path, config: Any, *, sharded: bool = False) -> None:
    """Refuse to resume under settings other than the run's own (a resumed run that silently kept
    its old learning rate while its next checkpoint recorded the new one would lie), or a
    sharded (FSDP) run's checkpoint without sharding and the other way round."""
    last = resumable_checkpoint(out)
    if last is not None:
        compare_config(last[0], last[1], config)
        check_sharding(last[0], sharded)


def check_sharding(path: Path, sharded: bool) -> None:
    """Refuse to resume a checkpoint under the other kind of launch: a sharded run's optimiser
    state is keyed by parameter name, an unsharded one's by position."""
    try:
        saved = bool(read_json_object(path / MARKER_FILE).get("sharded", False))
    except (IgpoError, *PATH_ERRORS) as err:
        raise TrainingError(f"cannot read checkpoint {path} (damaged?): {err}") from None
    if saved and not sharded:
        raise TrainingError(f"{path} was saved by an FSDP launch: resume it with an FSDP launch config (fsdp2.yaml)")
    if sharded and not saved:
        raise TrainingError(f"{path} was saved without FSDP: resume it without the FSDP launch config")


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
    gathered: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
) -> Path:
    """Write checkpoints/step-N atomically: weights (adapter or full, safetensors), tokenizer,
    optimiser + scheduler, config and last metrics; prune old ones if asked. Randomness needs
    no saved state: every step derives its generators from (seed, step, rank). A sharded model
    saves `gathered` (sharding.gather_state: its whole weights and optimiser state) instead."""
    final = out / CHECKPOINT_DIR / f"{CHECKPOINT_PREFIX}{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    unwrapped = getattr(model, "module", model)
    weights, optim = gathered if gathered is not None else (None, optimizer.state_dict())
    if is_peft(unwrapped):
        unwrapped.save_pretrained(str(tmp), save_embedding_layers=False)
        kind = "adapter"
    else:
        save_model(base_module(unwrapped), tmp, state=weights)
        kind = "full"
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    torch.save({"optimizer": optim, "scheduler": scheduler.state_dict()}, tmp / OPTIMIZER_FILE)
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, "metrics": metrics}, indent=2) + "\n")
    (tmp / CONFIG_FILE).write_text(_yaml(to_dict(config)))
    (tmp / MARKER_FILE).write_text(
        json.dumps(
            {
                "step": step,
                "kind": kind,
                "base_model": base_model,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                **({"sharded": True} if gathered is not None else {}),
            }
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
        raise _damaged(path, err) from None


def _tell(message: str) -> None:
    """A line on stderr, from the main process only (every process resumes, one says so)."""
    if int(os.environ.get("RANK", "0") or 0) == 0:
        print(message, file=sys.stderr)


def _damaged(path: Path, err: BaseException) -> TrainingError:
    text = str(err).strip().splitlines()
    return TrainingError(f"cannot read checkpoint {path} (damaged?): {type(err).__name__}: {text[0] if text else ''}")


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
            _tell(f"warning: {err}; trying the previous checkpoint")
            continue
        if config is not None:
            compare_config(path, raw, config)
        if path != found[-1]:
            _tell(f"resuming from {path} (step {step}): newer checkpoints could not be read")
        return step
    if first_error is not None:
        raise first_error
    raise TrainingError(f"nothing to resume: no checkpoints under {out / CHECKPOINT_DIR}")


def _load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> int:
    step = checkpoint_step(path)  # before any weight is touched
    unwrapped = getattr(model, "module", model)
    sharded = sharding.is_sharded(unwrapped)
    check_sharding(path, sharded)
    if sharded:
        return _load_sharded(path, step, unwrapped, optimizer, scheduler)
    if is_peft(unwrapped):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(unwrapped, load_file(str(path / "adapter_model.safetensors")))
    else:
        from safetensors.torch import load_file

        base = base_module(unwrapped)
        family = family_of(base)
        state = {family.to_ours(k): v for k, v in load_file(str(path / "model.safetensors")).items()}
        base.load_state_dict(state)
    opt = torch_load(path / OPTIMIZER_FILE, map_location="cpu")  # load_state_dict moves it to the params' device
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    return step


def _load_sharded(path: Path, step: int, model: nn.Module, optimizer, scheduler) -> int:
    """A sharded run's checkpoint: the main process reads it and broadcasts the state
    (sharding.load_state; the scheduler's as an object), so one whole copy is held in memory."""
    import torch.distributed as dist
    from safetensors.torch import load_file

    weights, optim, shared = {}, {}, [None, None]  # [scheduler state, the main process's error]
    if dist.get_rank() == 0:
        try:
            family = family_of(model)
            weights = {family.to_ours(k): v for k, v in load_file(str(path / "model.safetensors")).items()}
            opt = torch_load(path / OPTIMIZER_FILE, map_location="cpu")
            optim, shared[0] = opt["optimizer"], opt["scheduler"]
        except damaged_file_errors() as err:  # said on every process, none left waiting
            shared[1] = _damaged(path, err)
    dist.broadcast_object_list(shared, src=0)
    if shared[1] is not None:
        raise shared[1]
    sharding.load_state(model, optimizer, weights, optim)
    scheduler.load_state_dict(shared[0])
    return step


def family_of(model: nn.Module):
    """The checkpoint format (igpo.models.families) a native model saves in."""
    from igpo.models.families import FAMILIES

    return next(f for f in FAMILIES.values() if f.name == model.family)


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
