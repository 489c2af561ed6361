"""The lm-eval model `dllm`: diffusion decoding of any dLLM through `igpo.decoding.generate`.

Use from lm-eval: `--model dllm --model_args pretrained=PATH,gen_length=256,steps=128`; LLaDA's
argument names work too (`model_path=...,cfg=0.5,is_check_greedy=False,mc_num=128`).
Where each decoding setting of a request comes from (task generation_kwargs, lm-eval's
max_gen_toks / do_sample / temperature, model_args, defaults) is one rule, documented and
applied in `harness.lmeval.settings`; every request's settings, token count and whether it hit
the length are kept in `request_log`. Problems that would skew results silently (an igpo task
without the chat template, a truncated prompt) are printed on stderr and kept in `warnings`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lm_eval.evaluator
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from harness.lmeval.args import DLLMArgs, parse_args
from harness.lmeval.cache import SEED_MODULUS, ResponseCache, request_key, seed_of
from harness.lmeval.settings import RequestSettings, planned, resolve
from igpo.decoding import DecodeConfig, generate
from igpo.decoding.text import cut_at_stop, left_pad, stop_ids
from igpo.errors import BadFile
from igpo.logprobs import elbo_loglikelihood
from igpo.models import fuse_projections, load_model, load_tokenizer
from igpo.progress import verbose

__all__ = ["DLLMArgs", "DiffusionLM", "parse_args"]

logger = logging.getLogger(__name__)


def quiet_describe() -> str | None:
    """lm-eval's `git describe --always` of the working directory, without the git message on the
    terminal outside a checkout (`fatal: not a git repository`): None there."""
    try:
        return subprocess.run(
            ["git", "describe", "--always"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _quiet_lm_eval_git() -> None:
    """lm-eval's own `git describe` prints git's complaint outside a checkout: replaced by the
    same call with git's stderr captured (igpo --verbose keeps lm-eval's)."""
    if not verbose():
        lm_eval.evaluator.get_git_commit_hash = quiet_describe


_quiet_lm_eval_git()
LENGTH_CONFLICT_WARNING = "lm-eval's max_gen_toks is shorter than the diffusion gen_length"
"""How the one warning of a run with a length conflict begins (harness/lmeval/settings.py)."""
TEMPLATE_PROBE = "\x00igpo-probe\x00"
"""A user message whose rendering shows where the chat template puts the user's text."""


@dataclass
class _Item:
    """One request to decode: where it goes, its prompt, how, and its cache key."""

    index: int
    context: str
    settings: RequestSettings
    key: str
    task: str | None
    doc_id: int | None


class _Responses(list):
    """A request's `resps` that keeps its first `limit` responses only.

    Under data parallelism lm-eval evens out the ranks by sending a rank's last request object
    again and appends every response to that same object; bounding its list keeps those padding
    copies out of samples and metrics (a document's responses appear once, timeouts count once).
    """

    def __init__(self, items: list, limit: int) -> None:
        super().__init__(items)
        self.limit = limit

    def append(self, item: Any) -> None:
        if len(self) < self.limit:
            super().append(item)


