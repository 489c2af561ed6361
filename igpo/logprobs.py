"""Log-likelihood estimators for masked diffusion LMs (evaluation and the RL trainer).

- `elbo_loglikelihood`: LLaDA's Monte-Carlo lower bound on log p(target | prefix) for lm-eval's
  log-likelihood requests (1-D inputs, stratified masked counts).
- RL estimators, registered by name in ESTIMATORS (`logprob_estimator` picks one); each returns an `Estimate`
  usable for old, new and reference log-probs alike:
  `mean_field` (diffu-GRPO, one pass), `trajectory` (the decoder's own probabilities, replayed),
  `elbo` (a sequence-level ELBO: only its per-sequence sum is a log-probability bound).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from igpo.decoding.sampler import HINTED
from igpo.errors import InvalidSetting
from igpo.models.logits import guidance_canvas, guided, token_logits


@dataclass
class Estimate:
    """Log-probability terms of a batch of completions [B, T].

    For token-level estimators `logp[b, t]` is log p(token t). For the sequence-level ELBO only
    the masked sum over a row is meaningful (the row's ELBO); single entries are not
    log-probabilities and must not enter a per-token ratio or KL.
    """

    logp: torch.Tensor
    entropy: torch.Tensor | None = None
    sequence_level: bool = False


@torch.no_grad()
def elbo_loglikelihood(
    model: nn.Module,
    prefix: torch.Tensor,
    target: torch.Tensor,
    *,
    mask_id: int,
    mc_num: int = 128,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
    shifted_logits: bool = False,
    cfg_scale: float = 0.0,
) -> float:
    """Monte-Carlo ELBO of log p(target | prefix) with `mc_num` masked samples (1-D inputs).

    `cfg_scale` > 0 applies classifier-free guidance as LLaDA's likelihood evaluation does: the
    logits become u + (s + 1)(c - u), with u from the same sample with the prefix masked too."""
    for name, value in (("mc_num", mc_num), ("batch_size", batch_size)):
        if value <= 0:
            raise InvalidSetting(f"{name} must be positive, got {value}")
    device = prefix.device
    plen, tlen = prefix.numel(), target.numel()
    seq = torch.cat([prefix, target]).to(device)
    total, count = 0.0, 0
    while count < mc_num:
        b = min(batch_size, mc_num - count)
        start = int(torch.randint(1, tlen + 1, (1,), generator=generator).item())
        # Stratified masked counts: spread b counts evenly around the cycle 1..T from `start`.
        levels = torch.round(torch.linspace(start, start + (b - 1) * tlen / b, b)).long()
        levels = (levels - 1) % tlen + 1
        order = torch.argsort(torch.rand(b, tlen, generator=generator), dim=1)
        masked = order < levels[:, None]  # a uniformly random subset of size levels[i] per row
        x = seq.repeat(b, 1)
        x[:, plen:] = torch.where(masked.to(device), torch.full_like(x[:, plen:], mask_id), x[:, plen:])
        if cfg_scale > 0:
            full = guided(model(guidance_canvas(x, plen, mask_id)).logits, cfg_scale)
        else:
            full = model(x).logits
        logits = _completion_logits(full, plen, tlen, shifted_logits)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), seq[plen:].repeat(b), reduction="none")
        nll = nll.view(b, tlen) * masked.to(device)
        weight = (tlen / levels.to(device).float())[:, None]
        total += float((nll * weight).sum())
        count += b
    return -total / count


def mean_field_logprobs(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    *,
    mask_id: int,
    attention_mask: torch.Tensor | None = None,
    p_mask_prompt: float = 0.0,
    generator: torch.Generator | None = None,
    shifted_logits: bool = False,
    with_entropy: bool = False,
) -> Estimate:
    """diffu-GRPO's one-step estimate of per-token log-probs of a completion, in one pass.

    The whole completion is masked and the prompt kept clean (or each prompt token masked with
    probability `p_mask_prompt`, as d1 does); the log-probability of each true completion token
    at its position is read off, i.e. log p(token | prompt) with nothing else of the completion
    seen. Gradients flow through logp under grad mode; `attention_mask` covers the prompt.
    """
    batch, plen = prompt_ids.shape
    tlen = completion_ids.shape[1]
    prompt = prompt_ids
    if p_mask_prompt > 0:
        drop = torch.rand(prompt.shape, generator=generator, device=generator.device if generator else None)
        drop = drop.to(prompt.device) < p_mask_prompt
        prompt = torch.where(drop, torch.full_like(prompt, mask_id), prompt)
    x = torch.cat([prompt, torch.full((batch, tlen), mask_id, dtype=torch.long, device=prompt.device)], dim=1)
    logits = _completion_logits(
        model(x, attention_mask=_extend_mask(attention_mask, batch, tlen)).logits, plen, tlen, shifted_logits
    )
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, completion_ids[..., None]).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logp_all.exp() * logp_all).sum(-1)
    return Estimate(logp=logp, entropy=entropy)


def _completion_logits(logits: torch.Tensor, plen: int, tlen: int, shifted: bool) -> torch.Tensor:
    """Logits [N, T, V] scoring the completion positions plen .. plen + T - 1."""
    return token_logits(logits, plen, plen + tlen, shifted)


def _extend_mask(attention_mask: torch.Tensor | None, rows: int, tlen: int) -> torch.Tensor | None:
    if attention_mask is None:
        return None
    ones = torch.ones(attention_mask.shape[0], tlen, dtype=attention_mask.dtype, device=attention_mask.device)
    full = torch.cat([attention_mask, ones], dim=1)
    return full.repeat(rows // full.shape[0], 1)


def trajectory_logprobs(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    commit_step: torch.Tensor,
    *,
    mask_id: int,
    temperature: float = 1.0,
    group_steps: int = 1,
    suppress_tokens: tuple[int, ...] | list[int] = (),
    attention_mask: torch.Tensor | None = None,
    shifted_logits: bool = False,
    with_entropy: bool = False,
    max_rows: int = 256,
) -> Estimate:
    """log p of each completion token at the decoding pass that committed it (TraceRL's idea).

    `commit_step` [B, T] comes from `generate(record_steps=True)`. The canvas before pass s holds
    the prompt, the hints and every token committed at an earlier pass; the rest is masked. The
    token is scored as the decoder sampled it: softmax(logits / temperature) (temperature 0 scores
    at 1), the mask token and `suppress_tokens` excluded. So at `group_steps=1` the sum over a row
    is the exact log-probability with which the decoder sampled the tokens it committed, pass by
    pass (one forward pass per decoding pass). Not modelled: which positions get committed (with
    low-confidence remasking or a parallel rule that choice depends on the samples' own
    probabilities), so this is the trajectory's token likelihood, not its full likelihood;
    with `remasking="random"` and a fixed schedule the selection does not depend on the model.
    `group_steps=k` scores the tokens of k consecutive passes with the canvas before the first of them: k times fewer passes; tokens of later passes in a group see fewer
    of their predecessors than the decoder did (an approximation, exact again at k=1).
    Hint positions (HINTED) are scored with the first pass's canvas with every hint masked, i.e.
    as the policy without hints would have proposed them first; early-exit EOS fill (UNDECODED)
    gets log p = 0. Valid for exact decoding: KV-cached rollouts saw approximate logits.
    Gradients flow under grad mode; canvases run `max_rows` at a time.
    """
    if group_steps < 1:
        raise InvalidSetting(f"group_steps must be >= 1, got {group_steps}")
    batch, plen = prompt_ids.shape
    tlen = completion_ids.shape[1]
    device = completion_ids.device
    commit_step = commit_step.to(device)
    hinted = commit_step == HINTED
    decoded = commit_step >= 0
    # score_group[b, t]: which canvas scores the token (-1: hint canvas; -2: not scored)
    score_group = torch.where(decoded, commit_step // group_steps, torch.full_like(commit_step, -2))
    score_group = torch.where(hinted, torch.full_like(commit_step, -1), score_group)
    groups = sorted(set(score_group.unique().tolist()) - {-2})
    masked_canvas = torch.full_like(completion_ids, mask_id)
    canvases, owners = [], []
    for q in groups:
        if q == -1:
            visible = torch.zeros_like(hinted)
        else:
            visible = hinted | (decoded & (commit_step < q * group_steps))
        canvases.append(torch.cat([prompt_ids, torch.where(visible, completion_ids, masked_canvas)], dim=1))
        owners.append(q)
    scale = temperature if temperature > 0 else 1.0
    logp = torch.zeros(batch, tlen, device=device)
    entropy = torch.zeros(batch, tlen, device=device) if with_entropy else None
    per_chunk = max(1, max_rows // batch)
    for lo in range(0, len(canvases), per_chunk):
        chunk = torch.cat(canvases[lo : lo + per_chunk])
        rows = chunk.shape[0]
        logits = model(chunk, attention_mask=_extend_mask(attention_mask, rows, tlen)).logits
        logits = _completion_logits(logits, plen, tlen, shifted_logits).float() / scale
        logits[..., mask_id] = float("-inf")
        if suppress_tokens:
            logits[..., list(suppress_tokens)] = float("-inf")
        for i, q in enumerate(owners[lo : lo + per_chunk]):
            sel = score_group == q
            if not sel.any():
                continue
            part = torch.log_softmax(logits[i * batch : (i + 1) * batch][sel], dim=-1)
            token_logp = part.gather(-1, completion_ids[sel][:, None]).squeeze(-1)
            logp = logp.index_put((sel,), token_logp)
            if entropy is not None:
                with torch.no_grad():
                    probs = part.exp()
                    ent = -(probs * part.masked_fill(probs == 0, 0.0)).sum(-1)
                    entropy[sel] = ent
    return Estimate(logp=logp, entropy=entropy)


def sequence_elbo(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    token_mask: torch.Tensor,
    *,
    mask_id: int,
    mc_num: int = 2,
    generator: torch.Generator | None = None,
    shifted_logits: bool = False,
    attention_mask: torch.Tensor | None = None,
) -> Estimate:
    """LLaDA's ELBO of log p(completion tokens in `token_mask` | prompt, the other tokens), per row.

    Each of `mc_num` draws masks l ~ U{1..n} of the row's n scored tokens (a uniform subset) and
    adds (n / l) * sum of log p over the masked ones; the mean over draws is an unbiased estimate
    of a lower bound on the log-likelihood. The same `generator` state gives the same masks, so
    old, new and reference estimates share them. `logp` holds the terms whose row sum is the
    ELBO (`sequence_level=True`).
    """
    if mc_num <= 0:
        raise InvalidSetting(f"mc_num must be positive, got {mc_num}")
    batch, plen = prompt_ids.shape
    tlen = completion_ids.shape[1]
    device = completion_ids.device
    token_mask = token_mask.to(device).bool()
    n = token_mask.sum(1)
    total = torch.zeros(batch, tlen, device=device)
    for _ in range(mc_num):
        noise = torch.rand(batch, tlen, generator=generator).to(device)
        noise = noise.masked_fill(~token_mask, 2.0)  # unscored tokens are never picked
        u = torch.rand(batch, generator=generator).to(device)
        levels = (u * n.clamp(min=1)).long() + 1  # l ~ U{1..n}
        rank = noise.argsort(dim=1).argsort(dim=1)
        masked = (rank < levels[:, None]) & token_mask
        noisy = torch.where(masked, torch.full_like(completion_ids, mask_id), completion_ids)
        logits = model(
            torch.cat([prompt_ids, noisy], dim=1), attention_mask=_extend_mask(attention_mask, batch, tlen)
        ).logits
        logits = _completion_logits(logits, plen, tlen, shifted_logits)
        logp = torch.log_softmax(logits.float(), -1).gather(-1, completion_ids[..., None]).squeeze(-1)
        weight = (n.float() / levels.float())[:, None]
        total = total + torch.where(masked, logp * weight, torch.zeros_like(logp))
    return Estimate(logp=total / mc_num, sequence_level=True)


@dataclass(frozen=True)
class EstimatorBatch:
    """What an RL estimator scores: one group of rollouts and how they were decoded."""

    prompt_ids: torch.Tensor
    completion_ids: torch.Tensor
    mask_id: int
    shifted_logits: bool = False
    commit_step: torch.Tensor | None = None
    """The pass that committed each token (`generate(record_steps=True)`), for `trajectory`."""
    token_mask: torch.Tensor | None = None
    """The loss tokens, for the sequence-level `elbo` (its sum runs over them)."""
    generator: torch.Generator | None = None
    with_entropy: bool = False


@dataclass(frozen=True)
class EstimatorSettings:
    """The trainer's knobs the estimators read (RLConfig fields of the same meaning)."""

    temperature: float = 1.0
    """The rollouts' sampling temperature (trajectory scores softmax(logits / T))."""
    suppress_tokens: tuple[int, ...] = ()
    group_steps: int = 1
    """trajectory: decoding passes scored with one canvas."""
    p_mask_prompt: float = 0.0
    """mean_field: share of prompt tokens masked at random."""
    elbo_samples: int = 2
    """elbo: random maskings per sequence."""


@dataclass(frozen=True)
class Estimator:
    """A registered RL log-prob estimator: `fn(model, batch, settings) -> Estimate`."""

    name: str
    fn: Callable[[nn.Module, EstimatorBatch, EstimatorSettings], Estimate]
    sequence_level: bool = False
    """Only the per-sequence sum is a log-probability (sequence ratio and KL only)."""
    fixed_passes: bool = True
    """Runs the same number of forward passes for every group of a given shape (a sharded model
    needs that: every process takes part in each pass's all-gathers)."""


ESTIMATORS: dict[str, Estimator] = {}
"""name -> estimator, the values `RLConfig.logprob_estimator` accepts (verl-style registry)."""


def register(name: str, *, sequence_level: bool = False, fixed_passes: bool = True):
    """Decorator adding an estimator function to ESTIMATORS under `name`."""

    def add(fn):
        ESTIMATORS[name] = Estimator(name, fn, sequence_level, fixed_passes)
        return fn

    return add


@register("mean_field")
def _mean_field(model, batch: EstimatorBatch, settings: EstimatorSettings) -> Estimate:
    """log p(token | prompt, whole completion masked): one pass (diffu-GRPO, released IGPO)."""
    return mean_field_logprobs(
        model,
        batch.prompt_ids,
        batch.completion_ids,
        mask_id=batch.mask_id,
        p_mask_prompt=settings.p_mask_prompt,
        generator=batch.generator,
        shifted_logits=batch.shifted_logits,
        with_entropy=batch.with_entropy,
    )


@register("trajectory", fixed_passes=False)  # one pass per commit-step group present in the data
def _trajectory(model, batch: EstimatorBatch, settings: EstimatorSettings) -> Estimate:
    """Each token's probability at the decoding pass that committed it (TraceRL's idea)."""
    if batch.commit_step is None:
        raise InvalidSetting("the trajectory estimator needs the rollouts' commit steps (record_steps=True)")
    return trajectory_logprobs(
        model,
        batch.prompt_ids,
        batch.completion_ids,
        batch.commit_step,
        mask_id=batch.mask_id,
        temperature=settings.temperature,
        group_steps=settings.group_steps,
        suppress_tokens=settings.suppress_tokens,
        shifted_logits=batch.shifted_logits,
        with_entropy=batch.with_entropy,
    )


@register("elbo", sequence_level=True)
def _elbo(model, batch: EstimatorBatch, settings: EstimatorSettings) -> Estimate:
    """LLaDA's sequence-level ELBO over the loss tokens; without them (the pass that ranks hint
    tokens by entropy, before the loss mask exists) the mean-field estimate stands in."""
    if batch.token_mask is None:
        return _mean_field(model, batch, settings)
    return sequence_elbo(
        model,
        batch.prompt_ids,
        batch.completion_ids,
        batch.token_mask,
        mask_id=batch.mask_id,
        mc_num=settings.elbo_samples,
        generator=batch.generator,
        shifted_logits=batch.shifted_logits,
    )
