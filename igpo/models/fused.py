"""Fused projections for inference: one q/k/v matmul and one gate/up matmul per layer.

Checkpoints keep LLaDA's and Dream's separate q/k/v and gate/up weights, and training keeps
them separate too (LoRA targets them by name). For decoding, `fuse_projections` concatenates
them in place: each layer then launches two matmuls fewer for attention and one fewer for the
MLP, with the same output values (each output column is the same dot product). A fused model
still loads and saves the checkpoint's names: its state dict is split back on save and a
checkpoint's separate weights are concatenated on load.
"""

from __future__ import annotations

import torch
from torch import nn

from igpo.models.transformer import Attention, BidirectionalLM, SwiGLU

QKV = ("q_proj", "k_proj", "v_proj")
GATE_UP = ("gate_proj", "up_proj")
FUSED = {"qkv_proj": QKV, "gate_up_proj": GATE_UP}
"""Fused module name -> the checkpoint's module names it concatenates (in this order)."""


def _concat(parts: list[nn.Linear]) -> nn.Linear:
    first = parts[0]
    bias = first.bias is not None
    fused = nn.Linear(first.in_features, sum(p.out_features for p in parts), bias=bias, device="meta")
    grad = first.weight.requires_grad
    with torch.no_grad():
        fused.weight = nn.Parameter(torch.cat([p.weight for p in parts]), requires_grad=grad)
        if bias:
            fused.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=grad)
    return fused


def _fusable(module: nn.Module, names: tuple[str, ...]) -> bool:
    """Plain nn.Linear children (not LoRA-wrapped, not already fused)."""
    return all(type(getattr(module, n, None)) is nn.Linear for n in names)


def fuse_projections(model: nn.Module) -> nn.Module:
    """Fuse q/k/v and gate/up of every layer in place (a no-op for other models and for
    LoRA-wrapped projections); returns the model. Call after merging any adapter."""
    if not isinstance(model, BidirectionalLM) or getattr(model, "projections_fused", False):
        return model
    for module in model.modules():
        if isinstance(module, Attention) and _fusable(module, QKV):
            module.qkv_proj = _concat([getattr(module, n) for n in QKV])
            for n in QKV:
                delattr(module, n)
                setattr(module, n, None)
        elif isinstance(module, SwiGLU) and _fusable(module, GATE_UP):
            module.gate_up_proj = _concat([getattr(module, n) for n in GATE_UP])
            for n in GATE_UP:
                delattr(module, n)
                setattr(module, n, None)
    model.projections_fused = True
    model._register_state_dict_hook(_split_on_save)
    model._register_load_state_dict_pre_hook(_concat_on_load, with_module=True)
    return model


def _split_sizes(model: BidirectionalLM, fused_name: str) -> list[int]:
    cfg = model.config
    if fused_name == "qkv_proj":
        kv = cfg.n_kv_heads * cfg.head_dim
        return [cfg.d_model, kv, kv]
    return [cfg.mlp_hidden, cfg.mlp_hidden]


def _split_on_save(model, state, prefix, local_metadata):
    """State dict hook: `...qkv_proj.weight` becomes the checkpoint's q/k/v entries again."""
    for key in [k for k in state if any(f".{f}." in k for f in FUSED)]:
        fused_name = next(f for f in FUSED if f".{f}." in key)
        tensor = state.pop(key)
        for name, part in zip(FUSED[fused_name], tensor.split(_split_sizes(model, fused_name)), strict=True):
            state[key.replace(fused_name, name)] = part
    return state


def _concat_on_load(module, state, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """Load pre-hook: a checkpoint's separate q/k/v (gate/up) entries are concatenated."""
    for fused_name, names in FUSED.items():
        for key in [k for k in state if k.startswith(prefix) and f".{names[0]}." in k]:
            keys = [key.replace(names[0], n) for n in names]
            if all(k in state for k in keys):
                state[key.replace(names[0], fused_name)] = torch.cat([state.pop(k) for k in keys])
