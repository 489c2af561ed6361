"""One training step's rollouts: per prompt, G completions decoded; scored; IGPO's rescue of an
all-wrong group (re-sampled with hint chunks of the reference trace fixed in the canvas, or
without hints, and up to floor(lambda * G) wrong rollouts replaced by correct re-samples); the
group's advantages. `RolloutMixin` holds these stages for the Trainer (igpo.training.rl)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from igpo.data import Example, render_prompt
from igpo.decoding import generate
from igpo.decoding.text import completion_texts, left_pad
from igpo.errors import InvalidSetting
from igpo.hints import build_hint_batch, encode_trace, sample_etas
from igpo.prompts import PREFILL, source_instruction
from igpo.rewards import RewardBreakdown as Scores
from igpo.rewards import score_rollouts
from igpo.training.loss import group_advantages
from igpo.training.rl_config import SEED_RANGE
from igpo.training.sharding import gathered


@dataclass
class Group:
    """One prompt's rollouts, ready for the policy updates."""

    prompt_ids: torch.Tensor  # [G, P]
    completions: torch.Tensor  # [G, T]
    advantages: torch.Tensor  # [G]
    rewards: torch.Tensor  # [G]
    hint_mask: torch.Tensor  # [G, T] bool: positions fixed by hints in replaced rollouts
    commit_step: torch.Tensor  # [G, T]: the decoding pass that committed each token (HINTED: a hint)
    all_wrong: bool
    replaced: int
    correct: int
    hinted: torch.Tensor | None = None
    """[G] bool: rollouts that came from a hinted re-sample (None: none did)."""
    etas: list[float] = field(default_factory=list)
    """The hint share eta of each hinted rollout, in slot order."""
    level: Any = None
    """The problem's difficulty where the source has one (arith: its number of operations)."""
    unit: int = 0
    """The prompt's position in its step over all processes (0..prompts_per_step - 1): keys the
    group's estimator randomness, so any process count draws the same."""


@dataclass
class Rollouts:
    """G decoded completions [G, T] and the pass that committed each token (see generate)."""

    completions: torch.Tensor
    commit_step: torch.Tensor


@dataclass
class StepTimer:
    """Seconds per part of a step (generation, scoring, hinting, update, ...), for metrics."""

    parts: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.parts[name] = self.parts.get(name, 0.0) + seconds

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)


@dataclass
class Rescue:
    """What IGPO's rescue leaves per group: rewards (the replaced slots' new ones), which tokens
    were hints, and how many rollouts were replaced (groups that were not all wrong: absent)."""

    rewards: list[torch.Tensor]
    hint_masks: list[torch.Tensor]
    replaced: dict[int, int] = field(default_factory=dict)
    etas: dict[int, dict[int, float]] = field(default_factory=dict)
    """group -> {slot: eta} for the slots a hinted re-sample filled."""


Generators = torch.Generator | list[torch.Generator]
"""One generator per prompt, or one shared by all of them (drawn from prompt by prompt)."""


def per_prompt(generators: Generators, count: int) -> list[torch.Generator]:
    """`count` generators: the list given, or the one generator repeated (so draws stay in order)."""
    if isinstance(generators, torch.Generator):
        return [generators] * count
    if len(generators) != count:
        raise InvalidSetting(f"{len(generators)} generators for {count} prompts")
    return list(generators)


def example_level(example: Example) -> Any:
    """A problem's difficulty where its source records one (arith: operations; MATH: level)."""
    return example.meta.get("steps", example.meta.get("level"))


