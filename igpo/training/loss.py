"""The clipped policy-gradient objective with a k3 KL penalty, at token or sequence level.

Shapes: per-token tensors are [B, T]; `mask` marks the tokens that enter the loss (completion up
to its first EOS, minus hint tokens the entropy filter dropped); advantages are [B].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from igpo.errors import InvalidSetting

RATIO_LEVELS = ("token", "sequence")
NORMALISATIONS = ("sequence", "token", "constant")
"""How per-token terms become one number:
sequence - mean over each sequence's tokens, then over sequences (GRPO);
token    - sum over all tokens / number of tokens in the step (DAPO): the trainer weights each
           prompt group's token mean by its share of the step's loss tokens (`token_weights`), so
           the step's loss is one token mean over all its groups (and processes);
constant - sum over all tokens / (batch size x completion length) (Dr. GRPO)."""


@dataclass
class PolicyLossConfig:
    """The RL objective's knobs (defaults: the released IGPO run)."""

    ratio_level: str = "sequence"
    """token: PPO ratio per token; sequence: GSPO ratio exp(mean_t(logp - logp_old)) per rollout."""
    epsilon_low: float = 0.2
    """Lower clip: ratios below 1 - epsilon_low stop pushing."""
    epsilon_high: float = 0.2
    """Upper clip: ratios above 1 + epsilon_high stop pushing."""
    beta: float = 0.01
    """Weight of the k3 KL penalty to the reference (base) model; 0 skips the reference pass."""
    normalisation: str = "sequence"
    """sequence | token | constant (see NORMALISATIONS); `token` is the token mean over the whole
    training step (every prompt group, every process). With ratio_level=sequence only `sequence`
    is possible (the sequence ratio is a per-rollout token mean)."""

    def __post_init__(self) -> None:
        if self.ratio_level not in RATIO_LEVELS:
            raise InvalidSetting(f"ratio_level must be one of {RATIO_LEVELS}, got {self.ratio_level!r}")
        if self.normalisation not in NORMALISATIONS:
            raise InvalidSetting(f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if self.ratio_level == "sequence" and self.normalisation != "sequence":
            raise InvalidSetting(
                f"normalisation={self.normalisation!r} applies to token-level ratios; the sequence ratio "
                "averages each rollout's tokens by construction (use loss.ratio_level=token)"
            )
        if self.epsilon_low < 0 or self.epsilon_high < 0 or self.beta < 0:
            raise InvalidSetting("epsilon_low, epsilon_high and beta must be >= 0")


@dataclass
class LossParts:
    loss: torch.Tensor
    policy: torch.Tensor
    kl: torch.Tensor
    clip_fraction: torch.Tensor


def reduce_tokens(values: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """One scalar from per-token values under the chosen normalisation."""
    m = mask.to(values.dtype)
    if how == "sequence":
        per_seq = (values * m).sum(1) / m.sum(1).clamp(min=1)
        return per_seq.mean()
    if how == "token":
        return (values * m).sum() / m.sum().clamp(min=1)
    return (values * m).sum() / (values.shape[0] * values.shape[1])


def token_weights(token_counts: list[int], step_tokens: int | None = None, processes: int = 1) -> list[float]:
    """Each prompt group's weight in the step's loss under normalisation `token`: its loss tokens
    over the step's, so the weighted sum of the groups' token means is the step's token mean.
    `step_tokens` counts every process's loss tokens (default: these groups'); gradients are
    averaged over `processes`, hence the factor. (Under `sequence` and `constant` every group has
    as many rollouts and canvas tokens, so the plain mean of the group losses is the step's.)"""
    total = sum(token_counts) if step_tokens is None else step_tokens
    return [count * processes / max(total, 1) for count in token_counts]


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(policy || reference), per token, always >= 0."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: PolicyLossConfig,
    ref_logp: torch.Tensor | None = None,
    *,
    sequence_kl: bool = False,
) -> LossParts:
    """Clipped surrogate (to minimise) + beta * KL, with the chosen ratio level and normalisation.

    `sequence_kl`: the inputs are sequence-level terms (an ELBO's per-row sum is the only
    log-probability), so the KL is k3 of each row's length-normalised log-ratio, averaged over
    rows, instead of a per-token k3. Tokens outside `mask` are zeroed first, so a -inf log-prob
    there (a suppressed token, say) cannot turn the loss into NaN."""
    keep = mask.bool()
    logp = torch.where(keep, logp, torch.zeros_like(logp))
    old_logp = torch.where(keep, old_logp, torch.zeros_like(old_logp))
    if ref_logp is not None:
        ref_logp = torch.where(keep, ref_logp, torch.zeros_like(ref_logp))
    m = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype)
    lo, hi = 1 - cfg.epsilon_low, 1 + cfg.epsilon_high
    if cfg.ratio_level == "token":
        ratio = torch.exp(logp - old_logp)
        surrogate = torch.minimum(ratio * adv[:, None], ratio.clamp(lo, hi) * adv[:, None])
        policy = reduce_tokens(-surrogate, mask, cfg.normalisation)
        clipped = ((ratio < lo) & (adv[:, None] < 0)) | ((ratio > hi) & (adv[:, None] > 0))
        clip_fraction = (clipped.to(m.dtype) * m).sum() / m.sum().clamp(min=1)
    else:
        count = m.sum(1).clamp(min=1)
        log_ratio = ((logp - old_logp) * m).sum(1) / count
        ratio = torch.exp(log_ratio)
        surrogate = torch.minimum(ratio * adv, ratio.clamp(lo, hi) * adv)
        has_tokens = (m.sum(1) > 0).to(logp.dtype)
        policy = -(surrogate * has_tokens).sum() / has_tokens.sum().clamp(min=1)
        clipped = ((ratio < lo) & (adv < 0)) | ((ratio > hi) & (adv > 0))
        clip_fraction = clipped.to(m.dtype).mean()
    if ref_logp is not None and cfg.beta > 0 and sequence_kl:
        count = m.sum(1).clamp(min=1)
        per_row = k3_kl(((logp * m).sum(1)) / count, ((ref_logp * m).sum(1)) / count)
        kl = per_row[m.sum(1) > 0].mean() if (m.sum(1) > 0).any() else per_row.sum() * 0
    elif ref_logp is not None and cfg.beta > 0:
        kl = reduce_tokens(k3_kl(logp, ref_logp), mask, cfg.normalisation)
    else:
        kl = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return LossParts(loss=policy + cfg.beta * kl, policy=policy, kl=kl, clip_fraction=clip_fraction)


