"""Checkpoint formats: how LLaDA, Dream and the tiny model name their config fields and weights.

Each family maps its published `config.json` onto `ArchConfig` and its parameter names onto the
shared network's, both ways, so published checkpoints load as they are and save back unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from igpo.errors import BadFile
from igpo.models.transformer import ArchConfig


@dataclass(frozen=True)
class TokenDefaults:
    """Special token ids a family uses when neither config nor tokenizer says otherwise."""

    mask_id: int | None
    eos_id: int | None
    eot_id: int | None
    pad_id: int | None


@dataclass(frozen=True)
class Family:
    """One checkpoint format: config translation, weight-name rules and token defaults."""

    name: str
    model_type: str
    key_rules: tuple[tuple[str, str], ...]
    """(ours, theirs) name prefixes; `{i}` stands for a layer index."""
    tokens: TokenDefaults
    shifted_logits: bool = False

    def to_theirs(self, key: str) -> str:
        return _rename(key, self.key_rules, forward=True)

    def to_ours(self, key: str) -> str:
        return _rename(key, self.key_rules, forward=False)


def _rename(key: str, rules: tuple[tuple[str, str], ...], forward: bool) -> str:
    for ours, theirs in rules:
        src, dst = (ours, theirs) if forward else (theirs, ours)
        pattern = "^" + re.escape(src).replace(re.escape("{i}"), r"(?P<i>\d+)")
        m = re.match(pattern, key)
        if m:
            prefix = dst.replace("{i}", m.group("i")) if "i" in m.groupdict() else dst
            return prefix + key[m.end() :]
    raise BadFile(f"unexpected parameter name {key!r}")


LLADA = Family(
    name="llada",
    model_type="llada",
    key_rules=(
        ("embed.", "model.transformer.wte."),
        ("layers.{i}.attn_norm.", "model.transformer.blocks.{i}.attn_norm."),
        ("layers.{i}.attn.q_proj.", "model.transformer.blocks.{i}.q_proj."),
        ("layers.{i}.attn.k_proj.", "model.transformer.blocks.{i}.k_proj."),
        ("layers.{i}.attn.v_proj.", "model.transformer.blocks.{i}.v_proj."),
        ("layers.{i}.attn.o_proj.", "model.transformer.blocks.{i}.attn_out."),
        ("layers.{i}.mlp_norm.", "model.transformer.blocks.{i}.ff_norm."),
        ("layers.{i}.mlp.gate_proj.", "model.transformer.blocks.{i}.ff_proj."),
        ("layers.{i}.mlp.up_proj.", "model.transformer.blocks.{i}.up_proj."),
        ("layers.{i}.mlp.down_proj.", "model.transformer.blocks.{i}.ff_out."),
        ("norm.", "model.transformer.ln_f."),
        ("lm_head.", "model.transformer.ff_out."),
    ),
    tokens=TokenDefaults(mask_id=126336, eos_id=126081, eot_id=126348, pad_id=126081),
)

DREAM = Family(
    name="dream",
    model_type="Dream",
    key_rules=(
        ("embed.", "model.embed_tokens."),
        ("layers.{i}.attn_norm.", "model.layers.{i}.input_layernorm."),
        ("layers.{i}.attn.", "model.layers.{i}.self_attn."),
        ("layers.{i}.mlp_norm.", "model.layers.{i}.post_attention_layernorm."),
        ("layers.{i}.mlp.", "model.layers.{i}.mlp."),
        ("norm.", "model.norm."),
        ("lm_head.", "lm_head."),
    ),
    tokens=TokenDefaults(mask_id=151666, eos_id=151643, eot_id=151645, pad_id=151643),
    shifted_logits=True,
)

TINY = Family(
    name="igpo_tiny",
    model_type="igpo_tiny",
    key_rules=(("", ""),),
    tokens=TokenDefaults(mask_id=None, eos_id=None, eot_id=None, pad_id=None),
)

FAMILIES = {f.model_type.lower(): f for f in (LLADA, DREAM, TINY)}

# LLaDA config switches this implementation supports: (value it requires, the published code's
# default when the key is absent). The released checkpoints set every one of them explicitly.
_LLADA_REQUIRED = {
    "block_type": ("llama", "sequential"),
    "layer_norm_type": ("rms", "default"),
    "alibi": (False, False),
    "rope": (True, False),
    "attention_layer_norm": (False, False),
    "scale_logits": (False, False),
    "input_emb_norm": (False, False),
    "clip_qkv": (None, None),
    "activation_type": ("silu", "swiglu"),
    "include_bias": (False, False),
}


def family_of(config: dict[str, Any]) -> Family | None:
    """The family a config.json belongs to, by its model_type, or None if not native."""
    return FAMILIES.get(str(config.get("model_type", "")).lower())


def arch_from_config(family: Family, cfg: dict[str, Any]) -> ArchConfig:
    """Translate a family's config.json into ArchConfig, refusing switches we do not implement."""
    if family is LLADA:
        for key, (want, default) in _LLADA_REQUIRED.items():
            got = cfg.get(key, default)
            if got != want:
                raise BadFile(f"unsupported LLaDA config: {key}={got!r} (native loader needs {want!r})")
        qkv_bias = cfg.get("include_qkv_bias")
        return ArchConfig(
            vocab_size=int(cfg.get("embedding_size") or cfg["vocab_size"]),
            d_model=int(cfg["d_model"]),
            n_layers=int(cfg["n_layers"]),
            n_heads=int(cfg["n_heads"]),
            n_kv_heads=int(cfg.get("n_kv_heads") or cfg["n_heads"]),
            mlp_hidden=int(cfg.get("mlp_hidden_size") or cfg.get("mlp_ratio", 4) * cfg["d_model"]),
            rope_theta=float(cfg.get("rope_theta", 10000.0)),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            qkv_bias=bool(qkv_bias) if qkv_bias is not None else False,
            tie_embeddings=bool(cfg.get("weight_tying", True)),
            shifted_logits=False,
            extra=cfg,
        )
    if family is DREAM:
        if cfg.get("hidden_act", "silu") != "silu":
            raise BadFile(f"unsupported Dream config: hidden_act={cfg['hidden_act']!r}")
        if cfg.get("use_sliding_window"):
            raise BadFile("unsupported Dream config: use_sliding_window=True")
        if cfg.get("rope_scaling"):
            raise BadFile(f"unsupported Dream config: rope_scaling={cfg['rope_scaling']!r}")
        return ArchConfig(
            vocab_size=int(cfg["vocab_size"]),
            d_model=int(cfg["hidden_size"]),
            n_layers=int(cfg["num_hidden_layers"]),
            n_heads=int(cfg["num_attention_heads"]),
            n_kv_heads=int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]),
            mlp_hidden=int(cfg["intermediate_size"]),
            rope_theta=float(cfg.get("rope_theta", 10000.0)),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            qkv_bias=True,
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            shifted_logits=True,
            extra=cfg,
        )
    known = {f.name for f in fields(ArchConfig)} - {"extra"}
    arch = {k: v for k, v in cfg.items() if k in known}
    return ArchConfig(**arch, extra={k: v for k, v in cfg.items() if k not in known})


