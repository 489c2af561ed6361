"""The lm-eval model `dllm`: diffusion decoding of any dLLM through `igpo.decoding.generate`.

Use from lm-eval: `--model dllm --model_args pretrained=PATH,gen_length=256,steps=128`.
A task's `generation_kwargs` may carry any decoding setting (gen_length, block_length, steps,
temperature, remasking, cfg_scale, threshold, ...) and overrides the model_args for its requests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from igpo.decoding import DecodeConfig, generate
from igpo.decoding.text import completion_texts, left_pad, stop_ids
from igpo.logprobs import elbo_loglikelihood
from igpo.models import load_model, load_tokenizer

DECODE_KEYS = {f.name for f in fields(DecodeConfig)}
LM_EVAL_GEN_KEYS = {"until", "max_gen_toks", "do_sample", "temperature"}
SEED_MODULUS = 2**63 - 1

logger = logging.getLogger(__name__)


@dataclass
class DLLMArgs:
    """model_args of `dllm` (lm-eval passes strings; they are coerced to these types)."""

    pretrained: str = ""
    """Model folder or Hub id."""
    adapter: str | None = None
    """PEFT (LoRA) adapter folder applied on top, merged for speed."""
    tokenizer: str | None = None
    """Tokenizer folder or id; default: the model's."""
    dtype: str | None = None
    """float32 | bfloat16 | float16; default bf16 on GPU, float32 on CPU."""
    device: str | None = None
    batch_size: int = 8
    trust_remote_code: bool = False
    seed: int = 0
    """Base seed; each request samples from its own generator derived from it."""
    mc_num: int = 128
    """Monte-Carlo samples per loglikelihood request (LLaDA uses 128)."""
    max_prompt_tokens: int = 4096
    """Longer prompts keep their last tokens."""
    cache_file: str | None = None
    """JSONL of finished responses: a rerun reuses them (resumable evaluation)."""
    mask_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def _coerce(value: Any, kind: Any) -> Any:
    """Turn lm-eval's loosely typed model_args values into the declared type."""
    if value is None or value == "None":
        return None
    text = str(value)
    if kind in (bool, "bool") or kind == bool | None:
        if isinstance(value, bool):
            return value
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if kind in (int, int | None):
        number = float(text)
        if number != int(number):
            raise ValueError(f"expected an integer, got {value!r}")
        return int(number)
    if kind in (float, float | None):
        return float(text)
    if kind == tuple[int, ...]:
        if isinstance(value, (list, tuple)):
            return tuple(int(v) for v in value)
        return tuple(int(v) for v in text.replace(";", " ").replace("|", " ").split())
    return value


def parse_args(kwargs: dict[str, Any]) -> DLLMArgs:
    """Typed DLLMArgs from model_args; unknown keys are rejected by name."""
    own = get_type_hints(DLLMArgs)
    dec = get_type_hints(DecodeConfig)
    values, decode = {}, {}
    for key, value in kwargs.items():
        if key in ("max_batch_size",) or value is None:
            continue
        try:
            if key in own and key != "decode":
                values[key] = _coerce(value, own[key])
            elif key in dec:
                decode[key] = _coerce(value, dec[key])
            else:
                raise ValueError(f"unknown dllm model_arg {key!r}")
        except ValueError as err:
            if str(err).startswith("unknown dllm model_arg"):
                raise
            raise ValueError(f"dllm model_arg {key}={value!r}: {err}") from None
    if not values.get("pretrained"):
        raise ValueError("dllm needs model_args pretrained=PATH_OR_ID")
    if values.get("batch_size") in ("auto", None):
        values.pop("batch_size", None)
    return DLLMArgs(**values, decode=DecodeConfig(**decode))


