"""Decoding settings as one typed record, shared by eval protocols, the lm-eval model and RL rollouts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class DecodeConfig:
    """Every knob of `igpo.decoding.generate` except the prompt and token ids."""

    gen_length: int = 256
    """Completion tokens appended to the prompt as masks."""
    block_length: int = 32
    """Semi-autoregressive block size; must divide gen_length."""
    steps: int = 128
    """Denoising steps in total (a cap when `threshold` is set); a multiple of the block count."""
    temperature: float = 0.0
    """Gumbel-max sampling temperature; 0 is greedy."""
    remasking: str = "low_confidence"
    """Which candidates to commit first: `low_confidence` (most probable) or `random`."""
    cfg_scale: float = 0.0
    """Classifier-free guidance scale; 0 turns it off (one pass per step instead of two)."""
    threshold: float | None = None
    """Confidence-aware parallel decoding: commit every candidate at least this confident."""
    factor: float | None = None
    """Fast-dLLM's factor rule: commit the n most confident while confidence > 1 - factor/(n+1)."""
    cache: str | None = None
    """KV caching between a block's steps: None (exact), "prefix" or "dual"."""
    suppress_tokens: tuple[int, ...] = ()
    """Token ids never proposed (LLaDA's `logits_eos_inf` is suppress_tokens=(eos,))."""
    early_exit: bool = True
    """Stop after a block once every row has ended in EOS (tokens up to EOS are unchanged)."""

    def __post_init__(self) -> None:
        self.suppress_tokens = tuple(int(t) for t in self.suppress_tokens or ())

    def replace(self, **changes: Any) -> DecodeConfig:
        """A copy with the given fields changed; unknown names raise ValueError."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown decoding setting(s): {', '.join(unknown)}")
        return DecodeConfig(**{**asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["suppress_tokens"] = list(self.suppress_tokens)
        return out

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `generate` (early_exit becomes whether eos_id is passed)."""
        out = asdict(self)
        out.pop("early_exit")
        out["suppress_tokens"] = self.suppress_tokens or None
        return out
