"""FSDP2 for full-weight training: what a launch config asks for, applied with torch's
`fully_shard`, and the state a sharded run saves and resumes from.

igpo shards the model itself (each transformer block, then the root), on GPUs and on a CPU
process group alike, so the path a CPU test runs is the path an 8-GPU run takes; accelerate then
finds an already-sharded model and leaves it as it is. Checkpoints hold the gathered (full) state:
weights in the family's own format and optimiser state keyed by parameter name, written by the
main process, readable on any process count.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from igpo.training.settings import TrainingError

LAUNCH_CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "accelerate" / "fsdp2.yaml"
"""The shipped FSDP2 accelerate launch config (`igpo train --fsdp` launches with it)."""

FSDP_ENV = "ACCELERATE_USE_FSDP"
"""accelerate launch sets it (to "true") for a launch config with distributed_type FSDP."""

WRAP_DEFAULT = ("Block",)
"""The transformer block class igpo's network (LLaDA, Dream, igpo_tiny alike) is built of."""


@dataclass(frozen=True)
class ShardPlan:
    """What a sharded launch asked for, as igpo applies it."""

    wrap: tuple[str, ...] = WRAP_DEFAULT
    """Class names sharded as one unit each (all-gathered for their forward); the root last."""
    reshard_after_forward: bool = True
    """Free the gathered weights after each block's forward (FULL_SHARD), or keep them until
    backward (SHARD_GRAD_OP: more memory, one all-gather fewer)."""


REFUSED = {
    "FSDP_OFFLOAD_PARAMS": ("true", "fsdp_offload_params (CPU offload)"),
    "FSDP_ACTIVATION_CHECKPOINTING": ("true", "fsdp_activation_checkpointing (use model.gradient_checkpointing)"),
    "FSDP_STATE_DICT_TYPE": (
        "SHARDED_STATE_DICT",
        "fsdp_state_dict_type SHARDED_STATE_DICT (igpo saves FULL_STATE_DICT)",
    ),
}
"""Launch settings igpo's trainer does not honour, refused in one line rather than ignored."""


def requested(environ: dict[str, str] | None = None) -> ShardPlan | None:
    """The launch config's FSDP request (accelerate launch's FSDP_* variables), None without one;
    TrainingError naming a setting igpo would otherwise silently not honour."""
    env = os.environ if environ is None else environ
    if env.get(FSDP_ENV, "").lower() != "true":
        return None
    version = env.get("FSDP_VERSION", "1")
    if version != "2":
        raise TrainingError(
            f"the launch config asks for FSDP version {version}; igpo shards with FSDP2: fsdp_version: 2"
        )
    for key, (value, what) in REFUSED.items():
        if env.get(key, "").upper() == value.upper():
            raise TrainingError(f"the launch config asks for {what}, which igpo's trainer does not do")
    precision = env.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if precision != "no":
        raise TrainingError(
            f"the launch config asks for mixed_precision {precision} with FSDP; igpo's sharded model keeps "
            "model.dtype (set model.dtype, and mixed_precision: 'no')"
        )
    policy = env.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")
    if policy != "TRANSFORMER_BASED_WRAP":
        raise TrainingError(
            f"the launch config asks for fsdp_auto_wrap_policy {policy}; igpo wraps transformer blocks "
            "(TRANSFORMER_BASED_WRAP)"
        )
    names = tuple(n.strip() for n in env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if n.strip())
    reshard = env.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() != "false"
    reshard = reshard and env.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD") != "SHARD_GRAD_OP"
    return ShardPlan(wrap=names or WRAP_DEFAULT, reshard_after_forward=reshard)


def check_plan(model_settings: Any, estimator: Any = None) -> None:
    """Refuse what a sharded run cannot do, before any model loads: LoRA (FSDP is for full
    weights; an adapter run fits one device), and an estimator whose forward passes depend on the
    data (every process must run the same number of sharded passes)."""
    if model_settings.lora.enabled or model_settings.adapter:
        raise TrainingError(
            "FSDP shards full-weight training; this recipe trains a LoRA adapter (model.lora.enabled / "
            "model.adapter): set model.lora.enabled=false, or launch without FSDP (DDP: ddp.yaml)"
        )
    if estimator is not None and not estimator.fixed_passes:
        raise TrainingError(
            f"logprob_estimator={estimator.name} runs as many passes as the rollouts' data asks, which "
            "FSDP's all-gathers cannot follow across processes: use mean_field or elbo under FSDP"
        )


