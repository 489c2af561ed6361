"""The decoder's rules as small registered classes: which tokens a pass commits, when it reuses
cached keys/values.

- `COMMIT_RULES`: how many candidates each pass commits per row (the fixed schedule, Fast-dLLM's
  threshold and factor rules). A rule with a `setting` is on when that `DecodeConfig` field is
  set; with none set, the fixed schedule runs.
- `CACHE_POLICIES`: which window a pass recomputes (no cache, prefix, dual), by `DecodeConfig.cache`.
- `REFRESH_RULES`: when a cached pass is replaced by a full one (every k passes, every n committed
  tokens), each on when its `setting` is set; a block's first pass is always full.

Rules never read the device: what the host must know is either known up front (the fixed
schedule's counts) or read by the decoder, once per pass, through `sampler.host_read`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from igpo.decoding.config import DecodeConfig
from igpo.decoding.schedule import factor_counts, threshold_counts

COMMIT_RULES: dict[str, type[CommitRule]] = {}
CACHE_POLICIES: dict[str, type[CachePolicy]] = {}
REFRESH_RULES: dict[str, type[RefreshRule]] = {}


def _register(registry: dict, name: str):
    def add(cls):
        cls.name = name
        registry[name] = cls
        return cls

    return add


def register_commit_rule(name: str):
    """Class decorator adding a commit rule to COMMIT_RULES under `name`."""
    return _register(COMMIT_RULES, name)


def register_cache_policy(name: str):
    """Class decorator adding a cache policy to CACHE_POLICIES under `name` (a `cache` value)."""
    return _register(CACHE_POLICIES, name)


def register_refresh_rule(name: str):
    """Class decorator adding a cache refresh rule to REFRESH_RULES under `name`."""
    return _register(REFRESH_RULES, name)


class CommitRule:
    """How many of a block's candidates one pass commits, per row.

    `step_max[block][step]` is the fixed schedule's largest count over rows (read before the
    first pass); a block whose counts are all 0 (every position hinted) runs no pass.
    """

    name = ""
    setting: str | None = None
    """The DecodeConfig field that turns the rule on (None: the default rule)."""

    def __init__(self, cfg: DecodeConfig, schedule: torch.Tensor, step_max: Sequence[Sequence[int]]):
        self.cfg, self.schedule, self.step_max = cfg, schedule, step_max

    def steps(self, block: int) -> Sequence[int]:
        """The steps of `block` that run a pass."""
        raise NotImplementedError

    def counts(self, confidence, masked, block: int, step: int) -> tuple[torch.Tensor, int | None]:
        """[B] tokens to commit, and their maximum when the host knows it (else None)."""
        raise NotImplementedError

    def known_commits(self, block: int, step: int) -> int | None:
        """The most tokens a row committed at this step, when the host knows it without a read;
        None: the decoder reads it, with whether the block is done, after the pass."""
        raise NotImplementedError


def commit_rule(cfg: DecodeConfig) -> type[CommitRule]:
    """The rule `cfg` turns on (check_settings allows at most one), else the fixed schedule."""
    on = [rule for rule in COMMIT_RULES.values() if rule.setting and getattr(cfg, rule.setting) is not None]
    return on[0] if on else COMMIT_RULES["schedule"]


@register_commit_rule("schedule")
class FixedSchedule(CommitRule):
    """LLaDA's schedule: the block's masked count spread evenly over its steps, known up front,
    so a step with nothing to commit is skipped and no pass needs a read."""

    def steps(self, block):
        return [step for step, most in enumerate(self.step_max[block]) if most]

    def counts(self, confidence, masked, block, step):
        return self.schedule[:, block, step], self.step_max[block][step]

    def known_commits(self, block, step):
        return self.step_max[block][step]


class ParallelRule(CommitRule):
    """A count from the pass's confidences: `steps` becomes a cap, a block ends when it is filled."""

    def steps(self, block):
        return range(len(self.step_max[block]) if any(self.step_max[block]) else 0)

    def counts(self, confidence, masked, block, step):
        steps_left = len(self.step_max[block]) - step
        return self.count(confidence, getattr(self.cfg, self.setting), masked, steps_left), None

    def count(self, confidence, value, masked, steps_left) -> torch.Tensor:
        raise NotImplementedError

    def known_commits(self, block, step):
        return None


