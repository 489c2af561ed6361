"""model_args of the lm-eval model `dllm`: one typed record, with LLaDA's argument names as aliases.

lm-eval passes model_args as loosely typed strings; `parse_args` coerces them to `DLLMArgs`,
rejects unknown keys by name and remembers which decoding settings were given (the per-request
rule in `harness.lmeval.settings` needs to know what came from model_args). LLaDA's own
`eval_llada.py` names (`model_path`, `cfg`, `max_length`, ...) are accepted, so a command line of
LLaDA's `eval_llada_lm_eval.sh` runs unchanged with `--model dllm`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_type_hints

from igpo.config import coerce
from igpo.decoding import DecodeConfig
from igpo.decoding.config import MAX_BATCH_SIZE
from igpo.errors import InvalidSetting

ALIASES = {
    "model_path": "pretrained",
    "cfg": "cfg_scale",
    "max_length": "max_prompt_tokens",
}
"""LLaDA's eval_llada.py argument names -> dllm's (gen_length, steps, block_length, remasking,
mc_num, batch_size, is_check_greedy and mask_id are spelled the same)."""

IGNORED = ("max_batch_size",)
"""Keys lm-eval adds on its own that dllm has no use for."""


@dataclass
class DLLMArgs:
    """model_args of `dllm` (lm-eval passes strings; they are coerced to these types)."""

    pretrained: str = ""
    """Model folder or Hub id (LLaDA's `model_path`)."""
    adapter: str | None = None
    """PEFT (LoRA) adapter folder applied on top, merged for speed."""
    tokenizer: str | None = None
    """Tokenizer folder or id; default: the model's."""
    dtype: str | None = None
    """float32 | bfloat16 | float16; default bf16 on GPU, float32 on CPU."""
    device: str | None = None
    batch_size: int = 8
    """Prompts decoded together; also the Monte-Carlo batch of a log-likelihood."""
    trust_remote_code: bool = False
    seed: int | None = None
    """Base seed of the per-request generators; None: lm-eval's torch seed (`--seed`)."""
    mc_num: int = 128
    """Monte-Carlo samples per loglikelihood request (LLaDA uses 128)."""
    is_check_greedy: bool = True
    """loglikelihood: also decode the continuation greedily and report whether it comes out
    (LLaDA's suffix check, needed by LAMBADA-style metrics; False saves one decode per request)."""
    max_prompt_tokens: int = 4096
    """Longer prompts keep their last tokens, with a warning (LLaDA's `max_length`)."""
    logits_eos_inf: bool = False
    """LLaDA's option: EOS is never proposed (suppress_tokens=(eos,))."""
    confidence_eos_eot_inf: bool = False
    """LLaDA's option: EOS / end-of-turn candidates are committed after every other candidate."""
    cache_file: str | None = None
    """JSONL of finished responses: a rerun reuses them (resumable evaluation)."""
    mask_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    decode_given: frozenset[str] = frozenset()
    """The decoding settings model_args named (the rest are DecodeConfig defaults)."""
    batch_size_requested: str | None = None
    """What lm-eval asked for when it is not a number (`auto`): dllm uses `batch_size`."""


def coerce_decode(key: str, value: Any) -> Any:
    """One decoding setting coerced to DecodeConfig's declared type (ValueError names it)."""
    return coerce(value, get_type_hints(DecodeConfig)[key], f"decoding setting {key}={value!r}", from_text=True)


def parse_args(kwargs: dict[str, Any]) -> DLLMArgs:
    """Typed DLLMArgs from model_args; unknown keys are rejected by name, aliases renamed."""
    own = get_type_hints(DLLMArgs)
    dec = get_type_hints(DecodeConfig)
    values: dict[str, Any] = {}
    decode: dict[str, Any] = {}
    for raw_key, value in kwargs.items():
        key = ALIASES.get(raw_key, raw_key)
        if key in IGNORED or value is None:
            continue
        if key in values or key in decode:
            raise InvalidSetting(f"dllm model_arg {key!r} given twice (as {raw_key!r} and under another name)")
        if key == "batch_size" and str(value).strip().lower().startswith("auto"):
            values["batch_size_requested"] = str(value)
            continue
        where = f"dllm model_arg {raw_key}={value!r}"
        if key in own and key not in ("decode", "decode_given", "batch_size_requested"):
            values[key] = coerce(value, own[key], where, from_text=True)
        elif key in dec:
            decode[key] = coerce(value, dec[key], where, from_text=True)
        else:
            raise InvalidSetting(f"unknown dllm model_arg {raw_key!r}")
    if not values.get("pretrained"):
        raise InvalidSetting("dllm needs model_args pretrained=PATH_OR_ID (or LLaDA's model_path=)")
    for name in ("batch_size", "mc_num", "max_prompt_tokens"):
        if name in values and values[name] <= 0:
            raise InvalidSetting(f"dllm model_arg {name} must be a positive integer, got {values[name]}")
    if values.get("batch_size", 0) > MAX_BATCH_SIZE:
        raise InvalidSetting(f"dllm model_arg batch_size must be <= {MAX_BATCH_SIZE}, got {values['batch_size']}")
    return DLLMArgs(**values, decode=DecodeConfig(**decode), decode_given=frozenset(decode))
