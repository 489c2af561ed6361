"""Where each decoding setting of one `dllm` request comes from: the rule, applied per request.

`igpo eval` hands the model each task's `DecodeConfig` from its plan, typed
(`DiffusionLM.plan_tasks`): a request of a planned task decodes with exactly that config
(`planned`; every setting the request's own, source `request`), and its generation_kwargs carry
no decoding setting, only the stop strings. For every other request (lm-eval's own CLI,
`igpo lm-eval`, a foreign task), `resolve` applies this rule, highest first:
1. diffusion keys in the request's generation_kwargs (any `DecodeConfig` field: gen_length,
   block_length, steps, temperature, remasking, cfg_scale, threshold, ...), whether the task YAML
   or lm-eval's `--gen_kwargs` put them there;
2. lm-eval's own keys, with Hugging Face semantics: `do_sample: false` means greedy whatever the
   temperature; `do_sample: true` without a temperature samples at the model_args temperature, or
   1.0 when that is 0; `max_gen_toks` sets the length when no diffusion `gen_length` is given;
   `until` lists stop strings;
3. model_args (`--model_args gen_length=...`, LLaDA's names included);
4. `DecodeConfig`'s defaults.

One length rule: a diffusion gen_length is the response budget. `max_gen_toks` becomes
`gen_length` rounded up to a multiple of `block_length` (one block of max_gen_toks tokens when it
is shorter than a block), `steps` scaled to keep the model_args tokens per step (unless `steps` is
a diffusion key of the request), and responses cut to max_gen_toks tokens. An igpo task's own
`max_gen_toks` (its YAML's default budget, `tasks.registry.default_max_gen_toks`) does that only
when no gen_length was asked for, in the request or in model_args: it never cuts a response
shorter than the canvas the user asked for. Any other `max_gen_toks` (lm-eval's `--gen_kwargs`, a
foreign task's YAML) shorter than an asked-for gen_length (a planned task's included) is a real
conflict: it wins (responses cut to it, or the canvas shortened to it) and the request's
`length_conflict` says so; `dllm` warns once on stderr and `igpo eval` records the conflicts in
results.json. A `--gen_kwargs max_gen_toks` equal to the task's own value cannot be told apart
from it. Every request's record says where each setting came from and what changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from harness.lmeval.args import coerce_decode
from igpo.config import coerce
from igpo.decoding import DecodeConfig
from igpo.errors import InvalidSetting

DECODE_KEYS = frozenset(f.name for f in fields(DecodeConfig))
LM_EVAL_KEYS = frozenset({"until", "max_gen_toks", "do_sample", "temperature"})
HF_SAMPLING_TEMPERATURE = 1.0
"""Hugging Face's default temperature when do_sample is true and none is given."""


@dataclass
class RequestSettings:
    """How one request is decoded, and why."""

    decode: DecodeConfig
    until: list[str]
    max_tokens: int | None = None
    """Responses are cut to this many tokens (lm-eval's max_gen_toks); None: the whole canvas."""
    sources: dict[str, str] = field(default_factory=dict)
    """Decoding setting -> `request` | `lm-eval` | `model_args` | `default`."""
    notes: list[str] = field(default_factory=list)
    """What the rule changed, in words (max_gen_toks mapping, do_sample overriding temperature)."""
    length_conflict: dict[str, Any] | None = None
    """A max_gen_toks shorter than an asked-for gen_length: {max_gen_toks, gen_length, source
    (`request` | `model_args`)}; None when the canvas and the kept response agree."""

    def record(self) -> dict[str, Any]:
        return {
            "decode": self.decode.to_dict(),
            "until": list(self.until),
            "max_tokens": self.max_tokens,
            "sources": dict(self.sources),
            "notes": list(self.notes),
            **({"length_conflict": dict(self.length_conflict)} if self.length_conflict else {}),
        }


def resolve(
    gen_kwargs: dict[str, Any] | None,
    model: DecodeConfig,
    given: frozenset[str],
    task_default: int | None = None,
) -> RequestSettings:
    """The decoding settings of one request (see the module docstring for the rule).
    `task_default`: the max_gen_toks the request's task YAML sets (igpo tasks), if any."""
    kwargs, until = _split_until(gen_kwargs)
    request = {k: coerce_decode(k, v) for k, v in kwargs.items() if k in DECODE_KEYS}
    notes: list[str] = []
    values = model.to_dict()
    sources = {k: ("model_args" if k in given else "default") for k in values}
    for key, value in request.items():
        values[key] = value
        sources[key] = "request"
    do_sample = coerce(kwargs["do_sample"], bool, "dllm: do_sample", from_text=True) if "do_sample" in kwargs else None
    if do_sample is False and values["temperature"] != 0:
        notes.append(f"do_sample=false: greedy decoding (temperature {values['temperature']} not used)")
        values["temperature"], sources["temperature"] = 0.0, "lm-eval"
    elif do_sample is True and values["temperature"] == 0:
        if "temperature" in request:
            raise InvalidSetting(
                "dllm: do_sample=true with temperature 0 (Hugging Face refuses it too); "
                "give a temperature > 0 or do_sample=false"
            )
        notes.append(f"do_sample=true without a temperature: sampling at {HF_SAMPLING_TEMPERATURE}")
        values["temperature"], sources["temperature"] = HF_SAMPLING_TEMPERATURE, "lm-eval"
    max_tokens, conflict = None, None
    if kwargs.get("max_gen_toks") is not None:
        max_tokens = _positive_int("max_gen_toks", kwargs["max_gen_toks"])
        asked = sources["gen_length"] if sources["gen_length"] in ("request", "model_args") else None
        if asked and task_default is not None and max_tokens == task_default:
            if max_tokens < values["gen_length"]:
                notes.append(
                    f"the task's own max_gen_toks={max_tokens} does not cut: gen_length={values['gen_length']} "
                    f"({asked}) is the response budget"
                )
            max_tokens = None
        elif asked == "request":
            if max_tokens < values["gen_length"]:
                conflict = {"max_gen_toks": max_tokens, "gen_length": values["gen_length"], "source": asked}
                notes.append(
                    f"max_gen_toks={max_tokens} cuts the response; gen_length={values['gen_length']} "
                    "(a diffusion key of the request) sets the canvas"
                )
            else:
                max_tokens = None
        else:
            if asked == "model_args" and max_tokens < values["gen_length"]:
                conflict = {"max_gen_toks": max_tokens, "gen_length": values["gen_length"], "source": asked}
            _length_from_max_gen_toks(values, sources, request, model, max_tokens, notes)
            if max_tokens >= values["gen_length"]:
                max_tokens = None
    return RequestSettings(
        decode=DecodeConfig(**values),
        until=until,
        max_tokens=max_tokens,
        sources=sources,
        notes=notes,
        length_conflict=conflict,
    )