def group_advantages(rewards: torch.Tensor, scale_by_std: bool = False, eps: float = 1e-4) -> torch.Tensor:
    """reward - group mean (IGPO, Dr. GRPO); optionally divided by the group std (GRPO)."""
    adv = rewards - rewards.mean()
    if scale_by_std:
        adv = adv / (rewards.std(unbiased=False) + eps)
    return adv


def completion_mask(completions: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """Tokens up to and including the first EOS; the EOS padding after it stays out of the loss."""
    if eos_id is None:
        return torch.ones_like(completions, dtype=torch.bool)
    is_eos = completions == eos_id
    seen_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return seen_before == 0


def entropy_filter(hint_mask: torch.Tensor, entropy: torch.Tensor, top_fraction: float) -> torch.Tensor:
    """Of each row's hint positions keep the top `top_fraction` by entropy (at least one if any)."""
    keep = torch.zeros_like(hint_mask)
    if top_fraction >= 1.0:
        return hint_mask.clone()
    for row in range(hint_mask.shape[0]):
        idx = hint_mask[row].nonzero().squeeze(-1)
        if idx.numel() == 0 or top_fraction <= 0:
            continue
        k = max(1, int(round(top_fraction * idx.numel())))
        top = entropy[row, idx].topk(k).indices
        keep[row, idx[top]] = True
    return keep