def check_config(cfg: Any) -> None:
    """check_plan on a trainer's config (SFTConfig has no estimator), and the RL settings a
    sharded run cannot follow: log.hint_gradients takes an extra gradient only on processes whose
    groups hold hinted rollouts, which the others would not join."""
    from igpo.logprobs import ESTIMATORS

    check_plan(cfg.model, ESTIMATORS.get(getattr(cfg, "logprob_estimator", "")))
    if getattr(cfg.log, "hint_gradients", False):
        raise TrainingError(
            "log.hint_gradients measures the hinted rollouts' gradient on the processes that have them, which "
            "FSDP's all-gathers cannot follow: set log.hint_gradients=false under FSDP"
        )


def shard(model: nn.Module, plan: ShardPlan) -> nn.Module:
    """Apply fully_shard to every module whose class is in plan.wrap, then to the root (in
    place; the default process group's mesh). TrainingError when no module matches."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    if not dist.is_initialized():
        raise TrainingError(
            "the environment asks for FSDP (ACCELERATE_USE_FSDP) but no process group was started: launch with "
            "igpo train --fsdp or accelerate launch --config_file fsdp2.yaml"
        )
    blocks = [m for m in model.modules() if type(m).__name__ in plan.wrap]
    if not blocks:
        raise TrainingError(
            f"the launch config wraps {', '.join(plan.wrap)} (fsdp_transformer_layer_cls_to_wrap), but the "
            f"model has no module of that class; igpo's blocks are {', '.join(WRAP_DEFAULT)}"
        )
    # The root returns its logits as a view; FSDP2 warns (once per process) that an in-place op
    # on that view would skip its backward hook. No caller changes the logits in place (the
    # estimators and the decoder compute new tensors from them), so the warning is noise here.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(.*\) returned a view tensor")
    for block in blocks:
        fully_shard(block, reshard_after_forward=plan.reshard_after_forward)
    fully_shard(model)  # the root keeps its weights after forward (fully_shard's default for it)
    model.shard_plan = plan  # how it was sharded: gathered() restores it, a reference copies it
    return model


def plan_of(model: nn.Module) -> ShardPlan | None:
    """The plan a model was sharded with (shard), None for a model that is not sharded."""
    return getattr(model, "shard_plan", None) if is_sharded(model) else None


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _fsdp_modules(model: nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Whole weights on every process for the duration (decoding): each process then runs as
    many forward passes as its own rollouts need, with no collective to keep in step. A no-op
    for a model that is not sharded."""
    plan = plan_of(model)
    modules = _fsdp_modules(model) if plan is not None else []
    for m in modules:
        m.unshard()
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m in modules:  # back to shard()'s settings: the blocks per plan, the root keeping its weights
            m.reshard()
            m.set_reshard_after_forward(plan.reshard_after_forward and m is not model, recurse=False)


def as_float(value: torch.Tensor | float | None) -> float | None:
    """A scalar, whether a tensor, a replicated DTensor (a sharded model's grad norm) or a float."""
    if value is None:
        return None
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    return float(value)


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def _inner(optimizer):
    """The torch optimiser inside accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def gather_state(model: nn.Module, optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, optimiser state), whole, on the main process (empty elsewhere), keyed by
    parameter name. A collective: every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    options = _options(cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    optim = get_optimizer_state_dict(model, _inner(optimizer), options=options)
    return weights, optim


def load_state(model: nn.Module, optimizer, weights: dict[str, torch.Tensor], optim: dict[str, Any]) -> None:
    """Put gathered state (gather_state's, read from disk by the main process; empty dicts on the
    others) back into a sharded model and its optimiser: the main process broadcasts it, each
    process keeps its own shards, so host memory holds one whole copy, not one per process. A
    collective: every process must call it."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    options = _options(broadcast_from_rank0=True)
    set_model_state_dict(model, weights, options=options)
    set_optimizer_state_dict(model, _inner(optimizer), optim, options=options)


def describe(model: nn.Module, plan: ShardPlan, processes: int, device: torch.device) -> str:
    """What runs, in one line (said once, by the main process)."""
    blocks = len(_fsdp_modules(model)) - 1  # the root is one too
    mode = "FULL_SHARD" if plan.reshard_after_forward else "SHARD_GRAD_OP"
    return (
        f"FSDP2 ({mode}): {blocks} x {'/'.join(plan.wrap)} and the root sharded over {processes} process(es) "
        f"on {device.type}; checkpoints hold the gathered weights"
    )
