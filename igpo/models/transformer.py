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
    """Keys and values of every layer over a whole canvas, in buffers allocated once per decode.

    keys[i] / values[i]: [B, kv_heads, L, head_dim]. A full forward writes every position; a
    window forward recomputes only the window's positions (written in place with `index_copy_`)
    and reads every other position's keys/values from here (Fast-dLLM's prefix and dual caches).
    The buffers keep their addresses for the whole decode, so a captured CUDA graph can use them.
    """

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    length: int = 0

    @classmethod
    def allocate(cls, cfg: ArchConfig, batch: int, length: int, *, dtype: torch.dtype, device) -> KVCache:
        shape = (batch, cfg.n_kv_heads, length, cfg.head_dim)
        keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        return cls(keys=keys, values=values, length=length)

    def fits(self, batch: int, length: int, n_layers: int) -> bool:
        return len(self.keys) == n_layers and self.length == length and self.keys[0].shape[0] == batch


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
        h = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * h.to(x.dtype)


class Rotary:
    """RoPE tables for positions 0..length-1, built once and grown on demand (not per forward).

    cos and a signed sin [length, head_dim] in float32, so that rotate-half RoPE is
    x * cos + roll(x, head_dim / 2) * signed_sin: four ops instead of eight, the same values.
    """

    def __init__(self, head_dim: int, theta: float) -> None:
        self.head_dim, self.theta = head_dim, theta
        self.cos = self.signed_sin = None
        self.length = 0

    def tables(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.length < length or self.cos.device != device:
            positions = torch.arange(length, device=device)[None]
            cos, sin = rotary_tables(positions, self.head_dim, self.theta)
            half = self.head_dim // 2
            self.cos = cos[0, 0]
            self.signed_sin = torch.cat((-sin[0, 0, :, :half], sin[0, 0, :, half:]), dim=-1)
            self.length = length
        return self.cos, self.signed_sin


def rotary_tables(position_ids: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [B, 1, L, head_dim] in float32 for the given integer positions."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim)
    )
    freqs = position_ids.to(torch.float32)[..., None] * inv_freq  # [B, L, head_dim/2]
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE (the GPT-NeoX / Llama convention) in float32: x*cos + rotate_half(x)*sin,
    with rotate_half(x) * sin computed as roll(x, half) * signed_sin (the same products)."""
    h = x.float()
    return (h * cos + h.roll(x.shape[-1] // 2, dims=-1) * signed_sin).to(x.dtype)


class Attention(nn.Module):
    """Bidirectional multi-head attention with grouped KV heads and a key padding mask.

    The q/k/v projections are separate modules as in the checkpoints (LoRA targets them by name);
    `igpo.models.fused.fuse_projections` replaces them by one `qkv_proj` for inference.
    """

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        kv_dim = cfg.n_kv_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.d_model, kv_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, kv_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.qkv_proj: nn.Linear | None = None

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """[T, (heads + 2 kv_heads) * head_dim]: queries, keys and values side by side."""
        if self.qkv_proj is not None:
            return self.qkv_proj(x)
        return torch.cat((self.q_proj(x), self.k_proj(x), self.v_proj(x)), dim=-1)

    def forward(self, x, shape, cos, sin, key_mask, cache=None, layer=0, window=None) -> torch.Tensor:
        """x [B*n, d] -> [B*n, d]; `window` (positions [n]) writes this window's keys/values into
        `cache` and attends over the whole cached canvas."""
        b, n = shape
        heads, kv_heads, hd = self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.head_dim
        qkv = self.project(x).view(b, n, heads + 2 * kv_heads, hd)
        qk = apply_rotary(qkv[:, :, : heads + kv_heads], cos, sin)  # one rotation for q and k
        q = qk[:, :, :heads].transpose(1, 2)
        k = qk[:, :, heads:].transpose(1, 2)
        v = qkv[:, :, heads + kv_heads :].transpose(1, 2)
        if cache is not None:
            if window is None:  # full pass: remember every position's keys and values
                cache.keys[layer].copy_(k)
                cache.values[layer].copy_(v)
            else:  # window pass: fresh keys/values for the window, cached ones elsewhere
                cache.keys[layer].index_copy_(2, window, k)
                cache.values[layer].index_copy_(2, window, v)
                k, v = cache.keys[layer], cache.values[layer]
        if kv_heads != heads:
            rep = heads // kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=False)
        return self.o_proj(out.transpose(1, 2).reshape(b * n, -1))


class SwiGLU(nn.Module):
    """Feed-forward block: down(silu(gate(x)) * up(x)); `gate_up_proj` once fused for inference."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_hidden, cfg.d_model, bias=False)
        self.gate_up_proj: nn.Linear | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)); x is [B*n, d]."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, shape, cos, sin, key_mask, cache=None, layer=0, window=None):
        x = x + self.attn(self.attn_norm(x), shape, cos, sin, key_mask, cache, layer, window)
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
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta)

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
        window: torch.Tensor | tuple[int, int] | None = None,
    ) -> DLLMOutput:
        """Logits [B, n, V]. With `cache` and no `window`: a full pass that fills the cache (its
        buffers are allocated here unless they already fit). With a `window` (positions [n] as a
        LongTensor, or (start, end)): `input_ids` are those canvas positions only, every other
        position's keys/values come from the cache, and `attention_mask` covers the whole canvas.
        Without `position_ids` an all-ones mask is dropped (one host check); with them the mask is
        used as given and nothing is read back from the device."""
        b, n = input_ids.shape
        full = cache.length if window is not None else n
        key_mask = None
        if attention_mask is not None:
            if position_ids is None and bool(attention_mask.all()):
                attention_mask = None
            else:
                key_mask = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]: pads hidden as keys
                if position_ids is None:
                    position_ids = positions_from_mask(attention_mask)
        if isinstance(window, tuple):
            window = torch.arange(window[0], window[1], device=input_ids.device)
        cos_table, sin_table = self.rotary.tables(full, input_ids.device)
        if position_ids is None:
            cos = cos_table[:full] if window is None else cos_table[window]
            sin = sin_table[:full] if window is None else sin_table[window]
            cos, sin = cos[None, :, None], sin[None, :, None]  # [1, n, 1, head_dim]
        else:
            if window is not None:
                position_ids = position_ids.index_select(1, window)
            cos, sin = cos_table[position_ids][:, :, None], sin_table[position_ids][:, :, None]
        if cache is not None and window is None and not cache.fits(b, n, len(self.layers)):
            fresh = KVCache.allocate(self.config, b, n, dtype=self.dtype, device=input_ids.device)
            cache.keys, cache.values, cache.length = fresh.keys, fresh.values, n
        x = self.embed(input_ids).view(b * n, -1)
        for i, layer in enumerate(self.layers):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(layer, x, (b, n), cos, sin, key_mask, use_reentrant=False)
            else:
                x = layer(x, (b, n), cos, sin, key_mask, cache, i, window)
        x = self.norm(x)
        head = self.embed.weight if self.lm_head is None else self.lm_head.weight
        return DLLMOutput(logits=F.linear(x, head).view(b, n, -1))
