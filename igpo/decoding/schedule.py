"""The pieces of one denoising step: how many tokens to commit, sampling, confidence, selection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from igpo.errors import InvalidSetting

Generators = torch.Generator | Sequence[torch.Generator] | None
"""One generator for the batch, or one per row (then a row's samples ignore its batch-mates)."""

Remasking = Literal["low_confidence", "random"]
"""Confidence used to choose which candidates to commit: model probability, or uniform noise."""

UNIFORM_FLOOR = 1e-20
"""Lower clamp of uniform noise before the double log, so Gumbel noise is finite (never NaN)."""


def transfer_schedule(masked_count: torch.Tensor, steps: int) -> torch.Tensor:
    """LLaDA's schedule: [B, steps] tokens to commit per step, remainder to the earliest steps."""
    base = masked_count // steps
    remainder = masked_count % steps
    step_index = torch.arange(steps, device=masked_count.device)
    return base[:, None] + (step_index[None, :] < remainder[:, None]).long()


def uniform(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, generator: Generators) -> torch.Tensor:
    """U[0, 1) noise of `shape` [B, ...] drawn from one generator or from one per row."""
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        return torch.rand(shape, dtype=dtype, device=gen_device, generator=generator).to(device)
    if len(generator) != shape[0]:
        raise InvalidSetting(f"generator: got {len(generator)} generators for a batch of {shape[0]}")
    rows = [torch.rand(shape[1:], dtype=dtype, device=g.device, generator=g) for g in generator]
    return torch.stack(rows).to(device)


def sample_candidates(logits: torch.Tensor, temperature: float, generator: Generators) -> torch.Tensor:
    """Candidate token per position: argmax, after Gumbel noise (float64) when temperature > 0.

    argmax(l + T * g) with g = -log(-log u) equals LLaDA's argmax(exp(l) / (-log u) ** T)
    without overflowing exp(l).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    u = uniform(tuple(logits.shape), torch.float64, logits.device, generator)
    gumbel = -torch.log(-torch.log(u.clamp(min=UNIFORM_FLOOR)))
    return (logits.to(torch.float64) + temperature * gumbel).argmax(dim=-1)


def candidate_confidence(
    logits: torch.Tensor,
    candidates: torch.Tensor,
    remasking: Remasking,
    generator: Generators,
) -> torch.Tensor:
    """Confidence of each candidate: its softmax probability (float32) or uniform noise."""
    if remasking == "low_confidence":
        probs = torch.softmax(logits.float(), dim=-1)
        return probs.gather(-1, candidates[..., None]).squeeze(-1)
    return uniform(tuple(candidates.shape), torch.float32, logits.device, generator)


def select_top(
    confidence: torch.Tensor, k: torch.Tensor, ranks: torch.Tensor | None = None, k_max: int | None = None
) -> torch.Tensor:
    """Boolean [B, N]: the k[b] most confident positions of row b (confidence -inf never chosen).

    `k_max` (the largest k, when the host knows it, as under the fixed schedule) ranks only that
    many positions; without it all N are ranked, so no row's k is read on the host. Ties rank
    as torch.topk orders them for that k. `ranks` (arange(N)[None]) saves building it per call.
    """
    n = confidence.shape[-1] if k_max is None else min(k_max, confidence.shape[-1])
    if n == 0:
        return torch.zeros_like(confidence, dtype=torch.bool)
    if ranks is None:
        ranks = torch.arange(confidence.shape[-1], device=confidence.device)[None, :]
    top = torch.topk(confidence, k=n, dim=-1)
    keep = (ranks[:, :n] < k[:, None]) & torch.isfinite(top.values)
    return torch.zeros_like(confidence, dtype=torch.bool).scatter_(1, top.indices, keep)


def threshold_counts(confidence: torch.Tensor, threshold: float, masked: torch.Tensor, steps_left: int) -> torch.Tensor:
    """Tokens to commit under confidence-aware parallel decoding (Fast-dLLM's threshold rule).

    Every candidate whose confidence reaches `threshold`, at least one, and at least the share
    that still finishes the block within its remaining steps (so `steps` becomes a maximum).
    """
    remaining = masked.sum(dim=1)
    above = (confidence >= threshold).sum(dim=1)
    needed = (remaining + steps_left - 1) // steps_left
    return torch.minimum(torch.maximum(torch.maximum(above, needed), torch.ones_like(above)), remaining)


def factor_counts(confidence: torch.Tensor, factor: float, masked: torch.Tensor, steps_left: int) -> torch.Tensor:
    """Tokens to commit under Fast-dLLM's factor rule: the largest n whose n-th most confident
    candidate still has confidence above 1 - factor / (n + 1); at least one, and at least the
    share that finishes the block within its remaining steps."""
    remaining = masked.sum(dim=1)
    ordered = confidence.sort(dim=1, descending=True).values
    n = torch.arange(1, ordered.shape[1] + 1, device=confidence.device, dtype=ordered.dtype)
    ok = ordered > 1 - factor / (n + 1)
    ok &= n[None, :] <= remaining[:, None]
    # the rule stops at the first n that fails: count the leading run of passing ranks
    leading = torch.cumprod(ok.long(), dim=1).sum(dim=1)
    needed = (remaining + steps_left - 1) // steps_left
    return torch.minimum(torch.maximum(torch.maximum(leading, needed), torch.ones_like(leading)), remaining)
