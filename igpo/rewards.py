"""Rollout rewards: correctness (shared scorer), d1/IGPO format reward, and plug-in extras.

Correctness uses :func:`igpo.scoring.pool.verify_answers` (a group's responses on the math-verify
worker pool at once), the same verdicts as :func:`igpo.scoring.pool.verify_answer` behind the
evaluation metric ``exact_match``, so RL optimises what evaluation measures.

Format reward (d1 ``count_xml``, as in the released IGPO code): 0.125 for each of
``<reasoning>``, ``</reasoning>``, ``<answer>``, ``</answer>`` and 0.25 for ``\\boxed{``, times
``format_weight``. Matching rule (a documented choice):

* a tag counts when it occurs EXACTLY ONCE (released ``text.count(tag) == 1``; repeated tags earn
  nothing) -- or at least once with ``tags_exactly_once=False``;
* the opening tags match with or without a following newline: the released code requires
  ``<reasoning>\\n`` / ``<answer>\\n``, but word-level test tokenizers decode with spaces and
  LLaDA's completions that follow the format carry the newline anyway;
* ``\\boxed{`` counts when present at least once (released ``re.search``).

The prompt usually pre-fills ``<reasoning>``; pass it as ``prefix`` so the format reward sees the
whole assistant turn (otherwise every rollout misses the same 0.125, which cancels in advantages).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Protocol

from igpo.errors import InvalidSetting
from igpo.prompts import PREFILL
from igpo.scoring.pool import DEFAULT_TIMEOUT_S, verify_answers

CORRECT_WEIGHT = 3.0
"""Correctness reward of the released run (3.0 when the answer is right)."""

TAG_REWARD = 0.125
"""Format reward per XML tag present."""

BOXED_REWARD = 0.25
"""Format reward for a ``\\boxed{`` anywhere in the response."""

FORMAT_TAGS: tuple[str, ...] = (PREFILL, "</reasoning>", "<answer>", "</answer>")
"""The tags of the d1/IGPO answer format."""

BOXED_MARK = "\\boxed{"
"""The box opener the format reward looks for."""


class RewardFn(Protocol):
    """An extra reward: a float for one response given the gold answer."""

    def __call__(self, response: str, gold: str) -> float: ...


@dataclass
class RewardConfig:
    """Weights and plug-ins of the rollout reward."""

    correct_weight: float = CORRECT_WEIGHT
    """Reward for a correct answer (verify_answer); 0 for a wrong one."""
    format_weight: float = 1.0
    """Multiplier on the format reward (max 0.75 before weighting); 0 turns it off."""
    tags_exactly_once: bool = True
    """A tag earns its 0.125 only if it occurs exactly once (released code); False: once or more."""
    extra: list[str] = field(default_factory=list)
    """Additional rewards as "module:function" names, imported on first use and called as
    fn(response, gold) -> float; their values are added to the total unweighted."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    """Time bound of one correctness check (a timeout scores as wrong and is counted)."""

    def __post_init__(self) -> None:
        for name in ("correct_weight", "format_weight"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidSetting(f"{name} must be finite, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise InvalidSetting(f"timeout_s must be positive, got {self.timeout_s}")
        self.extra = list(self.extra)
        for name in self.extra:
            _split_name(name)


@dataclass
class RewardBreakdown:
    """Per-rollout rewards of one group (all lists in rollout order)."""

    total: list[float]
    """correctness + format + sum of extras: the reward the advantages are computed from."""
    correct: list[bool]
    """Whether verify_answer judged the response correct."""
    correctness: list[float]
    """The correctness term (correct_weight or 0)."""
    format: list[float]
    """The weighted format term."""
    extra: dict[str, list[float]]
    """Each extra reward function's values, keyed by its "module:function" name."""
    timed_out: list[bool]
    """Whether the correctness check hit its time bound (scored as wrong)."""
    extracted: list[str | None]
    """The answer text the scorer extracted, for logging."""

    @property
    def all_wrong(self) -> bool:
        """No rollout is correct: the group IGPO repairs with hinted rollouts."""
        return not any(self.correct)

    @property
    def num_timeouts(self) -> int:
        """How many correctness checks timed out."""
        return sum(self.timed_out)


def format_reward(text: str, exactly_once: bool = True) -> float:
    """Unweighted format reward of one assistant turn (0 to 0.75; rule in the module docstring)."""
    reward = 0.0
    for tag in FORMAT_TAGS:
        count = text.count(tag)
        if count == 1 or (count > 1 and not exactly_once):
            reward += TAG_REWARD
    if BOXED_MARK in text:
        reward += BOXED_REWARD
    return reward


def _split_name(name: str) -> tuple[str, str]:
    """``("module", "function")`` from ``"module:function"``, or ValueError."""
    module, sep, attr = name.partition(":")
    if not sep or not module.strip() or not attr.strip() or ":" in attr:
        raise InvalidSetting(f"reward function {name!r} must be written 'module:function'")
    return module.strip(), attr.strip()


def load_reward_fns(names: Sequence[str]) -> dict[str, RewardFn]:
    """Import each ``"module:function"``; ValueError naming the entry if it cannot be used."""
    loaded: dict[str, RewardFn] = {}
    for name in names:
        module_name, attr = _split_name(name)
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise InvalidSetting(f"reward function {name!r}: cannot import module {module_name!r} ({err})") from err
        fn = getattr(module, attr, None)
        if fn is None:
            raise InvalidSetting(f"reward function {name!r}: module {module_name!r} has no {attr!r}")
        if not callable(fn):
            raise InvalidSetting(f"reward function {name!r}: {attr!r} is not callable")
        loaded[name] = fn
    return loaded


def score_rollouts(responses: Sequence[str], gold: str, cfg: RewardConfig, *, prefix: str = "") -> RewardBreakdown:
    """Score one group of responses to the same prompt.

    ``prefix`` is text the prompt pre-filled in the assistant turn (e.g. ``<reasoning>``); it is
    prepended for the format reward and the extras, not for correctness.
    """
    fns = load_reward_fns(cfg.extra)
    scores = verify_answers([(gold, r) for r in responses], timeout_s=cfg.timeout_s)  # in parallel
    turns = [prefix + r for r in responses]
    correctness = [cfg.correct_weight if s.correct else 0.0 for s in scores]
    fmt = [cfg.format_weight * format_reward(t, cfg.tags_exactly_once) for t in turns]
    extra: dict[str, list[float]] = {}
    for name, fn in fns.items():
        values = []
        for turn in turns:
            value = fn(turn, gold)
            if not isinstance(value, Real):
                kind = type(value).__name__
                raise TypeError(f"reward function {name!r} returned {kind}, not a number")
            values.append(float(value))
        extra[name] = values
    total = [
        c + f + sum(values[i] for values in extra.values())
        for i, (c, f) in enumerate(zip(correctness, fmt, strict=True))
    ]
    return RewardBreakdown(
        total=total,
        correct=[s.correct for s in scores],
        correctness=correctness,
        format=fmt,
        extra=extra,
        timed_out=[s.timed_out for s in scores],
        extracted=[s.extracted for s in scores],
    )
