"""A step's metrics: the rollout statistics of its groups, and the metrics of every process
combined into the step's (counts summed, means weighted, shares recomputed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from igpo.training.rollouts import Group


def group_metrics(groups: list[Group], g: int) -> dict[str, Any]:
    """A step's rollout statistics: rewards, all-wrong and rescued groups (also per level), and
    the hinted rollouts apart from the rest (count, mean reward, eta of each)."""
    n = max(1, len(groups))
    all_wrong = sum(gr.all_wrong for gr in groups)
    rescued = sum(1 for gr in groups if gr.all_wrong and gr.replaced > 0)
    hinted = [gr.rewards[gr.hinted] for gr in groups if gr.hinted is not None]
    unhinted = [gr.rewards if gr.hinted is None else gr.rewards[~gr.hinted] for gr in groups]
    hinted_rewards = torch.cat(hinted) if hinted else torch.zeros(0)
    unhinted_rewards = torch.cat(unhinted) if unhinted else torch.zeros(0)
    return {
        "reward": sum(float(gr.rewards.mean()) for gr in groups) / n,
        "accuracy": sum(gr.correct for gr in groups) / (n * g),
        "all_wrong_ratio": all_wrong / n,
        "rescued_ratio": rescued / all_wrong if all_wrong else 0.0,
        "replaced": float(sum(gr.replaced for gr in groups)),
        "groups": float(len(groups)),
        "hinted_rollouts": float(hinted_rewards.numel()),
        "unhinted_rollouts": float(unhinted_rewards.numel()),
        "all_wrong_groups": all_wrong,
        "rescued_groups": rescued,
        "hinted_reward": float(hinted_rewards.mean()) if hinted_rewards.numel() else None,
        "unhinted_reward": float(unhinted_rewards.mean()) if unhinted_rewards.numel() else None,
        "etas": [round(e, 4) for gr in groups for e in gr.etas],
        "all_wrong_by_level": _count_by_level(gr for gr in groups if gr.all_wrong),
        "rescued_by_level": _count_by_level(gr for gr in groups if gr.all_wrong and gr.replaced > 0),
    }


def _count_by_level(groups) -> dict[str, int]:
    """How many of `groups` have each level (groups without one are left out)."""
    counts: dict[str, int] = {}
    for gr in groups:
        if gr.level is not None:
            counts[str(gr.level)] = counts.get(str(gr.level), 0) + 1
    return dict(sorted(counts.items()))


SUMMED_METRICS = (
    "replaced",
    "groups",
    "loss_tokens",
    "hint_tokens",
    "hinted_loss_tokens",
    "hinted_rollouts",
    "all_wrong_groups",
    "rescued_groups",
)
"""Counts: summed over processes."""
WEIGHTED_METRICS = {
    "hinted_reward": "hinted_rollouts",
    "unhinted_reward": "unhinted_rollouts",
    "entropy": "loss_tokens",
}
"""Means over rollouts or tokens: combined weighted by the count each process saw."""
RATIO_METRICS = {
    "rescued_ratio": ("rescued_groups", "all_wrong_groups"),
    "hint_token_fraction": ("hint_tokens", "loss_tokens"),
    "hinted_loss_token_share": ("hinted_loss_tokens", "loss_tokens"),
}
"""Shares recomputed from the summed counts, so they are the step's over every process."""


def reduce_metrics(accelerator, metrics: dict[str, Any]) -> dict[str, Any]:
    """The step's metrics over every process (one process: as they are): counts summed, lists
    joined in process order (= prompt order), per-level counts added, means weighted by what
    each process counted, shares recomputed; the rest (losses, timings) averaged."""
    if accelerator is None or accelerator.num_processes == 1:
        return metrics
    from accelerate.utils import gather_object

    return combine_metrics(gather_object([metrics]))


def combine_metrics(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One metrics dict from each process's, by the rules of `reduce_metrics`."""
    out: dict[str, Any] = {}
    for key in parts[0]:
        values = [p.get(key) for p in parts]
        if key in SUMMED_METRICS:
            out[key] = sum(values)
        elif key in WEIGHTED_METRICS:
            weights = [p.get(WEIGHTED_METRICS[key]) or 0 for p in parts]
            pairs = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None and w]
            out[key] = sum(v * w for v, w in pairs) / sum(w for _, w in pairs) if pairs else None
        elif isinstance(values[0], list):
            out[key] = [item for v in values for item in v]
        elif isinstance(values[0], dict):
            out[key] = {k: sum(v.get(k, 0) for v in values) for k in sorted({k for v in values for k in v})}
        elif all(isinstance(v, (int, float)) for v in values):
            out[key] = sum(values) / len(values)
        else:
            out[key] = values[0]
    for key, (num, den) in RATIO_METRICS.items():
        if key in out and num in out and den in out:
            out[key] = out[num] / out[den] if out[den] else 0.0
    return out
