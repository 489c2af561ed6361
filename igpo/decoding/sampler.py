"""The diffusion decoder: semi-autoregressive blocks with remasking, inpainting hints and CFG.

One loop serves evaluation, RL rollouts and hinted (inpainted) rollouts. At temperature 0 and
without a threshold it returns the same tokens as LLaDA's reference `generate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from igpo.decoding.config import check_settings
from igpo.decoding.schedule import (
    Generators,
    candidate_confidence,
    factor_counts,
    sample_candidates,
    select_top,
    threshold_counts,
    transfer_schedule,
)
from igpo.errors import InvalidSetting

HINTED = -1
"""commit_step of a position fixed by a hint (visible from the first pass on)."""
UNDECODED = -2
LAST_OFFSET = 2.0
"""Subtracted from the confidence of `last_tokens` candidates: confidences lie in [0, 1], so they
rank below every other candidate but above positions that are not candidates (-inf)."""
"""commit_step of a position the early exit filled with EOS (masked in every pass)."""


@dataclass
class GenerateOutput:
    """Decoded canvases and what they cost."""

    sequences: torch.Tensor
    """[B, P + gen_length]: the prompt (as given, padding included) then the completion."""
    nfe: int
    """Network function evaluations made (a classifier-free-guidance step counts two)."""
    prompt_length: int
    commit_step: torch.Tensor | None = None
    """[B, gen_length] with `record_steps`: the pass (0, 1, ... over the whole decode) at which
    each position was committed; HINTED for positions fixed by hints, UNDECODED for positions
    filled with EOS by the early exit. The log-prob estimator `trajectory` replays it."""

    @property
    def completions(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_length :]


def vocab_size_of(model: nn.Module) -> int | None:
    """Vocabulary size from the model's config or input embeddings, if it exposes either."""
    cfg = getattr(model, "config", None)
    size = getattr(cfg, "vocab_size", None)
    if size is None and hasattr(model, "get_input_embeddings"):
        emb = model.get_input_embeddings()
        size = getattr(emb, "num_embeddings", None)
    return int(size) if size is not None else None


def _validate_model(model, cache) -> None:
    """The fast-decoding check that needs the model: KV caching needs a native one."""
    if cache is not None and not getattr(model, "supports_kv_cache", False):
        raise InvalidSetting(f"cache={cache!r} needs a native model (llada, Dream, igpo_tiny) with KV caching")


