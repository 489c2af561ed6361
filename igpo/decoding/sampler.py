"""The diffusion decoder: semi-autoregressive blocks with remasking, inpainting hints and CFG.

One loop serves evaluation, RL rollouts and hinted (inpainted) rollouts. At temperature 0 and
without a threshold it returns the same tokens as LLaDA's reference `generate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from igpo.decoding.config import DecodeConfig
from igpo.decoding.passes import BlockLogits
from igpo.decoding.rules import cache_policy, commit_rule
from igpo.decoding.schedule import Generators, candidate_confidence, sample_candidates, select_top, transfer_schedule
from igpo.errors import InvalidSetting
from igpo.models.loading import TokenSpec
from igpo.models.transformer import positions_from_mask

HINTED = -1
"""commit_step of a position fixed by a hint (visible from the first pass on)."""
UNDECODED = -2
"""commit_step of a position the early exit filled with EOS (masked in every pass)."""
LAST_OFFSET = 2.0
"""Subtracted from the confidence of `last_tokens` candidates: confidences lie in [0, 1], so they
rank below every other candidate but above positions that are not candidates (-inf)."""


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


def host_read(*tensors: torch.Tensor) -> list[int]:
    """The decoder's one way to read device values: every tensor's elements as ints, one sync.

    Decoding passes never call `.item()`, `bool(tensor)` or `nonzero`: what the host must know
    (which steps commit, whether a block is done, whether every row ended) is gathered here.
    """
    return torch.cat([t.reshape(-1).long() for t in tensors]).tolist()


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    cfg: DecodeConfig,
    *,
    tokens: TokenSpec | None = None,
    attention_mask: torch.Tensor | None = None,
    hints: torch.Tensor | None = None,
    generator: Generators = None,
    record_steps: bool = False,
) -> GenerateOutput:
    """Decode `cfg.gen_length` tokens after each prompt [B, P] by iterative unmasking.

    The completion is cut into blocks decoded left to right, `steps / num_blocks` steps each;
    each step commits the most confident still-masked candidates of the current block, as many
    as the commit rule says (igpo.decoding.rules; the mask token is never proposed).
    `tokens` (default: the model's `token_spec`) gives the mask id, the EOS id of the early exit
    (with `cfg.early_exit`: decoding stops after a block once every row has ended in EOS, the
    rest filled with EOS) and whether logits are shifted (Dream). `attention_mask` [B, P] marks
    left padding. `hints` [B, gen_length] fixes tokens (mask id where free): they start filled
    and are never changed. `generator` may be a list, one per row: each row's samples then
    depend only on its own generator, so a request decodes the same whatever batch it lands in.
    `record_steps` returns, per position, the pass that committed it (`commit_step`).
    Host synchronisations: one before the first pass, then at most one per pass (under a
    parallel rule: is the block done?) or one per block (the fixed schedule: did every row end?).
    """
    tokens, vocab = _checked(model, prompt_ids, cfg, tokens, attention_mask, hints)
    mask_id, eos_id = tokens.mask_id, tokens.eos_id if cfg.early_exit else None
    x, fixed, hints = _canvas(prompt_ids, cfg.gen_length, mask_id, hints)
    prompt_len = prompt_ids.shape[1]
    plan = _plan(x, fixed, hints, attention_mask, cfg, prompt_len, mask_id, eos_id is not None, vocab)
    rule = commit_rule(cfg)(cfg, plan.schedule, plan.step_max)
    cache = cache_policy(cfg)
    attn, positions = _attention(model, attention_mask, plan.padded, cfg.gen_length, x.device)
    args = (attn, positions, prompt_len, cfg.cfg_scale, mask_id, tokens.shifted_logits, cache, cfg.compile)
    block_logits = BlockLogits(model, *args)
    picker = Picker(vocab, mask_id, cfg.suppressed_ids(tokens), cfg.last_ids(tokens), cfg.block_length, x.device)
    commit_step = _commit_steps(fixed) if record_steps else None
    nfe = passes = 0
    for block in range(len(plan.step_max)):
        start = prompt_len + block * cfg.block_length
        end = start + cfg.block_length
        cache.start_block()
        ended = None  # whether every row ended in EOS, when a pass's read already told
        for step in rule.steps(block):
            masked = x[:, start:end] == mask_id
            fresh = cache.fresh()
            logits = block_logits(x, start, end, fresh=fresh)
            nfe += 2 if cfg.cfg_scale > 0 else 1
            candidates, confidence = picker(logits, masked, cfg.temperature, cfg.remasking, generator)
            commit = picker.select(confidence, *rule.counts(confidence, masked, block, step)) & masked
            x[:, start:end] = torch.where(commit, candidates, x[:, start:end])
            if commit_step is not None:
                commit_step[:, start - prompt_len : end - prompt_len].masked_fill_(commit, passes)
            passes += 1
            known = rule.known_commits(block, step)
            if known is not None:  # the host knows what the pass committed: no read
                cache.after_pass(fresh, known)
                continue
            # the pass's one read: is the block done, the most a row committed, did every row end?
            left = (masked & ~commit).any()
            most = commit.sum(dim=1).max() if cache.counts_tokens else left
            flag = _all_ended(x, prompt_len, end, eos_id) if plan.may_end[block] else left
            left, most, flag = host_read(left, most, flag)
            cache.after_pass(fresh, most)
            if not left:
                ended = bool(flag)
                break
        if plan.may_end[block]:
            if ended is None:
                ended = bool(host_read(_all_ended(x, prompt_len, end, eos_id))[0])
            if ended:
                x[:, end:] = eos_id
                break
    return GenerateOutput(sequences=x, nfe=nfe, prompt_length=prompt_len, commit_step=commit_step)


def _checked(model, prompt_ids, cfg, tokens, attention_mask, hints) -> tuple[TokenSpec, int | None]:
    """The token ids (given or the model's) and the vocabulary size, once every input is checked."""
    if not isinstance(cfg, DecodeConfig):
        raise InvalidSetting(f"generate takes a DecodeConfig, got {type(cfg).__name__}")
    tokens = tokens if tokens is not None else getattr(model, "token_spec", None)
    if tokens is None:
        raise InvalidSetting("generate needs tokens=TokenSpec(...): the model carries no token_spec")
    vocab = vocab_size_of(model)
    eos_id = tokens.eos_id if cfg.early_exit else None
    _validate(prompt_ids, attention_mask, cfg.gen_length, tokens.mask_id, eos_id, hints, vocab)
    _validate_model(model, cfg.cache)
    return tokens, vocab


def _canvas(prompt_ids, gen_length, mask_id, hints):
    """The canvas [B, P + gen_length] (the prompt, then masks, hinted positions filled), which
    completion positions are hinted [B, gen_length], and the hints on the canvas's device."""
    batch, prompt_len = prompt_ids.shape
    device = prompt_ids.device
    x = torch.full((batch, prompt_len + gen_length), mask_id, dtype=torch.long, device=device)
    x[:, :prompt_len] = prompt_ids
    fixed = torch.zeros(batch, gen_length, dtype=torch.bool, device=device)
    if hints is not None:
        hints = hints.to(device)
        fixed = hints != mask_id
        x[:, prompt_len:] = torch.where(fixed, hints, x[:, prompt_len:])
    return x, fixed, hints


@dataclass
class _Plan:
    """What the host knows before the first pass."""

    schedule: torch.Tensor
    """[B, blocks, steps_per_block]: the fixed schedule's counts."""
    step_max: list[list[int]]
    """[blocks][steps_per_block]: each step's largest count over rows."""
    may_end: list[bool]
    """Per block: the early exit may stop after it (no row has a hint after it)."""
    padded: bool


def _plan(x, fixed, hints, attention_mask, cfg, prompt_len, mask_id, early_exit, vocab) -> _Plan:
    """The one read before the first pass: bad hints, padding, and the whole fixed schedule
    (a block's masked count depends only on the hints, so every block's schedule is known now)."""
    batch, device = x.shape[0], x.device
    num_blocks = cfg.gen_length // cfg.block_length
    steps_per_block = cfg.steps // num_blocks
    block_masked = (x[:, prompt_len:].view(batch, num_blocks, cfg.block_length) == mask_id).sum(dim=2)
    schedule = transfer_schedule(block_masked.reshape(-1), steps_per_block).view(batch, num_blocks, steps_per_block)
    checks = [torch.zeros((), dtype=torch.bool, device=device)] * 2
    if hints is not None and vocab is not None:
        checks[0] = ((hints < 0) | (hints >= vocab)).any()
    if attention_mask is not None:
        checks[1] = ~attention_mask.to(device).bool().all()
    hints_after = fixed.view(batch, num_blocks, cfg.block_length).any(dim=2).any(dim=0).flip(0).cummax(0).values.flip(0)
    read = host_read(*checks, hints_after, schedule.amax(dim=0))
    if read[0]:
        raise InvalidSetting("hints hold token ids outside the vocabulary")
    may_end = [early_exit and b < num_blocks - 1 and not read[2 + b + 1] for b in range(num_blocks)]
    first = 2 + num_blocks
    step_max = [read[first + b * steps_per_block : first + (b + 1) * steps_per_block] for b in range(num_blocks)]
    return _Plan(schedule, step_max, may_end, bool(read[1]))


def _attention(model, attention_mask, padded, gen_length, device):
    """Attention mask and positions of the canvas: None for unpadded prompts (an all-ones mask is
    dropped); padded ones hide pads as keys, and native models count positions over real tokens."""
    if not padded:
        return None, None
    ones = torch.ones(attention_mask.shape[0], gen_length, dtype=attention_mask.dtype, device=device)
    attn = torch.cat([attention_mask.to(device), ones], dim=1)
    positions = positions_from_mask(attn) if getattr(model, "supports_kv_cache", False) else None
    return attn, positions


def _commit_steps(fixed: torch.Tensor) -> torch.Tensor:
    """GenerateOutput.commit_step before the first pass: HINTED where hinted, else UNDECODED."""
    commit_step = torch.full(fixed.shape, UNDECODED, dtype=torch.long, device=fixed.device)
    commit_step[fixed] = HINTED
    return commit_step


class Picker:
    """Per pass: candidates and their confidences, then which to commit, without host reads.

    Banned tokens enter as additive -inf rows (suppressed tokens for every use, the mask token
    for proposals), the same values as writing -inf into a copy of the logits.
    """

    def __init__(self, vocab, mask_id, suppress_tokens, last_tokens, block_length, device):
        self.vocab, self.mask_id, self.device = vocab, mask_id, device
        self.suppress = list(suppress_tokens or ())
        self.last = torch.tensor(list(last_tokens), device=device) if last_tokens else None
        self.ranks = torch.arange(block_length, device=device)[None, :]
        self.bias = None

    def _biases(self, logits: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        if self.bias is None or self.bias[1].dtype != logits.dtype:
            width = logits.shape[-1]
            suppress = None
            if self.suppress:
                suppress = torch.zeros(width, dtype=logits.dtype, device=logits.device)
                suppress[self.suppress] = float("-inf")
            propose = torch.zeros(width, dtype=logits.dtype, device=logits.device)
            propose[self.mask_id] = float("-inf")
            self.bias = (suppress, propose)
        return self.bias

    def __call__(self, logits, masked, temperature, remasking, generator):
        suppress, propose = self._biases(logits)
        if suppress is not None:  # like LLaDA's logits_eos_inf: gone from argmax and softmax
            logits = logits + suppress
        candidates = sample_candidates(logits + propose, temperature, generator)  # never the mask
        confidence = candidate_confidence(logits, candidates, remasking, generator)
        if self.last is not None:  # like LLaDA's confidence_eos_eot_inf: below every other candidate
            confidence = torch.where(torch.isin(candidates, self.last), confidence - LAST_OFFSET, confidence)
        return candidates, confidence.masked_fill(~masked, float("-inf"))

    def select(self, confidence: torch.Tensor, k: torch.Tensor, k_max: int | None = None) -> torch.Tensor:
        return select_top(confidence, k, self.ranks, k_max)


def _all_ended(x: torch.Tensor, prompt_len: int, end: int, eos_id: int) -> torch.Tensor:
    """0-dim bool: every row's decoded completion [prompt_len, end) ends in EOS with nothing but
    EOS after its first EOS (the EOS flags never fall from 1 to 0 and the last one is set)."""
    is_eos = x[:, prompt_len:end] == eos_id
    monotone = (is_eos[:, 1:] >= is_eos[:, :-1]).all(dim=1)
    return (monotone & is_eos[:, -1]).all()