def config_from_arch(family: Family, arch: ArchConfig) -> dict[str, Any]:
    """The config.json a family would write for this architecture (inverse of arch_from_config)."""
    base = dict(arch.extra)
    if family is LLADA:
        base.update(
            model_type="llada",
            d_model=arch.d_model,
            n_layers=arch.n_layers,
            n_heads=arch.n_heads,
            n_kv_heads=arch.n_kv_heads,
            mlp_hidden_size=arch.mlp_hidden,
            vocab_size=base.get("vocab_size", arch.vocab_size),
            embedding_size=arch.vocab_size,
            rope_theta=arch.rope_theta,
            rms_norm_eps=arch.rms_norm_eps,
            weight_tying=arch.tie_embeddings,
            include_bias=False,
            block_type="llama",
            layer_norm_type="rms",
            rope=True,
            activation_type="silu",
        )
        return base
    if family is DREAM:
        base.update(
            model_type="Dream",
            hidden_size=arch.d_model,
            num_hidden_layers=arch.n_layers,
            num_attention_heads=arch.n_heads,
            num_key_value_heads=arch.n_kv_heads,
            intermediate_size=arch.mlp_hidden,
            vocab_size=arch.vocab_size,
            rope_theta=arch.rope_theta,
            rms_norm_eps=arch.rms_norm_eps,
            tie_word_embeddings=arch.tie_embeddings,
        )
        return base
    out = {k: v for k, v in arch.to_dict().items() if k != "extra"}
    out.update(base)
    out["model_type"] = TINY.model_type
    return out