def _validate(prompt_ids, attention_mask, gen_length, mask_id, eos_id, hints, vocab) -> None:
    """Checks of the inputs (the settings are checked by check_settings)."""
    if prompt_ids.ndim != 2 or prompt_ids.dtype != torch.long:
        raise InvalidSetting(
            f"prompt_ids must be a LongTensor [B, P], got {tuple(prompt_ids.shape)} {prompt_ids.dtype}"
        )
    if attention_mask is not None and attention_mask.shape != prompt_ids.shape:
        raise InvalidSetting(
            f"attention_mask shape {tuple(attention_mask.shape)} != prompt_ids shape {tuple(prompt_ids.shape)}"
        )
    if vocab is not None:
        for name, value in (("mask_id", mask_id), ("eos_id", eos_id)):
            if value is not None and not 0 <= value < vocab:
                raise InvalidSetting(f"{name}={value} lies outside the vocabulary [0, {vocab})")
    if hints is not None:
        if hints.shape != (prompt_ids.shape[0], gen_length):
            raise InvalidSetting(
                f"hints must have shape [B, gen_length] = {(prompt_ids.shape[0], gen_length)}, got {tuple(hints.shape)}"
            )
        if vocab is not None and ((hints < 0) | (hints >= vocab)).any():
            raise InvalidSetting("hints hold token ids outside the vocabulary")


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    gen_length: int,
    block_length: int,
    steps: int,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    cfg_scale: float = 0.0,
    mask_id: int,
    eos_id: int | None = None,
    hints: torch.Tensor | None = None,
    threshold: float | None = None,
    factor: float | None = None,
    cache: str | None = None,
    cache_refresh: int | None = None,
    cache_refresh_tokens: int | None = None,
    suppress_tokens: list[int] | tuple[int, ...] | None = None,
    last_tokens: list[int] | tuple[int, ...] | None = None,
    generator: Generators = None,
    shifted_logits: bool | None = None,
    record_steps: bool = False,
) -> GenerateOutput:
    """Decode `gen_length` tokens after each prompt by iterative unmasking.

    The completion is cut into blocks decoded left to right, `steps / num_blocks` steps each;
    each step commits the most confident still-masked candidates of the current block.
    The mask token is never proposed (LLaDA's reference would commit it if a model predicted
    it); confidences still come from the full softmax, so tokens match the reference otherwise.
    `hints` [B, gen_length] fixes tokens (mask_id where free): they start filled and are never
    changed. `threshold` commits every candidate at least that confident (steps become a cap).
    With `eos_id`, decoding stops after a block once every row has ended in EOS; the rest is
    filled with EOS. `generator` may be a list, one per row: each row's samples then depend only
    on its own generator, so a request decodes the same whatever batch it lands in.
    `shifted_logits` (default: the model's token_spec) shifts Dream-style logits.
    `last_tokens` candidates are committed only when no other candidate of the block is left.
    `record_steps` returns, per position, the pass that committed it (`commit_step`).
    """
    check_settings(
        gen_length=gen_length,
        block_length=block_length,
        steps=steps,
        temperature=temperature,
        remasking=remasking,
        cfg_scale=cfg_scale,
        threshold=threshold,
        factor=factor,
        cache=cache,
        cache_refresh=cache_refresh,
        cache_refresh_tokens=cache_refresh_tokens,
    )
    _validate(prompt_ids, attention_mask, gen_length, mask_id, eos_id, hints, vocab_size_of(model))
    _validate_model(model, cache)
    if shifted_logits is None:
        shifted_logits = bool(getattr(getattr(model, "token_spec", None), "shifted_logits", False))
    device = prompt_ids.device
    batch, prompt_len = prompt_ids.shape
    x = torch.full((batch, prompt_len + gen_length), mask_id, dtype=torch.long, device=device)
    x[:, :prompt_len] = prompt_ids
    fixed = torch.zeros(batch, gen_length, dtype=torch.bool, device=device)
    if hints is not None:
        hints = hints.to(device)
        fixed = hints != mask_id
        x[:, prompt_len:] = torch.where(fixed, hints, x[:, prompt_len:])
    attn = None
    if attention_mask is not None:
        ones = torch.ones(batch, gen_length, dtype=attention_mask.dtype, device=device)
        attn = torch.cat([attention_mask.to(device), ones], dim=1)

    block_logits = BlockLogits(model, attn, prompt_len, cfg_scale, mask_id, shifted_logits, cache)
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    nfe = passes = 0
    commit_step = None
    if record_steps:
        commit_step = torch.full((batch, gen_length), UNDECODED, dtype=torch.long, device=device)
        commit_step[fixed] = HINTED
    for block in range(num_blocks):
        start = prompt_len + block * block_length
        end = start + block_length
        schedule = transfer_schedule((x[:, start:end] == mask_id).sum(dim=1), steps_per_block)
        passes_in_block = stale = 0  # stale: most tokens a row committed since the cache was filled
        for step in range(steps_per_block):
            masked = x[:, start:end] == mask_id
            if threshold is None and factor is None and not schedule[:, step].any():
                continue  # nothing to commit: skipping the pass leaves every token unchanged
            if not masked.any():
                break
            fresh = passes_in_block % cache_refresh == 0 if cache_refresh else passes_in_block == 0
            fresh = fresh or (cache_refresh_tokens is not None and stale >= cache_refresh_tokens)
            logits = block_logits(x, start, end, fresh=fresh)
            passes_in_block += 1
            nfe += 2 if cfg_scale > 0 else 1
            if suppress_tokens:  # like LLaDA's logits_eos_inf: gone from argmax and softmax
                logits[..., list(suppress_tokens)] = float("-inf")
            proposal = logits.clone()
            proposal[..., mask_id] = float("-inf")  # never propose the mask token itself
            candidates = sample_candidates(proposal, temperature, generator)
            confidence = candidate_confidence(logits, candidates, remasking, generator)
            if last_tokens:  # like LLaDA's confidence_eos_eot_inf: below every other candidate
                late = torch.isin(candidates, torch.tensor(list(last_tokens), device=device))
                confidence = torch.where(late, confidence - LAST_OFFSET, confidence)
            confidence = torch.where(masked, confidence, torch.full_like(confidence, float("-inf")))
            if threshold is not None:
                k = threshold_counts(confidence, threshold, masked, steps_per_block - step)
            elif factor is not None:
                k = factor_counts(confidence, factor, masked, steps_per_block - step)
            else:
                k = schedule[:, step]
            commit = select_top(confidence, k) & masked
            x[:, start:end] = torch.where(commit, candidates, x[:, start:end])
            if cache_refresh_tokens is not None:
                stale = (0 if fresh else stale) + int(commit.sum(dim=1).max())
            if commit_step is not None:
                window = commit_step[:, start - prompt_len : end - prompt_len]
                window.masked_fill_(commit, passes)
            passes += 1
        if eos_id is not None and block < num_blocks - 1 and _all_ended(x, prompt_len, end, eos_id, fixed):
            x[:, end:] = eos_id
            break
    return GenerateOutput(sequences=x, nfe=nfe, prompt_length=prompt_len, commit_step=commit_step)