def planned(cfg: DecodeConfig, gen_kwargs: dict[str, Any] | None, task_default: int | None = None) -> RequestSettings:
    """The settings of a request whose task `igpo eval` planned: `cfg` itself, every setting the
    request's own. Its generation_kwargs give the stop strings; a `max_gen_toks` other than the
    task's own that is shorter than cfg.gen_length cuts the responses (a length conflict); a
    decoding setting there is refused, the plan being the one owner of the task's decoding."""
    kwargs, until = _split_until(gen_kwargs)
    stray = sorted(set(kwargs) - {"max_gen_toks"})
    if stray:
        raise InvalidSetting(
            f"dllm: generation_kwargs set {', '.join(stray)} for a task igpo eval planned; its decoding "
            "is the plan's DecodeConfig alone"
        )
    settings = RequestSettings(decode=cfg, until=until, sources=dict.fromkeys(cfg.to_dict(), "request"))
    if kwargs.get("max_gen_toks") is not None:
        max_tokens = _positive_int("max_gen_toks", kwargs["max_gen_toks"])
        if max_tokens < cfg.gen_length and max_tokens != task_default:
            settings.max_tokens = max_tokens
            settings.length_conflict = {"max_gen_toks": max_tokens, "gen_length": cfg.gen_length, "source": "request"}
            settings.notes.append(
                f"max_gen_toks={max_tokens} cuts the response; gen_length={cfg.gen_length} (the plan) sets the canvas"
            )
        elif max_tokens < cfg.gen_length:
            settings.notes.append(
                f"the task's own max_gen_toks={max_tokens} does not cut: gen_length={cfg.gen_length} "
                "(request) is the response budget"
            )
    return settings


def _split_until(gen_kwargs: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """(the other generation settings, the stop strings); a setting no rule knows is refused."""
    kwargs = dict(gen_kwargs or {})
    until = kwargs.pop("until", None) or []
    until = [until] if isinstance(until, str) else [str(u) for u in until]
    unknown = sorted(set(kwargs) - DECODE_KEYS - LM_EVAL_KEYS)
    if unknown:
        raise InvalidSetting(
            f"dllm: unknown generation setting(s) {', '.join(unknown)} (known: lm-eval's "
            f"{', '.join(sorted(LM_EVAL_KEYS))} and the decoding settings {', '.join(sorted(DECODE_KEYS))})"
        )
    return kwargs, until


def _length_from_max_gen_toks(values, sources, request, model: DecodeConfig, max_tokens: int, notes) -> None:
    """gen_length (and block_length, steps) from lm-eval's max_gen_toks, in place."""
    block = values["block_length"]
    if max_tokens < block:
        block = max_tokens
        values["block_length"], sources["block_length"] = block, "lm-eval"
    length = math.ceil(max_tokens / block) * block
    blocks = length // block
    changed = length != values["gen_length"]
    values["gen_length"], sources["gen_length"] = length, "lm-eval"
    if "steps" not in request and changed:
        per_token = model.steps / model.gen_length
        steps = max(blocks, math.ceil(length * per_token / blocks) * blocks)
        values["steps"], sources["steps"] = steps, "lm-eval"
    elif values["steps"] % blocks:
        values["steps"] = math.ceil(values["steps"] / blocks) * blocks
        sources["steps"] = "lm-eval"
    text = f"max_gen_toks={max_tokens} -> gen_length {length}, block_length {block}, steps {values['steps']}"
    if changed and "steps" not in request:
        text += f" (model_args keep {model.gen_length / model.steps:g} tokens per step)"
    if length != max_tokens:
        text += f"; responses cut to {max_tokens} tokens"
    notes.append(text)


def _positive_int(name: str, value: Any) -> int:
    number = coerce(value, int, f"dllm: {name}", from_text=True)
    if number <= 0:
        raise InvalidSetting(f"dllm: {name} must be a positive integer, got {value!r}")
    return number