class RolloutMixin:
    """The rollout half of a step, for a class with `cfg` (RLConfig), `tokenizer`, `spec`
    (TokenSpec), `stops`, `accelerator` and `policy` (igpo.training.rl.Trainer)."""

    def encode_prompt(self, question: str) -> torch.Tensor:
        text = render_prompt(
            self.tokenizer, question, system=source_instruction(self.cfg.data.source, self.cfg.instruction)
        )
        return torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)

    def decode_texts(self, completions: torch.Tensor) -> list[str]:
        return completion_texts(self.tokenizer, completions, self.stops)

    def sample(
        self, prompts: list[torch.Tensor], generators: Generators, hints: list[torch.Tensor] | None = None
    ) -> list[Rollouts]:
        """G rollouts for each prompt in one decoder call (left-padded when the prompts differ in
        length); `hints`: one [G, gen_length] canvas per prompt. Each prompt's row seeds come from
        its own generator (one generator for all: drawn prompt by prompt)."""
        g = self.cfg.num_generations
        gens = per_prompt(generators, len(prompts))
        seeds = [torch.randint(0, SEED_RANGE, (g,), generator=gen).tolist() for gen in gens]
        row_gens = [torch.Generator().manual_seed(s) for group in seeds for s in group]
        device = self.accelerator.device if self.accelerator else prompts[0].device
        if len(prompts) == 1:
            ids, attention = prompts[0].repeat(g, 1), None
        else:
            ids, attention = left_pad([p.tolist() for p in prompts for _ in range(g)], self.spec.pad_id or 0)
            attention = attention.to(device)
        policy = self.policy
        was_training = policy.training
        policy.eval()
        with gathered(policy):  # a sharded policy decodes with whole weights, each process at its own pace
            out = generate(
                policy,
                ids.to(device),
                self.cfg.decode,
                tokens=self.spec,
                attention_mask=attention,
                hints=None if hints is None else torch.cat(hints).to(device),
                generator=row_gens,
                record_steps=True,
            )
        policy.train(was_training)
        completions, steps = out.completions.cpu().split(g), out.commit_step.cpu().split(g)
        return [Rollouts(completions=c, commit_step=s) for c, s in zip(completions, steps, strict=True)]

    def rollout_group(self, example: Example, generator: torch.Generator, timer: StepTimer) -> Group:
        """G rollouts for one prompt, with IGPO's rescue of an all-wrong group."""
        return self.rollout_groups([example], generator, timer)[0]

    def rollout_step(self, examples: list[Example], generators: Generators, timer: StepTimer) -> list[Group]:
        """One step's groups: all in one decoder call (and the re-samples of all its all-wrong
        groups in a second) with `batch_rollouts`, else one prompt at a time. With one generator
        per prompt both give the same groups (each prompt draws only from its own)."""
        if self.cfg.batch_rollouts:
            return self.rollout_groups(examples, generators, timer)
        gens = per_prompt(generators, len(examples))
        return [self.rollout_group(ex, gen, timer) for ex, gen in zip(examples, gens, strict=True)]

    def rollout_groups(self, examples: list[Example], generators: Generators, timer: StepTimer) -> list[Group]:
        """A step's stages for its prompts, in order: rollout (G per prompt, decoded together),
        reward, rescue (IGPO: the all-wrong groups re-sampled together, with hint canvases, and up
        to floor(lambda G) of their rollouts replaced by correct ones), advantage."""
        prompts = [self.encode_prompt(ex.prompt) for ex in examples]
        with timer.timed("generation"):
            rollouts = self.sample(prompts, generators)
        scored = self.reward(rollouts, examples, timer)
        rescued = self.rescue(examples, prompts, rollouts, scored, generators, timer)
        return self.advantage(prompts, rollouts, scored, rescued, [example_level(ex) for ex in examples])

    def reward(self, rollouts: list[Rollouts], examples: list[Example], timer: StepTimer) -> list[Scores]:
        """Each group's rewards (math-verify correctness and format, igpo.rewards)."""
        with timer.timed("scoring"):
            return [
                score_rollouts(self.decode_texts(r.completions), ex.answer, self.cfg.rewards, prefix=PREFILL)
                for r, ex in zip(rollouts, examples, strict=True)
            ]

    def rescue(
        self,
        examples: list[Example],
        prompts: list[torch.Tensor],
        rollouts: list[Rollouts],
        scored: list[Scores],
        generators: Generators,
        timer: StepTimer,
    ) -> Rescue:
        """IGPO's rescue of all-wrong groups, in place in `rollouts`: re-sample each (with hint
        chunks of its reference trace fixed when resample="hints") and put correct re-samples into
        up to floor(lambda G) random slots. Returns the rewards, hint masks and replacement counts."""
        cfg = self.cfg
        g = cfg.num_generations
        rescue = Rescue(
            rewards=[torch.tensor(sc.total, dtype=torch.float32) for sc in scored],
            hint_masks=[torch.zeros_like(r.completions, dtype=torch.bool) for r in rollouts],
        )
        budget = math.floor(cfg.igpo.replace_ratio * g)
        if cfg.igpo.resample == "none" or budget <= 0:
            return rescue
        wrong = [i for i, sc in enumerate(scored) if not any(sc.correct)]
        if not wrong:
            return rescue
        gens = per_prompt(generators, len(examples))
        canvases: dict[int, torch.Tensor] = {}
        etas: dict[int, list[float]] = {}
        with timer.timed("hinting"):
            if cfg.igpo.resample == "hints":
                for i in wrong:
                    trace = encode_trace(self.tokenizer, examples[i].trace or "", examples[i].answer, prefill=PREFILL)
                    etas[i] = sample_etas(g, cfg.hints, gens[i])
                    canvases[i] = build_hint_batch(
                        trace.ids,
                        g,
                        cfg.decode.gen_length,
                        cfg.hints,
                        self.spec.mask_id,
                        gens[i],
                        answer_span=trace.answer_span,
                        etas=etas[i],
                    )
            resampled = self.sample(
                [prompts[i] for i in wrong],
                [gens[i] for i in wrong],
                hints=[canvases[i] for i in wrong] if canvases else None,
            )
        for i, extra in zip(wrong, resampled, strict=True):
            with timer.timed("scoring"):
                extra_scored = score_rollouts(
                    self.decode_texts(extra.completions), examples[i].answer, cfg.rewards, prefix=PREFILL
                )
            good = [j for j, ok in enumerate(extra_scored.correct) if ok]
            take = min(len(good), budget)
            if take:
                pick = torch.randperm(len(good), generator=gens[i])[:take].tolist()
                slots = torch.randperm(g, generator=gens[i])[:take].tolist()  # all wrong: any slot
                for slot, choice in zip(slots, pick, strict=True):
                    src = good[choice]
                    rollouts[i].completions[slot] = extra.completions[src]
                    rollouts[i].commit_step[slot] = extra.commit_step[src]
                    rescue.rewards[i][slot] = extra_scored.total[src]
                    if i in canvases:
                        rescue.hint_masks[i][slot] = canvases[i][src] != self.spec.mask_id
                        rescue.etas.setdefault(i, {})[slot] = etas[i][src]
            rescue.replaced[i] = take
        return rescue

    def advantage(
        self,
        prompts: list[torch.Tensor],
        rollouts: list[Rollouts],
        scored: list[Scores],
        rescued: Rescue,
        levels: list[Any],
    ) -> list[Group]:
        """The groups the update trains on: advantage = reward - group mean (scaled if asked)."""
        g = self.cfg.num_generations
        groups = []
        for i, (prompt, rollout, scores, rewards, hint_mask) in enumerate(
            zip(prompts, rollouts, scored, rescued.rewards, rescued.hint_masks, strict=True)
        ):
            slot_etas = rescued.etas.get(i, {})
            hinted = torch.zeros(g, dtype=torch.bool)
            hinted[list(slot_etas)] = True
            groups.append(
                Group(
                    prompt_ids=prompt.repeat(g, 1),
                    completions=rollout.completions,
                    advantages=group_advantages(rewards, self.cfg.advantage),
                    rewards=rewards,
                    hint_mask=hint_mask,
                    commit_step=rollout.commit_step,
                    all_wrong=not any(scores.correct),
                    replaced=rescued.replaced.get(i, 0),
                    correct=sum(scores.correct),
                    hinted=hinted if slot_etas else None,
                    etas=[slot_etas[slot] for slot in sorted(slot_etas)],
                    level=levels[i],
                )
            )
        return groups