def request_key(context: str, settings: dict[str, Any]) -> str:
    """Stable identity of a request: its prompt and every setting that shapes the response."""
    blob = json.dumps([context, settings], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@register_model("dllm", "igpo")
class DiffusionLM(LM):
    """lm-eval LM over `igpo.decoding.generate`; batched, resumable, data-parallel aware."""

    def __init__(self, model: torch.nn.Module | None = None, tokenizer: Any = None, **kwargs: Any) -> None:
        super().__init__()
        if "batch_size" in kwargs and kwargs["batch_size"] in (None, "auto"):
            kwargs.pop("batch_size")
        self.args = parse_args(kwargs if model is None else {"pretrained": "<in-memory>", **kwargs})
        self.accelerator = None
        self._rank, self._world_size = 0, 1
        device = self.args.device
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's CLI passes device="cuda:0" unless told otherwise; as HFLM does, run on
            # the CPU instead of failing on machines without CUDA.
            logger.warning("dllm: device %s requested but CUDA is not available; using cpu", device)
            device = "cpu"
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import Accelerator

            # Without cpu=True, Accelerator() on a machine without CUDA silently falls back to a
            # single process, so every rank would evaluate everything and write the results.
            on_cpu = (device or "").startswith("cpu") or not torch.cuda.is_available()
            self.accelerator = Accelerator(cpu=on_cpu)
            self._rank = self.accelerator.process_index
            self._world_size = self.accelerator.num_processes
            acc_device = self.accelerator.device
            # A CPU rank's device reads "cpu:<local rank>", which safetensors rejects.
            device = "cpu" if acc_device.type == "cpu" else str(acc_device)
        if model is None:
            model = load_model(self.args.pretrained, dtype=self.args.dtype, device=device,
                               trust_remote_code=self.args.trust_remote_code)
            tokenizer = load_tokenizer(self.args.tokenizer or self.args.pretrained,
                                       trust_remote_code=self.args.trust_remote_code)
            if self.args.adapter:
                model = apply_adapter(model, self.args.adapter)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._device = self.model.device if hasattr(self.model, "device") else torch.device("cpu")
        spec = model.token_spec.with_overrides(mask_id=self.args.mask_id, eos_id=self.args.eos_id,
                                               eot_id=self.args.eot_id)
        self.spec = spec
        self.stops = stop_ids(spec)
        self.stats: dict[str, float] = defaultdict(float)
        self._forward_timer = ForwardTimer(self.model)
        self._cache = ResponseCache(Path(self.args.cache_file), self._rank) if self.args.cache_file else None

    # ---------------------------------------------------------------- lm-eval plumbing
    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "dllm")).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        continue_final = not add_generation_prompt and chat_history and chat_history[-1]["role"] == "assistant"
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=bool(continue_final),
        )

    def all_gather(self, tensor):
        return self.accelerator.gather(tensor) if self.accelerator else tensor

    def gather_object(self, obj, dst=0):
        if not self.accelerator:
            return [obj]
        import torch.distributed as dist

        out = [None] * self._world_size if self._rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if self.accelerator:
            self.accelerator.wait_for_everyone()

    # ---------------------------------------------------------------- generation
    def settings_for(self, gen_kwargs: dict[str, Any]) -> tuple[DecodeConfig, list[str]]:
        """Decoding settings of one request: model_args, then the task's generation_kwargs."""
        gen_kwargs = dict(gen_kwargs or {})
        until = gen_kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        changes = {k: gen_kwargs[k] for k in gen_kwargs if k in DECODE_KEYS}
        if "temperature" not in changes and gen_kwargs.get("do_sample") is False:
            changes["temperature"] = 0.0
        hints = get_type_hints(DecodeConfig)
        changes = {k: _coerce(v, hints[k]) for k, v in changes.items()}
        return self.args.decode.replace(**changes), until

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Decode every request; responses cut at EOS / end-of-turn and at the `until` strings."""
        items = []
        occurrences: dict[str, int] = defaultdict(int)
        padding = padding_copies(requests)
        for idx, req in enumerate(requests):
            if idx in padding:
                continue
            context, gen_kwargs = req.args
            cfg, until = self.settings_for(gen_kwargs)
            key = request_key(context, {"decode": cfg.to_dict(), "until": until, "seed": self.args.seed})
            key = f"{key}#{occurrences[key]}"  # repeats of one prompt are distinct samples
            occurrences[key.split("#")[0]] += 1
            items.append((idx, context, cfg, until, key))
        results: list[str | None] = [None] * len(requests)
        todo = []
        for idx, context, cfg, until, key in items:
            cached = self._cache.get(key) if self._cache else None
            if cached is not None:
                results[idx] = cached
                self.stats["cached"] += 1
            else:
                todo.append((idx, context, cfg, until, key))
        groups: dict[str, list] = defaultdict(list)
        for item in todo:
            groups[json.dumps(item[2].to_dict(), sort_keys=True)].append(item)
        bar = tqdm(total=len(items), initial=len(items) - len(todo), desc="dllm generate",
                   disable=disable_tqdm or self._rank != 0, unit="req")
        for group in groups.values():
            group.sort(key=lambda it: -len(it[1]))
            for start in range(0, len(group), self.args.batch_size):
                batch = group[start:start + self.args.batch_size]
                texts = self._generate_batch([it[1] for it in batch], batch[0][2], [it[4] for it in batch])
                for (idx, _context, _cfg, until, key), text in zip(batch, texts, strict=True):
                    text = cut_at_stops(text, until)
                    results[idx] = text
                    if self._cache:
                        self._cache.put(key, text)
                    self.cache_hook.add_partial("generate_until", requests[idx].args, text)
                bar.update(len(batch))
        bar.close()
        for idx, source in padding.items():
            results[idx] = results[source]
        return [r if r is not None else "" for r in results]

    def _generate_batch(self, contexts: list[str], cfg: DecodeConfig, keys: list[str]) -> list[str]:
        encoded = [self.tokenizer(c, add_special_tokens=False)["input_ids"][-self.args.max_prompt_tokens:]
                   for c in contexts]
        ids, mask = left_pad(encoded, self.spec.pad_id if self.spec.pad_id is not None else 0)
        gens = [torch.Generator().manual_seed(seed_of(k)) for k in keys]
        kwargs = cfg.generate_kwargs()
        start = time.perf_counter()
        out = generate(
            self.model, ids.to(self._device), attention_mask=mask.to(self._device) if not bool(mask.all()) else None,
            mask_id=self.spec.mask_id, eos_id=self.spec.eos_id if cfg.early_exit else None,
            generator=gens, **kwargs,
        )
        self.stats["decode_seconds"] += time.perf_counter() - start
        self.stats["requests"] += len(contexts)
        self.stats["generated_tokens"] += len(contexts) * cfg.gen_length
        self.stats["nfe"] += out.nfe * len(contexts)
        return completion_texts(self.tokenizer, out.completions, self.stops)

    # ---------------------------------------------------------------- likelihoods
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """LLaDA's Monte-Carlo ELBO of each continuation, and whether greedy decoding yields it."""
        out = []
        for req in tqdm(requests, desc="dllm loglikelihood", disable=disable_tqdm or self._rank != 0):
            context, continuation = req.args
            prefix = torch.tensor(self.tokenizer(context, add_special_tokens=False)["input_ids"], dtype=torch.long)
            target = torch.tensor(self.tokenizer(continuation, add_special_tokens=False)["input_ids"], dtype=torch.long)
            if target.numel() == 0:
                out.append((0.0, True))
                continue
            g = torch.Generator().manual_seed(seed_of(request_key(context + continuation, {"seed": self.args.seed})))
            ll = elbo_loglikelihood(
                self.model, prefix.to(self._device), target.to(self._device), mask_id=self.spec.mask_id,
                mc_num=self.args.mc_num, batch_size=self.args.batch_size, generator=g,
                shifted_logits=self.spec.shifted_logits,
            )
            n = target.numel()
            greedy = generate(self.model, prefix[None].to(self._device), gen_length=n, block_length=n,
                              steps=n, mask_id=self.spec.mask_id)
            out.append((ll, bool(torch.equal(greedy.completions[0].cpu(), target))))
            self.cache_hook.add_partial("loglikelihood", req.args, out[-1])
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(
            "dllm does not support loglikelihood_rolling (perplexity tasks): a masked diffusion LM "
            "has no left-to-right factorisation; use generate_until or loglikelihood tasks"
        )


