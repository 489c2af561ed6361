"""A bidirectional Llama-style transformer: the one network behind LLaDA, Dream and the tiny model.

Families differ only in sizes, biases, parameter names and whether logits are shifted; those
differences live in `igpo.models.families`. This module holds the math, readable in one sitting.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from igpo.errors import InvalidSetting


@dataclass
class ArchConfig:
    """Sizes and switches of the network; field names are the project's own (families map theirs)."""

    vocab_size: int = 256
    """Rows of the output layer (the checkpoint's padded embedding size)."""
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None
    """Key/value heads (grouped-query attention); None means n_heads."""
    mlp_hidden: int = 512
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    qkv_bias: bool = False
    """Bias on the q/k/v projections (Qwen2 / Dream has it, LLaDA does not)."""
    tie_embeddings: bool = False
    shifted_logits: bool = False
    """True when position i predicts token i+1 (Dream); decoders shift back."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Family-specific config keys kept verbatim so a saved config round-trips."""

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidSetting(f"{name} must be a positive integer, got {value!r}")
        for name in ("rope_theta", "rms_norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InvalidSetting(f"{name} must be a positive finite number, got {value!r}")
        for name in ("qkv_bias", "tie_embeddings", "shifted_logits"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidSetting(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise InvalidSetting(
                f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}: "
                "d_model must divide by n_heads and n_heads by n_kv_heads"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class KVCache:
    """Keys and values of every layer over a whole canvas ([B, kv_heads, L, head_dim] each).

    A full forward fills it; a window forward recomputes only positions [start, end) and reads
    every other position's keys/values from here (Fast-dLLM's prefix and dual caches).
    """

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    length: int = 0


@dataclass
class DLLMOutput:
    """What every model forward returns: logits [B, L, V] (unshifted or shifted, see config)."""

    logits: torch.Tensor


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, then scaled in the input dtype."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotary_tables(position_ids: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [B, 1, L, head_dim] in float32 for the given integer positions."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim)
    )
    freqs = position_ids.to(torch.float32)[..., None] * inv_freq  # [B, L, head_dim/2]
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE (the GPT-NeoX / Llama convention), applied in float32."""
    h = x.float()
    x1, x2 = h.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (h * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    """Bidirectional multi-head attention with grouped KV heads and a key padding mask."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        kv_dim = cfg.n_kv_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.d_model, kv_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, kv_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None,
        cache: KVCache | None = None,
        layer: int = 0,
        window: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        b, n, _ = x.shape
        hd = self.cfg.head_dim
        q = self.q_proj(x).view(b, n, self.cfg.n_heads, hd).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.cfg.n_kv_heads, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.cfg.n_kv_heads, hd).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            if window is None:  # full pass: remember every position's keys and values
                cache.keys.append(k)
                cache.values.append(v)
            else:  # window pass: fresh keys/values for the window, cached ones elsewhere
                start, end = window
                cache.keys[layer][:, :, start:end] = k
                cache.values[layer][:, :, start:end] = v
                k, v = cache.keys[layer], cache.values[layer]
        if self.cfg.n_kv_heads != self.cfg.n_heads:
            rep = self.cfg.n_heads // self.cfg.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=False)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class SwiGLU(nn.Module):
    """Feed-forward block: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, cos, sin, key_mask, cache=None, layer=0, window=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, key_mask, cache, layer, window)
        return x + self.mlp(self.mlp_norm(x))


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Rotary positions that ignore padding: the k-th real token gets position k-1, pads get 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class BidirectionalLM(nn.Module):
    """Masked-diffusion LM: embeddings, bidirectional blocks, final norm, output layer.

    `family` names the checkpoint format used by `save_pretrained` (see igpo.models.families).
    """

    def __init__(self, cfg: ArchConfig, family: str = "igpo_tiny") -> None:
        super().__init__()
        self.config = cfg
        self.family = family
        self.token_spec = None  # set by the loader (igpo.models.loading.TokenSpec)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.gradient_checkpointing = False
        """Recompute each block's activations in backward (memory for time) while training."""

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def init_weights(self, generator: torch.Generator | None = None, std: float = 0.02) -> None:
        """Normal(0, std) weights, residual outputs scaled by 1/sqrt(2 * n_layers) (GPT-2 style)."""
        out_std = std / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if p.ndim == 1:
                if name.endswith("bias"):
                    nn.init.zeros_(p)
                else:
                    nn.init.ones_(p)
            else:
                s = out_std if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                with torch.no_grad():
                    p.normal_(0.0, s, generator=generator)

    supports_kv_cache = True
    """The decoder may pass `cache` / `window` (prefix and dual KV caching)."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        window: tuple[int, int] | None = None,
    ) -> DLLMOutput:
        """Logits [B, n, V]. With `cache` and no `window`: a full pass that fills the cache. With
        a `window` (start, end): `input_ids` are the canvas positions [start, end) only, every other
        position's keys/values come from the cache, and `attention_mask` covers the whole canvas."""
        b, n = input_ids.shape
        full = cache.length if window is not None else n
        key_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            key_mask = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]: pads hidden as keys
            if position_ids is None:
                position_ids = positions_from_mask(attention_mask)
        if position_ids is None:
            position_ids = torch.arange(full, device=input_ids.device).expand(b, full)
        if window is not None:
            position_ids = position_ids[:, window[0] : window[1]]
        elif cache is not None:
            cache.keys.clear()
            cache.values.clear()
            cache.length = n
        cos, sin = rotary_tables(position_ids, self.config.head_dim, self.config.rope_theta)
        x = self.embed(input_ids)
        for i, layer in enumerate(self.layers):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(layer, x, cos, sin, key_mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, key_mask, cache, i, window)
        x = self.norm(x)
        head = self.embed.weight if self.lm_head is None else self.lm_head.weight
        return DLLMOutput(logits=F.linear(x, head))
