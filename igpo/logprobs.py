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