def padding_copies(requests: list[Any]) -> dict[int, int]:
    """Padding copies among `requests`, mapped to the index of the copy each one repeats.

    Under data parallelism lm-eval 0.4.13 evens out the ranks by appending the last request
    object again, `repeats` times per missing document. Those extra copies are not samples:
    they are answered with the request's own earlier responses (no decoding, no cache keys),
    so the padded documents get no new responses and the run matches a single process.
    """
    first: dict[int, list[int]] = defaultdict(list)
    count: dict[int, int] = defaultdict(int)
    padding: dict[int, int] = {}
    for idx, req in enumerate(requests):
        copies = first[id(req)]
        repeats = max(1, int(getattr(req, "repeats", 1) or 1))
        if count[id(req)] >= repeats:
            padding[idx] = copies[count[id(req)] % repeats]
        else:
            copies.append(idx)
        count[id(req)] += 1
    return padding


def seed_of(key: str) -> int:
    """A 63-bit generator seed derived from a request key (repeats included)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) % SEED_MODULUS


def cut_at_stops(text: str, until: list[str]) -> str:
    """Cut the text at the earliest stop string."""
    cut = len(text)
    for stop in until:
        if stop:
            pos = text.find(stop)
            if pos != -1:
                cut = min(cut, pos)
    return text[:cut]


def apply_adapter(model: torch.nn.Module, adapter: str) -> torch.nn.Module:
    """Load a PEFT adapter onto the model and merge it (inference only)."""
    from peft import PeftModel

    path = Path(adapter)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no adapter_config.json in adapter folder {adapter}")
    spec = model.token_spec
    merged = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    merged.token_spec = spec
    return merged


class ForwardTimer:
    """Accumulates wall time spent inside the model's forward passes (for overhead figures)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seconds = 0.0
        self._start = 0.0
        self._cuda = next(model.parameters()).is_cuda
        model.register_forward_pre_hook(self._pre)
        model.register_forward_hook(self._post)

    def _pre(self, module, args):
        if self._cuda:
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def _post(self, module, args, output):
        if self._cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - self._start


class ResponseCache:
    """Append-only JSONL of finished responses, keyed by request; survives interruption.

    Each data-parallel rank appends to its own file (`name.rankN.jsonl` beyond rank 0) and
    every rank reads them all, so a rerun with any number of processes reuses every response.
    """

    def __init__(self, path: Path, rank: int = 0) -> None:
        self.path = path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
        self.items: dict[str, str] = {}
        for file in sorted(path.parent.glob(f"{path.stem}*{path.suffix}")):
            with open(file, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                        self.items[rec["key"]] = rec["response"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut by an interruption: that request is redone

    def get(self, key: str) -> str | None:
        return self.items.get(key)

    def put(self, key: str, response: str) -> None:
        self.items[key] = response
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "response": response}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
