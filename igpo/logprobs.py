"""Log-likelihood estimators for masked diffusion LMs.

`elbo_loglikelihood` is LLaDA's Monte-Carlo lower bound on log p(target | prefix): mask a random
number l of the target tokens (l stratified over 1..T across the batch), score the masked tokens,
weight by T / l, and average over samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _logits(model: nn.Module, x: torch.Tensor, shifted: bool) -> torch.Tensor:
    logits = model(x).logits
    if shifted:  # position i predicts i+1: realign so logits[:, j] scores token j
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    return logits


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
) -> float:
    """Monte-Carlo ELBO of log p(target | prefix) with `mc_num` masked samples (1-D inputs)."""
    if mc_num <= 0 or batch_size <= 0:
        raise ValueError(f"mc_num and batch_size must be positive, got {mc_num}, {batch_size}")
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
        logits = _logits(model, x, shifted_logits)[:, plen:]
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """diffu-GRPO's one-step estimate of per-token log-probs of a completion, in one pass.

    The whole completion is masked and the prompt kept clean (or each prompt token masked with
    probability `p_mask_prompt`, as d1 does); the log-probability of each true completion token
    at its position is read off. Returns (logp [B, T], entropy [B, T] or None); gradients flow
    through logp when called under grad mode. `attention_mask` covers the prompt (padding).
    """
    batch, plen = prompt_ids.shape
    tlen = completion_ids.shape[1]
    prompt = prompt_ids
    if p_mask_prompt > 0:
        drop = torch.rand(prompt.shape, generator=generator, device=generator.device if generator else None)
        drop = drop.to(prompt.device) < p_mask_prompt
        prompt = torch.where(drop, torch.full_like(prompt, mask_id), prompt)
    x = torch.cat([prompt, torch.full((batch, tlen), mask_id, dtype=torch.long, device=prompt.device)], dim=1)
    attn = None
    if attention_mask is not None:
        attn = torch.cat([attention_mask, torch.ones(batch, tlen, dtype=attention_mask.dtype,
                                                     device=attention_mask.device)], dim=1)
    logits = model(x, attention_mask=attn).logits
    if shifted_logits:
        logits = logits[:, plen - 1: plen + tlen - 1] if plen > 0 else torch.cat([logits[:, :1], logits[:, : tlen - 1]], 1)
    else:
        logits = logits[:, plen:]
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, completion_ids[..., None]).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


ELBO_MIN_RATE = 1e-3
"""Lower end of the masking rate t in the ELBO estimator (bounds the 1/t weight)."""


def elbo_token_logprobs(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    *,
    mask_id: int,
    mc_num: int = 2,
    generator: torch.Generator | None = None,
    shifted_logits: bool = False,
) -> torch.Tensor:
    """Per-token Monte-Carlo ELBO terms [B, T]: mean over `mc_num` draws of 1[masked] log p / t.

    Their sum over a completion is LLaDA's ELBO estimate of its log-likelihood; an alternative to
    the one-step mean-field estimate that sees partially masked canvases (costs mc_num passes).
    Gradients flow when called under grad mode.
    """
    if mc_num <= 0:
        raise ValueError(f"mc_num must be positive, got {mc_num}")
    batch, plen = prompt_ids.shape
    tlen = completion_ids.shape[1]
    total = torch.zeros(batch, tlen, device=completion_ids.device)
    for _ in range(mc_num):
        t = ELBO_MIN_RATE + (1 - ELBO_MIN_RATE) * torch.rand(batch, generator=generator)
        masked = (torch.rand(batch, tlen, generator=generator) < t[:, None]).to(completion_ids.device)
        noisy = torch.where(masked, torch.full_like(completion_ids, mask_id), completion_ids)
        logits = model(torch.cat([prompt_ids, noisy], dim=1)).logits
        logits = logits[:, plen - 1: plen + tlen - 1] if shifted_logits else logits[:, plen:]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, completion_ids[..., None]).squeeze(-1)
        total = total + logp * masked / t.to(logp.device)[:, None]
    return total / mc_num
