"""The model a trainer updates: the policy with a trainable LoRA adapter (or every weight),
unwrapped from DDP and peft, its optimiser and learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from igpo.models import load_model, load_tokenizer
from igpo.training.seeds import Stream, torch_seed
from igpo.training.settings import ModelSettings, OptimSettings, TrainingError


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
