"""Policy losses (the clipped objective with a k3 KL penalty) and advantage estimators, as registries.

Shapes: per-token tensors are [B, T]; `mask` marks the tokens that enter the loss (completion up
to its first EOS, minus hint tokens the entropy filter dropped); advantages are [B].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from igpo.config import coerce
from igpo.errors import InvalidSetting

Normalisation = Literal["sequence", "token", "constant"]
"""How a token-level loss's per-token terms become one number:
sequence - mean over each sequence's tokens, then over sequences (GRPO);
token    - sum over all tokens / number of tokens in the step (DAPO): the trainer weights each
           prompt group's token mean by its share of the step's loss tokens (`token_weights`), so
           the step's loss is one token mean over all its groups (and processes);
constant - sum over all tokens / (batch size x completion length) (Dr. GRPO).
Sequence-level losses fix their own reduction inside a group (groups are then averaged)."""


@dataclass
class PolicyLossConfig:
    """The RL objective's knobs (defaults: the released IGPO run)."""

    ratio_level: str = "sequence_released"
    """Which policy loss (the POLICY_LOSSES registry): token (PPO ratio per token); sequence (GSPO
    as the paper writes it: ratio exp(mean of logp - old over the loss tokens), rollouts weighted
    equally); sequence_released (GSPO as the released code computes it: the mean runs over every
    completion position, EOS padding and filtered-out hint tokens included, and the group's loss
    is sum(mask * per-token loss) / sum(mask), so rollouts weigh by their loss-token count)."""
    epsilon_low: float = 0.2
    """Lower clip: ratios below 1 - epsilon_low stop pushing."""
    epsilon_high: float = 0.2
    """Upper clip: ratios above 1 + epsilon_high stop pushing."""
    beta: float = 0.01
    """Weight of the k3 KL penalty to the reference (base) model; 0 skips the reference pass."""
    normalisation: Normalisation = "sequence"
    """sequence | token | constant (see Normalisation); `token` is the token mean over the whole
    training step (every prompt group, every process). Sequence-level losses take only `sequence`
    (their reduction inside a group is part of their definition; groups are averaged)."""

    def __post_init__(self) -> None:
        if self.ratio_level not in POLICY_LOSSES:
            raise InvalidSetting(f"ratio_level must be one of {tuple(POLICY_LOSSES)}, got {self.ratio_level!r}")
        coerce(self.normalisation, Normalisation, "normalisation")
        if POLICY_LOSSES[self.ratio_level].sequence_level and self.normalisation != "sequence":
            raise InvalidSetting(
                f"normalisation={self.normalisation!r} applies to token-level ratios; ratio_level="
                f"{self.ratio_level} reduces each group by its own rule (use loss.ratio_level=token)"
            )
        for name in ("epsilon_low", "epsilon_high", "beta"):
            if getattr(self, name) < 0:
                raise InvalidSetting(f"loss.{name} must be >= 0, got {getattr(self, name)}")


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


@dataclass(frozen=True)
class LossInputs:
    """One group's tensors for a policy loss: [B, T] log-probs, [B] advantages, [B, T] loss mask."""

    logp: torch.Tensor
    old_logp: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    """The loss tokens: completion up to its first EOS, minus hint tokens the entropy filter dropped."""
    ref_logp: torch.Tensor | None = None
    sequence_kl: bool = False
    """The log-probs are sequence-level terms (an ELBO's per-row sum): KL is k3 of each row's
    length-normalised log-ratio instead of a per-token k3."""


@dataclass(frozen=True)
class PolicyLoss:
    """A registered policy loss: `fn(inputs, cfg) -> LossParts`."""

    name: str
    fn: Callable[[LossInputs, PolicyLossConfig], LossParts]
    sequence_level: bool
    """One importance ratio per rollout (GSPO) rather than one per token."""


POLICY_LOSSES: dict[str, PolicyLoss] = {}
"""name -> policy loss, the values `loss.ratio_level` accepts (verl-style registry)."""


def register_loss(name: str, *, sequence_level: bool):
    """Decorator adding a policy loss to POLICY_LOSSES under `name`."""

    def add(fn):
        POLICY_LOSSES[name] = PolicyLoss(name, fn, sequence_level)
        return fn

    return add


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
    """The configured clipped surrogate (to minimise) + beta * KL for one group."""
    inputs = LossInputs(logp, old_logp, advantages, mask, ref_logp, sequence_kl)
    return POLICY_LOSSES[cfg.ratio_level].fn(inputs, cfg)