class BlockLogits:
    """Logits of the current block, from a full pass or, with a KV cache, from a window pass.

    prefix: at a block's first step one full pass fills the cache; later steps recompute the
    block and everything after it, reusing the cached keys/values before the block.
    dual: later steps recompute only the block (keys/values after it are reused too).
    The caller marks which passes are full (`fresh`): a block's first, with `cache_refresh` every
    k-th, with `cache_refresh_tokens` the first after a row committed that many tokens.
    """

    def __init__(self, model, attn, prompt_len, cfg_scale, mask_id, shifted, cache_mode):
        self.model, self.prompt_len, self.cfg_scale = model, prompt_len, cfg_scale
        self.mask_id, self.shifted, self.mode = mask_id, shifted, cache_mode
        self.attn = None if attn is None else (torch.cat([attn, attn]) if cfg_scale > 0 else attn)
        self.cache = None

    def canvas(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg_scale <= 0:
            return x
        uncond = x.clone()
        uncond[:, : self.prompt_len] = self.mask_id
        return torch.cat([x, uncond])

    def guided(self, logits: torch.Tensor) -> torch.Tensor:
        if self.cfg_scale <= 0:
            return logits
        cond, unc = logits.chunk(2, dim=0)
        return unc + (self.cfg_scale + 1) * (cond - unc)

    def __call__(self, x: torch.Tensor, start: int, end: int, fresh: bool) -> torch.Tensor:
        """Logits [B, block, V]; `fresh` marks a block's first pass (it refills the cache)."""
        lo = start - 1 if self.shifted and start > 0 else start  # shifted: token j read at j-1
        inputs = self.canvas(x)
        if self.mode is None or fresh:
            if self.mode is not None:
                from igpo.models.transformer import KVCache

                self.cache = KVCache()
                logits = self.model(inputs, attention_mask=self.attn, cache=self.cache).logits
            else:
                logits = self.model(inputs, attention_mask=self.attn).logits
            logits = self.guided(logits)
            offset = 0
        else:
            hi = inputs.shape[1] if self.mode == "prefix" else end
            logits = self.model(inputs[:, lo:hi], attention_mask=self.attn, cache=self.cache, window=(lo, hi)).logits
            logits = self.guided(logits)
            offset = lo
        if self.shifted:  # position i predicts token i+1 (position 0 keeps its own logits)
            if start == 0:
                return torch.cat([logits[:, :1], logits[:, : end - 1]], dim=1)
            return logits[:, start - 1 - offset : end - 1 - offset]
        return logits[:, start - offset : end - offset]


def _all_ended(x, prompt_len, end, eos_id, fixed) -> bool:
    """True when every row's decoded completion holds an EOS followed only by EOS, and no hint
    tokens wait in the blocks still to come."""
    done = x[:, prompt_len:end]
    is_eos = done == eos_id
    has_eos = is_eos.any(dim=1)
    first = torch.where(
        has_eos, is_eos.float().argmax(dim=1), torch.full_like(has_eos, done.shape[1], dtype=torch.long)
    )
    after_first = torch.arange(done.shape[1], device=x.device)[None, :] >= first[:, None]
    tail_ok = (is_eos | ~after_first).all(dim=1)
    no_hints_ahead = ~fixed[:, end - prompt_len :].any(dim=1)
    return bool((has_eos & tail_ok & no_hints_ahead).all())