@register_commit_rule("threshold")
class Threshold(ParallelRule):
    """Every candidate at least `threshold` confident (schedule.threshold_counts)."""

    setting = "threshold"

    def count(self, confidence, value, masked, steps_left):
        return threshold_counts(confidence, value, masked, steps_left)


@register_commit_rule("factor")
class Factor(ParallelRule):
    """The n most confident while confidence > 1 - factor / (n + 1) (schedule.factor_counts)."""

    setting = "factor"

    def count(self, confidence, value, masked, steps_left):
        return factor_counts(confidence, value, masked, steps_left)


class RefreshRule:
    """When a cached pass is replaced by a full one that refills the cache."""

    name = ""
    setting = ""
    """The DecodeConfig field that turns the rule on and gives its value."""
    counts_tokens = False
    """Whether the rule needs the most tokens a row committed per pass (a host read under a
    parallel rule)."""

    def __init__(self, value: int):
        self.value = value

    def due(self, passes: int, stale: int) -> bool:
        """Whether pass `passes` of the block (0, 1, ...) is full, `stale` tokens after the last."""
        raise NotImplementedError


@register_refresh_rule("passes")
class EveryPasses(RefreshRule):
    """A full pass every k passes of a block: passes 0, k, 2k, ..."""

    setting = "cache_refresh"

    def due(self, passes, stale):
        return passes % self.value == 0


@register_refresh_rule("tokens")
class EveryTokens(RefreshRule):
    """A full pass once a row has committed this many tokens since the cache was filled: cached
    keys/values go stale with the tokens they did not see, not with the passes."""

    setting = "cache_refresh_tokens"
    counts_tokens = True

    def due(self, passes, stale):
        return stale >= self.value


class CachePolicy:
    """Which passes reuse cached keys/values and which window they recompute.

    Per block: `fresh()` says whether the next pass is full (a block's first always is, then
    whenever a refresh rule is due), `after_pass` counts the pass and what it committed.
    """

    name = ""
    caches = True
    """Whether full passes fill a KV cache that later passes of the block reuse."""

    def __init__(self, cfg: DecodeConfig):
        self.refresh = [
            rule(getattr(cfg, rule.setting))
            for rule in REFRESH_RULES.values()
            if getattr(cfg, rule.setting) is not None
        ]
        self.counts_tokens = any(rule.counts_tokens for rule in self.refresh)
        self.passes = self.stale = 0

    def start_block(self) -> None:
        self.passes = self.stale = 0

    def fresh(self) -> bool:
        return self.passes == 0 or any(rule.due(self.passes, self.stale) for rule in self.refresh)

    def after_pass(self, fresh: bool, committed: int) -> None:
        """`committed`: the most tokens a row committed in the pass."""
        self.passes += 1
        self.stale = (0 if fresh else self.stale) + committed

    def window_end(self, length: int, end: int) -> int:
        """End of the window a cached pass recomputes, for a block ending at `end` of `length`."""
        raise NotImplementedError


def cache_policy(cfg: DecodeConfig) -> CachePolicy:
    return CACHE_POLICIES[cfg.cache or "none"](cfg)


@register_cache_policy("none")
class NoCache(CachePolicy):
    """Exact decoding: every pass runs the whole canvas."""

    caches = False

    def fresh(self):
        return True


@register_cache_policy("prefix")
class PrefixCache(CachePolicy):
    """Cached passes reuse the keys/values before the block and recompute the rest of the canvas."""

    def window_end(self, length, end):
        return length


@register_cache_policy("dual")
class DualCache(CachePolicy):
    """Cached passes recompute only the block (keys/values after it are reused too)."""

    def window_end(self, length, end):
        return end