def _masked(inputs: LossInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Log-probs with tokens outside the mask zeroed, so a -inf there (a suppressed token, say)
    cannot turn the loss into NaN."""
    keep = inputs.mask.bool()

    def zero(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else torch.where(keep, t, torch.zeros_like(t))

    return zero(inputs.logp), zero(inputs.old_logp), zero(inputs.ref_logp)


def _clipped(ratio: torch.Tensor, adv: torch.Tensor, cfg: PolicyLossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate min(r A, clip(r) A) and where clipping stopped the push."""
    lo, hi = 1 - cfg.epsilon_low, 1 + cfg.epsilon_high
    surrogate = torch.minimum(ratio * adv, ratio.clamp(lo, hi) * adv)
    clipped = ((ratio < lo) & (adv < 0)) | ((ratio > hi) & (adv > 0))
    return surrogate, clipped


def _kl(inputs: LossInputs, logp, ref_logp, cfg: PolicyLossConfig, reduce) -> torch.Tensor:
    """beta's KL term: per-token k3 reduced like the policy term, or a sequence k3 (ELBO)."""
    if ref_logp is None or cfg.beta <= 0:
        return torch.zeros((), dtype=logp.dtype, device=logp.device)
    m = inputs.mask.to(logp.dtype)
    if inputs.sequence_kl:
        count = m.sum(1).clamp(min=1)
        per_row = k3_kl((logp * m).sum(1) / count, (ref_logp * m).sum(1) / count)
        rows = m.sum(1) > 0
        return per_row[rows].mean() if rows.any() else per_row.sum() * 0
    return reduce(k3_kl(logp, ref_logp))


@register_loss("token", sequence_level=False)
def _token_loss(inputs: LossInputs, cfg: PolicyLossConfig) -> LossParts:
    """PPO: one ratio per token, reduced by cfg.normalisation."""
    logp, old, ref = _masked(inputs)
    m = inputs.mask.to(logp.dtype)
    adv = inputs.advantages.to(logp.dtype)[:, None]
    surrogate, clipped = _clipped(torch.exp(logp - old), adv, cfg)
    policy = reduce_tokens(-surrogate, inputs.mask, cfg.normalisation)
    kl = _kl(inputs, logp, ref, cfg, lambda v: reduce_tokens(v, inputs.mask, cfg.normalisation))
    clip_fraction = (clipped.to(m.dtype) * m).sum() / m.sum().clamp(min=1)
    return LossParts(loss=policy + cfg.beta * kl, policy=policy, kl=kl, clip_fraction=clip_fraction)


@register_loss("sequence", sequence_level=True)
def _sequence_loss(inputs: LossInputs, cfg: PolicyLossConfig) -> LossParts:
    """GSPO as the paper writes it: ratio exp(mean of logp - old over the loss tokens) per rollout,
    rollouts with loss tokens weighted equally."""
    logp, old, ref = _masked(inputs)
    m = inputs.mask.to(logp.dtype)
    adv = inputs.advantages.to(logp.dtype)
    ratio = torch.exp(((logp - old) * m).sum(1) / m.sum(1).clamp(min=1))
    surrogate, clipped = _clipped(ratio, adv, cfg)
    has_tokens = (m.sum(1) > 0).to(logp.dtype)
    policy = -(surrogate * has_tokens).sum() / has_tokens.sum().clamp(min=1)
    kl = _kl(inputs, logp, ref, cfg, lambda v: reduce_tokens(v, inputs.mask, "sequence"))
    return LossParts(loss=policy + cfg.beta * kl, policy=policy, kl=kl, clip_fraction=clipped.to(m.dtype).mean())


@register_loss("sequence_released", sequence_level=True)
def _sequence_released_loss(inputs: LossInputs, cfg: PolicyLossConfig) -> LossParts:
    """GSPO as the released trainer computes it (trainer_igpo.py compute_loss, use_gspo): the
    log-ratio is the mean of (logp - old) over ALL completion positions; the per-token loss
    (surrogate + beta k3) is summed over the mask and divided by the mask's size."""
    everywhere = torch.isfinite(inputs.logp) & torch.isfinite(inputs.old_logp)
    logp = torch.where(everywhere, inputs.logp, torch.zeros_like(inputs.logp))
    old = torch.where(everywhere, inputs.old_logp, torch.zeros_like(inputs.old_logp))
    m = inputs.mask.to(logp.dtype)
    adv = inputs.advantages.to(logp.dtype)[:, None]
    ratio = torch.exp((logp - old).sum(1) / logp.shape[1])[:, None].expand_as(logp)
    surrogate, clipped = _clipped(ratio, adv, cfg)
    denom = m.sum().clamp(min=1)
    policy = (-surrogate * m).sum() / denom
    ref = None if inputs.ref_logp is None else torch.where(inputs.mask.bool(), inputs.ref_logp, logp)
    kl = _kl(inputs, logp, ref, cfg, lambda v: (v * m).sum() / denom)
    clip_fraction = (clipped.to(m.dtype) * m).sum() / denom
    return LossParts(loss=policy + cfg.beta * kl, policy=policy, kl=kl, clip_fraction=clip_fraction)


ADVANTAGE_STD_EPS = 1e-4
"""Added to the group's reward std before dividing (group_mean_std)."""

ADVANTAGES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
"""name -> advantage estimator over one group's [G] rewards, the values `RLConfig.advantage` accepts."""


def register_advantage(name: str):
    """Decorator adding an advantage estimator to ADVANTAGES under `name`."""

    def add(fn):
        ADVANTAGES[name] = fn
        return fn

    return add


@register_advantage("group_mean")
def _group_mean(rewards: torch.Tensor) -> torch.Tensor:
    """reward - group mean (IGPO as released and in the paper, Dr. GRPO)."""
    return rewards - rewards.mean()


@register_advantage("group_mean_std")
def _group_mean_std(rewards: torch.Tensor) -> torch.Tensor:
    """(reward - group mean) / (group std + eps) (GRPO as DeepSeekMath writes it)."""
    return (rewards - rewards.mean()) / (rewards.std(unbiased=False) + ADVANTAGE_STD_EPS)


def group_advantages(rewards: torch.Tensor, estimator: str = "group_mean") -> torch.Tensor:
    """One group's advantages under the named estimator (ADVANTAGES)."""
    return ADVANTAGES[estimator](rewards)


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
