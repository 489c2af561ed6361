"""Decoding settings as one typed record, shared by eval protocols, the lm-eval model and RL rollouts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, make_dataclass
from typing import Any

from igpo.config import coerce
from igpo.decoding.schedule import Remasking
from igpo.errors import InvalidSetting

CACHE_MODES = (None, "prefix", "dual")
"""KV caching modes of the decoder: exact decoding, prefix cache, dual cache."""
COMPILE_MODES = (None, "graphs", "inductor")
"""How the model's passes run: eagerly, replayed from captured CUDA graphs, or torch.compile'd."""
OFF = "none"
"""How text spells an off cache or compile mode (any case): a flag (`--cache none`, `--compile
none`), a protocol, a recipe or lm-eval model_args. DecodeConfig reads it as None, so a flag can
turn off what a protocol turned on (a None override means "not given")."""
MAX_GEN_LENGTH = 16384
"""The longest completion decoded, in tokens (32 times the IGPO protocol's 512): the canvas, its
logits and KV cache are allocated up front, so a larger value is refused before any allocation."""
MAX_BATCH_SIZE = 4096
"""The most prompts decoded together (`--batch-size`, lm-eval's `batch_size`)."""


def check_settings(
    *,
    gen_length,
    block_length,
    steps,
    temperature,
    remasking,
    cfg_scale,
    threshold,
    factor,
    cache,
    cache_refresh,
    cache_refresh_tokens=None,
    compile=None,
) -> None:
    """Raise a ValueError naming the first bad decoding setting (the checks that need no model)."""
    _check_lengths(gen_length, block_length, steps)
    for name, value in (
        ("temperature", temperature),
        ("cfg_scale", cfg_scale),
        ("threshold", threshold),
        ("factor", factor),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            raise InvalidSetting(f"{name} must be a finite number, got {value!r}")
    if temperature < 0:
        raise InvalidSetting(f"temperature must be >= 0, got {temperature}")
    coerce(remasking, Remasking, "remasking")
    if cfg_scale < 0:
        raise InvalidSetting(f"cfg_scale must be >= 0, got {cfg_scale}")
    if threshold is not None and not 0 < threshold <= 1:
        raise InvalidSetting(f"threshold must lie in (0, 1], got {threshold}")
    if factor is not None and factor <= 0:
        raise InvalidSetting(f"factor must be > 0, got {factor}")
    if factor is not None and threshold is not None:
        raise InvalidSetting("threshold and factor are two parallel-decoding rules: set at most one")
    if cache not in CACHE_MODES:
        raise InvalidSetting(f"unknown cache mode {cache!r} (use none, prefix or dual)")
    if cache_refresh is not None:
        _check_positive_int("cache_refresh", cache_refresh)
        if cache is None:
            raise InvalidSetting("cache_refresh needs a cache mode ('prefix' or 'dual')")
    if cache_refresh_tokens is not None:
        _check_positive_int("cache_refresh_tokens", cache_refresh_tokens)
        if cache is None:
            raise InvalidSetting("cache_refresh_tokens needs a cache mode ('prefix' or 'dual')")
    if compile not in COMPILE_MODES:
        raise InvalidSetting(f"unknown compile mode {compile!r} (use none, graphs or inductor)")


def _check_lengths(gen_length: Any, block_length: Any, steps: Any) -> None:
    """gen_length, block_length and steps: positive, within MAX_GEN_LENGTH, and dividing evenly.
    Steps above gen_length are refused: the extra steps would commit no token (passes for nothing)."""
    for name, value in (("gen_length", gen_length), ("block_length", block_length), ("steps", steps)):
        _check_positive_int(name, value)
    if gen_length > MAX_GEN_LENGTH:
        raise InvalidSetting(f"gen_length={gen_length} is over the maximum of {MAX_GEN_LENGTH} tokens")
    if steps > gen_length:
        raise InvalidSetting(f"steps={steps} is more than gen_length={gen_length} (at most one step per token)")
    if gen_length % block_length:
        raise InvalidSetting(f"block_length={block_length} does not divide gen_length={gen_length}")
    if steps % (gen_length // block_length):
        raise InvalidSetting(f"steps={steps} is not a multiple of the number of blocks ({gen_length // block_length})")


def is_off(value: Any) -> bool:
    """Whether a cache or compile value is the text `none` (any case): off, read as None."""
    return isinstance(value, str) and value.strip().lower() == OFF


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidSetting(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
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
    remasking: Remasking = "low_confidence"
    """Which candidates to commit first: `low_confidence` (most probable) or `random`."""
    cfg_scale: float = 0.0
    """Classifier-free guidance scale; 0 turns it off (one pass per step instead of two)."""
    threshold: float | None = None
    """Confidence-aware parallel decoding: commit every candidate at least this confident."""
    factor: float | None = None
    """Fast-dLLM's factor rule: commit the n most confident while confidence > 1 - factor/(n+1)."""
    cache: str | None = None
    """KV caching between a block's steps: "prefix", "dual", or None for exact decoding (written
    "none" in text, which turns a protocol's cache off)."""
    cache_refresh: int | None = None
    """With a cache: refill it with a full pass every k passes of a block (None: only at a block's
    first pass, Fast-dLLM's semantics). Trades speed for agreement with exact decoding."""
    cache_refresh_tokens: int | None = None
    """With a cache: refill it with a full pass once a row has committed this many tokens of the
    block since the cache was filled. The cached keys/values go stale with the tokens they did not
    see, not with the passes: under a parallel rule one pass may commit many tokens or one."""
    compile: str | None = None
    """How the model's passes run: None (eager; "none" in text), "graphs" (GPU only: each pass shape, such as the
    full canvas or the dual-cache window, is captured once in a CUDA graph and replayed, one launch
    per pass instead of ~1,000 kernels) or "inductor" (torch.compile: CUDA graphs through mode
    "reduce-overhead" on a GPU, fused kernels on a CPU; tens of seconds to compile each shape).
    Tokens equal eager decoding's (tests: inductor on CPU; the GPU check compares graphs)."""
    suppress_tokens: tuple[int, ...] = ()
    """Token ids never proposed (LLaDA's `logits_eos_inf` is suppress_tokens=(eos,))."""
    last_tokens: tuple[int, ...] = ()
    """Token ids whose candidates are committed after every other candidate of their block
    (LLaDA's `confidence_eos_eot_inf` is last_tokens=(eos, eot)): it keeps EOS from ending a
    long answer early."""
    suppress_eos: bool = False
    """Never propose the model's EOS token (LLaDA's `logits_eos_inf`; ids from the TokenSpec)."""
    eos_last: bool = False
    """Commit EOS and end-of-turn candidates after every other candidate of their block (LLaDA's
    `confidence_eos_eot_inf`, which LLaDA-1.5's evaluation turns on; ids from the TokenSpec)."""
    early_exit: bool = True
    """Stop after a block once every row has ended in EOS (tokens up to EOS are unchanged)."""

    def __post_init__(self) -> None:
        for name in ("cache", "compile"):
            if is_off(getattr(self, name)):
                object.__setattr__(self, name, None)
        # a whole number where a float is declared (`temperature: 1` in a YAML) is held as that
        # float: equal configs write one record and one lm-eval request key
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("float", "float | None") and type(value) is int:
                object.__setattr__(self, f.name, float(value))
        for name in ("suppress_eos", "eos_last", "early_exit"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidSetting(f"{name} must be true or false, got {getattr(self, name)!r}")
        object.__setattr__(self, "suppress_tokens", tuple(int(t) for t in self.suppress_tokens or ()))
        object.__setattr__(self, "last_tokens", tuple(int(t) for t in self.last_tokens or ()))
        check_settings(
            **{
                k: v
                for k, v in asdict(self).items()
                if k not in ("suppress_tokens", "last_tokens", "early_exit", "suppress_eos", "eos_last")
            }
        )

    def suppressed_ids(self, tokens: Any) -> tuple[int, ...]:
        """Every token id the sampler never proposes: suppress_tokens, plus the TokenSpec's EOS
        under suppress_eos. The one resolution the decoder and the trajectory estimator share."""
        if self.suppress_eos and tokens.eos_id is not None:
            return (*self.suppress_tokens, tokens.eos_id)
        return self.suppress_tokens

    def last_ids(self, tokens: Any) -> tuple[int, ...]:
        """Token ids committed last in their block: last_tokens, plus EOS / EOT under eos_last."""
        if not self.eos_last:
            return self.last_tokens
        return tuple(dict.fromkeys((*self.last_tokens, *(t for t in (tokens.eos_id, tokens.eot_id) if t is not None))))

    def replace(self, **changes: Any) -> DecodeConfig:
        """A copy with the given fields changed; unknown names raise ValueError."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InvalidSetting(f"unknown decoding setting(s): {', '.join(unknown)}")
        return DecodeConfig(**{**asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["suppress_tokens"] = list(self.suppress_tokens)
        out["last_tokens"] = list(self.last_tokens)
        return out


class _Overrides:
    """Methods of DecodeOverrides (its fields are made from DecodeConfig's below)."""

    def given(self) -> dict[str, Any]:
        """The settings a user set, by name (None: not set)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


DecodeOverrides = make_dataclass(
    "DecodeOverrides",
    [(f.name, f"{f.type} | None", field(default=None)) for f in fields(DecodeConfig)],
    bases=(_Overrides,),
    frozen=True,
)
DecodeOverrides.__doc__ = """A user's decoding flags on top of a protocol: every DecodeConfig field,
None where the user said nothing (the typed form of `igpo eval --gen-length ...`); a partial set
is not a valid DecodeConfig on its own, so it is applied per task (Protocol.for_task)."""