@register_model("dllm", "igpo")
class DiffusionLM(LM):
    """lm-eval LM over `igpo.decoding.generate`; batched, resumable, data-parallel aware."""

    latest: DiffusionLM | None = None
    """The last dllm model built, so `igpo lm-eval` can write its request log after lm-eval returns
    (lm-eval's CLI builds one model and does not hand it back)."""
    unasked_device: str | None = None
    """The device lm-eval passes when its user named none (`igpo lm-eval` without --device sets
    lm-eval's default, cuda:0, here while lm-eval runs): without CUDA the model then runs on the
    CPU quietly; a CUDA device the user asked for warns when it is not there."""

    def __init__(self, model: torch.nn.Module | None = None, tokenizer: Any = None, **kwargs: Any) -> None:
        super().__init__()
        self.args = parse_args(kwargs if model is None else {"pretrained": "<in-memory>", **kwargs})
        self.warnings: list[str] = []
        self.request_log: list[dict[str, Any]] = []
        if self.args.batch_size_requested:
            self.warn(
                f"batch_size={self.args.batch_size_requested} is not supported by dllm; "
                f"decoding {self.args.batch_size} prompts at a time (set batch_size=N)"
            )
        self.accelerator = None
        self._rank, self._world_size = 0, 1
        device = self.args.device
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's CLI passes device="cuda:0" unless told otherwise; as HFLM does, run on
            # the CPU instead of failing on machines without CUDA (said only if it was asked for).
            if device != type(self).unasked_device:
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
            from harness.lmeval.adapters import model_and_adapter

            # pretrained=ADAPTER_DIR: the base its adapter_config.json names, with the adapter on top
            self.args.pretrained, self.args.adapter = model_and_adapter(
                self.args.pretrained, self.args.adapter, f"model_args pretrained=BASE,adapter={self.args.pretrained}"
            )
            model = load_model(
                self.args.pretrained,
                dtype=self.args.dtype,
                device=device,
                trust_remote_code=self.args.trust_remote_code,
            )
            tokenizer = load_tokenizer(
                self.args.tokenizer or self.args.pretrained, trust_remote_code=self.args.trust_remote_code
            )
            if self.args.adapter:
                model = apply_adapter(model, self.args.adapter)
            fuse_projections(model)  # inference only: one q/k/v and one gate/up matmul per layer
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._device = self.model.device if hasattr(self.model, "device") else torch.device("cpu")
        spec = model.token_spec.with_overrides(
            mask_id=self.args.mask_id, eos_id=self.args.eos_id, eot_id=self.args.eot_id
        )
        self.spec = spec
        self.stops = stop_ids(spec)
        self.decode = self._model_decode()
        self.planned: dict[str, DecodeConfig] = {}
        """Task name -> the DecodeConfig `igpo eval` planned for it (`plan_tasks`)."""
        self.stats: dict[str, float] = defaultdict(float)
        self._forward_timer = ForwardTimer(self.model)
        self._cache = ResponseCache(Path(self.args.cache_file), self._rank) if self.args.cache_file else None
        self._template_prefix: str | None = None
        DiffusionLM.latest = self

    def _model_decode(self) -> DecodeConfig:
        """model_args' decoding settings, LLaDA's EOS options as the DecodeConfig switches."""
        cfg = self.args.decode
        if self.args.logits_eos_inf:
            cfg = cfg.replace(suppress_eos=True)
        if self.args.confidence_eos_eot_inf:
            cfg = cfg.replace(eos_last=True)
        return cfg

    def plan_tasks(self, decoding: Mapping[str, DecodeConfig]) -> None:
        """The decoding of each task of the next evaluation, typed, as `igpo eval`'s plan resolved
        it: a request of a task named here decodes with its DecodeConfig exactly, and lm-eval's
        generation_kwargs only add stop strings (harness.lmeval.settings.planned). Tasks not named
        here follow the rule of `harness.lmeval.settings.resolve`."""
        bad = [task for task, cfg in decoding.items() if not isinstance(cfg, DecodeConfig)]
        if bad:
            raise TypeError(f"plan_tasks takes a DecodeConfig per task, not for {', '.join(bad)}")
        self.planned = dict(decoding)

    def warn(self, text: str) -> None:
        """A loud warning: once on stderr (rank 0) and kept in `warnings` for the records."""
        if text in self.warnings:
            return
        self.warnings.append(text)
        if self._rank_zero():
            print(f"warning: dllm: {text}", file=sys.stderr, flush=True)

    def _rank_zero(self) -> bool:
        return getattr(self, "_rank", 0) == 0

    def current_seed(self) -> int:
        """model_args' seed, else lm-eval's torch seed (`--seed`, or simple_evaluate's
        torch_random_seed, which lm-eval sets before it builds the requests)."""
        if self.args.seed is not None:
            return self.args.seed
        return int(torch.initial_seed()) % SEED_MODULUS

    def take_request_log(self) -> list[dict[str, Any]]:
        """The records of the requests answered since the last call (and forget them)."""
        log, self.request_log = self.request_log, []
        return log

    # ---------------------------------------------------------------- lm-eval plumbing
    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "dllm")).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            name = self.args.tokenizer or self.args.pretrained
            raise BadFile(
                f"the tokenizer of {name} has no chat template (chat_template in tokenizer_config.json or "
                "chat_template.jinja), which igpo eval and lm-eval's --apply_chat_template need"
            )
        continue_final = not add_generation_prompt and chat_history and chat_history[-1]["role"] == "assistant"
        return self.tokenizer.apply_chat_template(
            chat_history,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
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

    # ---------------------------------------------------------------- prompts
    def templated(self, context: str) -> bool:
        """Whether a prompt went through the tokenizer's chat template (starts as its rendering does)."""
        if self._template_prefix is None:
            try:
                probe = self.apply_chat_template([{"role": "user", "content": TEMPLATE_PROBE}])
                self._template_prefix = probe.split(TEMPLATE_PROBE)[0] if TEMPLATE_PROBE in probe else ""
            except Exception:  # no chat template (or one that cannot render a lone user turn)
                self._template_prefix = ""
        return bool(self._template_prefix) and context.startswith(self._template_prefix)

    def _check_chat_template(self, requests: list[Any]) -> None:
        tasks = sorted(
            {
                str(r.task_name)
                for r in requests
                if str(getattr(r, "task_name", "") or "").startswith("igpo_") and not self.templated(r.args[0])
            }
        )
        if tasks:
            self.warn(
                f"{', '.join(tasks)} ran without the chat template: the igpo tasks are zero-shot chat "
                "prompts and score near 0 on raw text (add --apply_chat_template)"
            )

    def encode_prompt(self, context: str) -> tuple[list[int], int]:
        """Prompt token ids (the template carries its own special tokens) and how many leading
        tokens `max_prompt_tokens` cut off."""
        ids = self.tokenizer(context, add_special_tokens=False)["input_ids"]
        cut = max(0, len(ids) - self.args.max_prompt_tokens)
        return ids[cut:], cut

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids as LLaDA's `_encode_pair`: trailing whitespace of the
        context moves into the continuation, whose ids are those of the whole text past the
        context's (so a merge across the boundary is not split)."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        special = not self.templated(context)
        whole = self.tokenizer(context + continuation, add_special_tokens=special)["input_ids"]
        head = self.tokenizer(context, add_special_tokens=special)["input_ids"]
        return head, whole[len(head) :]

    def _bound_padding(self, requests: list[Any], padding: dict[int, int]) -> None:
        for idx in padding:
            req = requests[idx]
            if not isinstance(req.resps, _Responses):
                req.resps = _Responses(list(req.resps), max(1, int(getattr(req, "repeats", 1) or 1)))

    # ---------------------------------------------------------------- generation
    def settings_for(self, gen_kwargs: dict[str, Any] | None, task: str | None = None) -> RequestSettings:
        """Decoding settings of one request of `task`: its planned DecodeConfig (`plan_tasks`), else
        the rule of `harness.lmeval.settings.resolve`."""
        from tasks.registry import default_max_gen_toks

        if task in self.planned:
            return planned(self.planned[task], gen_kwargs, default_max_gen_toks(task))
        return resolve(gen_kwargs, self.decode, self.args.decode_given, default_max_gen_toks(task))

    def _warn_length_conflict(self, task: str | None, conflict: dict[str, Any]) -> None:
        """The one warning of a run whose max_gen_toks and diffusion gen_length disagree."""
        if any(w.startswith(LENGTH_CONFLICT_WARNING) for w in self.warnings):
            return
        how = (
            f"responses are cut to {conflict['max_gen_toks']} tokens of the {conflict['gen_length']}-token canvas"
            if conflict["source"] == "request"
            else f"the canvas is {conflict['max_gen_toks']} tokens, not model_args' {conflict['gen_length']}"
        )
        self.warn(
            f"{LENGTH_CONFLICT_WARNING} on {task or 'a task'} ({conflict['max_gen_toks']} < gen_length "
            f"{conflict['gen_length']} from {conflict['source']}): {how}; drop max_gen_toks from --gen_kwargs "
            "to keep the whole canvas (every such request's record has length_conflict)"
        )

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Decode every request; responses cut at EOS / end-of-turn, at max_gen_toks tokens and at
        the `until` strings. Each request's record goes to `request_log`."""
        seed = self.current_seed()
        padding = padding_copies(requests)
        self._bound_padding(requests, padding)
        self._check_chat_template([r for i, r in enumerate(requests) if i not in padding])
        items: list[_Item] = []
        occurrences: dict[str, int] = defaultdict(int)
        for idx, req in enumerate(requests):
            if idx in padding:
                continue
            context, gen_kwargs = req.args
            settings = self.settings_for(gen_kwargs, getattr(req, "task_name", None))
            if settings.length_conflict:
                self._warn_length_conflict(getattr(req, "task_name", None), settings.length_conflict)
            identity = {"decode": settings.decode.to_dict(), "until": settings.until, "seed": seed}
            if settings.max_tokens is not None:
                identity["max_tokens"] = settings.max_tokens
            base = request_key(context, identity)
            key = f"{base}#{occurrences[base]}"  # repeats of one prompt are distinct samples
            occurrences[base] += 1
            items.append(
                _Item(idx, context, settings, key, getattr(req, "task_name", None), getattr(req, "doc_id", None))
            )
        results: list[str | None] = [None] * len(requests)
        info: dict[int, dict[str, Any]] = {}
        todo = []
        for item in items:
            cached = self._cache.get(item.key) if self._cache else None
            if cached is not None:
                results[item.index] = cached["response"]
                info[item.index] = {k: v for k, v in cached.items() if k != "response"}
                self.stats["cached"] += 1
            else:
                todo.append(item)
        groups: dict[tuple[DecodeConfig, int | None], list[_Item]] = defaultdict(list)
        for item in todo:  # one batch shape per decoding (a frozen DecodeConfig is its own key)
            groups[(item.settings.decode, item.settings.max_tokens)].append(item)
        bar = tqdm(
            total=len(items),
            initial=len(items) - len(todo),
            desc="dllm generate",
            disable=disable_tqdm or self._rank != 0,
            unit="req",
        )
        for group in groups.values():
            group.sort(key=lambda it: -len(it.context))
            for start in range(0, len(group), self.args.batch_size):
                batch = group[start : start + self.args.batch_size]
                outputs = self._generate_batch(batch)
                for item, (text, extra) in zip(batch, outputs, strict=True):
                    text = cut_at_stops(text, item.settings.until)
                    results[item.index], info[item.index] = text, extra
                    if self._cache:
                        self._cache.put(item.key, text, extra)
                    self.cache_hook.add_partial("generate_until", requests[item.index].args, text)
                bar.update(len(batch))
        bar.close()
        truncated = [info[it.index].get("prompt_tokens_cut", 0) for it in items]
        if any(truncated):
            self.warn(
                f"{sum(1 for t in truncated if t)} prompt(s) longer than max_prompt_tokens="
                f"{self.args.max_prompt_tokens} lost their first tokens (up to {max(truncated)} cut); "
                "raise max_prompt_tokens"
            )
        for item in items:
            self.request_log.append(
                {
                    "task": item.task,
                    "doc_id": item.doc_id,
                    "seed": seed,
                    **item.settings.record(),
                    **info[item.index],
                }
            )
        for idx, source in padding.items():
            results[idx] = results[source]
        return [r if r is not None else "" for r in results]

    def _generate_batch(self, batch: list[_Item]) -> list[tuple[str, dict[str, Any]]]:
        """Decode one batch sharing its settings; (text, what to record) per item."""
        cfg, max_tokens = batch[0].settings.decode, batch[0].settings.max_tokens
        encoded = [self.encode_prompt(it.context) for it in batch]
        ids, mask = left_pad([e[0] for e in encoded], self.spec.pad_id if self.spec.pad_id is not None else 0)
        gens = [torch.Generator().manual_seed(seed_of(it.key)) for it in batch]
        start = time.perf_counter()
        out = generate(
            self.model,
            ids.to(self._device),
            cfg,
            tokens=self.spec,
            attention_mask=mask.to(self._device),
            generator=gens,
        )
        self.stats["decode_seconds"] += time.perf_counter() - start
        self.stats["requests"] += len(batch)
        self.stats["nfe"] += out.nfe * len(batch)
        outputs = []
        for row, (_ids, cut) in zip(out.completions.tolist(), encoded, strict=True):
            tokens = cut_at_stop(row, self.stops)
            hit = len(tokens) >= cfg.gen_length
            if max_tokens is not None and len(tokens) > max_tokens:
                tokens, hit = tokens[:max_tokens], True
            self.stats["generated_tokens"] += len(tokens)
            extra = {"tokens": len(tokens), "hit_length": hit}
            if cut:
                extra["prompt_tokens_cut"] = cut
            outputs.append((self.tokenizer.decode(tokens, skip_special_tokens=True), extra))
        return outputs

    # ---------------------------------------------------------------- likelihoods
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """LLaDA's Monte-Carlo ELBO of each continuation (with classifier-free guidance when
        cfg_scale > 0), and whether greedy decoding yields it (False without is_check_greedy)."""
        padding = padding_copies(requests)
        self._bound_padding(requests, padding)
        seed = self.current_seed()
        cfg_scale = self.decode.cfg_scale
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        cut_any = 0
        for idx, req in enumerate(tqdm(requests, desc="dllm loglikelihood", disable=disable_tqdm or self._rank != 0)):
            if idx in padding:
                continue
            context, continuation = req.args
            head, tail = self.encode_pair(context, continuation)
            if not tail:
                out[idx] = (0.0, True)
                continue
            room = max(0, self.args.max_prompt_tokens - len(tail))
            if len(head) > room:
                cut_any = max(cut_any, len(head) - room)
                head = head[len(head) - room :]
            prefix = torch.tensor(head, dtype=torch.long, device=self._device)
            target = torch.tensor(tail, dtype=torch.long, device=self._device)
            g = torch.Generator().manual_seed(seed_of(request_key(context + continuation, {"seed": seed})))
            ll = elbo_loglikelihood(
                self.model,
                prefix,
                target,
                mask_id=self.spec.mask_id,
                mc_num=self.args.mc_num,
                batch_size=self.args.batch_size,
                generator=g,
                shifted_logits=self.spec.shifted_logits,
                cfg_scale=cfg_scale,
            )
            greedy = self._greedy_yields(prefix, target, cfg_scale) if self.args.is_check_greedy else False
            out[idx] = (ll, greedy)
            self.request_log.append(
                {
                    "task": getattr(req, "task_name", None),
                    "doc_id": getattr(req, "doc_id", None),
                    "seed": seed,
                    "cfg_scale": cfg_scale,
                    "mc_num": self.args.mc_num,
                    "context_tokens": len(head),
                    "continuation_tokens": len(tail),
                }
            )
            self.cache_hook.add_partial("loglikelihood", req.args, out[idx])
        if cut_any:
            self.warn(
                f"log-likelihood contexts longer than max_prompt_tokens={self.args.max_prompt_tokens} "
                f"lost their first tokens (up to {cut_any} cut)"
            )
        for idx, source in padding.items():
            out[idx] = out[source]
        return [o if o is not None else (0.0, False) for o in out]

    def _greedy_yields(self, prefix: torch.Tensor, target: torch.Tensor, cfg_scale: float) -> bool:
        """LLaDA's suffix check: one token per step, most confident first, and compare."""
        n = target.numel()
        greedy = generate(
            self.model,
            prefix[None],
            DecodeConfig(gen_length=n, block_length=n, steps=n, cfg_scale=cfg_scale, early_exit=False),
            tokens=self.spec,
        )
        return bool(torch.equal(greedy.completions[0], target))

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
    from igpo.models.adapter import load_adapter

    return load_adapter(model, adapter).merge_and_unload()  # the same module, token_spec kept


class ForwardTimer:
    """Accumulates time spent inside the model's eager forward passes (for overhead figures).

    On a GPU it records CUDA events instead of synchronising around each pass (two host
    synchronisations per pass would stall the queue it measures); they are summed when read.
    Passes replayed from CUDA graphs or run compiled (`compile=...`) fire no module hooks and
    are not counted; passes being captured are skipped (an event cannot be recorded then).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self._seconds = 0.0
        self._start = 0.0
        self._events: list[tuple[Any, Any]] = []
        self._cuda = next(model.parameters()).is_cuda
        model.register_forward_pre_hook(self._pre)
        model.register_forward_hook(self._post)

    @property
    def seconds(self) -> float:
        if self._events:
            self._events[-1][1].synchronize()
            self._seconds += sum(a.elapsed_time(b) for a, b in self._events) / 1000
            self._events.clear()
        return self._seconds

    def _pre(self, module, args):
        if self._cuda and torch.cuda.is_current_stream_capturing():
            return
        if self._cuda:
            self._events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            self._events[-1][0].record()
        else:
            self._start = time.perf_counter()

    def _post(self, module, args, output):
        if self._cuda and torch.cuda.is_current_stream_capturing():
            return
        if self._cuda:
            self._events[-1][1].record()
        else:
            self._seconds += time.perf_counter() - self._start
