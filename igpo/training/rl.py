"""GRPO for masked diffusion LMs, with IGPO's inpainting on top (every part a switch).

One training step, per prompt: sample G rollouts; score them; if all G are wrong and IGPO is on,
re-sample G rollouts with hint chunks of the reference trace fixed in the canvas (or without
hints: the sample-matched baseline) and replace up to floor(lambda * G) wrong rollouts with
correct re-sampled ones; advantages = reward - group mean; then `mu` clipped policy-gradient
updates on those rollouts with the chosen log-prob estimator (igpo.logprobs: mean_field,
trajectory or a sequence-level elbo), where of the hint tokens only the top-tau by entropy enter
the loss. With `igpo.resample: none` this is plain GRPO (diffu-GRPO)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from igpo.config import coerce
from igpo.data import DataConfig, Example, load_examples, render_prompt
from igpo.decoding import DecodeConfig, generate
from igpo.decoding.text import completion_texts, left_pad, stop_ids
from igpo.errors import InvalidSetting
from igpo.hints import HintConfig, build_hint_batch, encode_trace, sample_etas
from igpo.logprobs import ESTIMATORS, Estimate, EstimatorBatch, EstimatorSettings
from igpo.models import TokenSpec
from igpo.prompts import PREFILL, source_instruction
from igpo.rewards import RewardBreakdown as Scores
from igpo.rewards import RewardConfig, score_rollouts
from igpo.training.loop import open_session, run_steps
from igpo.training.loss import (
    ADVANTAGES,
    PolicyLossConfig,
    completion_mask,
    entropy_filter,
    group_advantages,
    policy_loss,
    token_weights,
)
from igpo.training.model import base_module, is_peft
from igpo.training.seeds import Stream, per_process, process_count, step_generator
from igpo.training.settings import CheckpointSettings, LogSettings, ModelSettings, OptimSettings, TrainingError

ResampleMode = Literal["hints", "plain", "none"]
"""What happens to an all-wrong group (IGPOSettings.resample)."""
MAX_GENERATIONS = 1024
"""Most rollouts per prompt: one decoding batch each (published GRPO/IGPO runs use 8-16)."""
SEED_RANGE = 2**62


@dataclass
class IGPOSettings:
    """What happens to all-wrong groups (the IGPO part of the trainer)."""

    resample: ResampleMode = "hints"
    """hints: IGPO (inpainted re-sampling); plain: sample-matched baseline (re-sample without
    hints); none: plain GRPO (all-wrong groups give no gradient)."""
    replace_ratio: float = 0.5
    """lambda: at most floor(lambda * G) wrong rollouts are replaced by correct re-sampled ones."""
    entropy_top_fraction: float = 0.2
    """tau: share of each replaced rollout's hint positions (highest policy entropy) kept in the
    loss; 1.0 keeps every hint token (no entropy filter)."""

    def __post_init__(self) -> None:
        coerce(self.resample, ResampleMode, "igpo.resample")
        if not 0 <= self.replace_ratio <= 1:
            raise InvalidSetting(f"igpo.replace_ratio must lie in [0, 1], got {self.replace_ratio}")
        if not 0 <= self.entropy_top_fraction <= 1:
            raise InvalidSetting(f"igpo.entropy_top_fraction must lie in [0, 1], got {self.entropy_top_fraction}")


def _rollout_decode() -> DecodeConfig:
    return DecodeConfig(gen_length=256, block_length=32, steps=128, temperature=1.2)


@dataclass
class RLConfig:
    """GRPO / IGPO training (defaults: the released IGPO run on LLaDA-8B-Instruct)."""

    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataConfig = field(default_factory=DataConfig)
    decode: DecodeConfig = field(default_factory=_rollout_decode)
    """Rollout decoding: 256 tokens, block 32, 128 steps, temperature 1.2, low-confidence remasking."""
    hints: HintConfig = field(default_factory=HintConfig)
    igpo: IGPOSettings = field(default_factory=IGPOSettings)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    loss: PolicyLossConfig = field(default_factory=PolicyLossConfig)
    optim: OptimSettings = field(default_factory=OptimSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    log: LogSettings = field(default_factory=LogSettings)
    num_generations: int = 8
    """G: rollouts per prompt (2..MAX_GENERATIONS; decoded as one batch)."""
    prompts_per_step: int = 1
    """Prompt groups per training step over all processes (split evenly between them; refused
    when it does not divide); one optimiser step covers all of them."""
    max_steps: int = 128
    mu: int = 4
    """Policy updates per batch of rollouts (each one optimiser step)."""
    advantage: str = "group_mean"
    """The advantage estimator (igpo.training.loss.ADVANTAGES): group_mean (reward - group mean;
    IGPO, released and paper) or group_mean_std (also divided by the group's reward std; GRPO)."""
    epochs: float | None = None
    """Train this many passes over the training problems instead of max_steps: max_steps becomes
    ceil(epochs x problems / (prompts_per_step x processes)), and a decaying schedule ends there
    (released run: 10 epochs, linear decay). None: max_steps as given."""
    p_mask_prompt: float = 0.0
    """Mask each prompt token with this probability in the log-prob pass (d1); IGPO: 0."""
    logprob_estimator: str = "mean_field"
    """mean_field: diffu-GRPO's one-pass estimate log p(token | prompt) (released IGPO);
    trajectory: log p of each token at the decoding pass that committed it, the canvases
    replayed (the likelihood of the sampled trajectory; one pass per decoding pass, or per
    `trajectory_group_steps`); elbo: LLaDA's sequence-level ELBO over `elbo_samples` random
    maskings (same masks for old/new/reference), used only for sequence ratios and a sequence KL."""
    trajectory_group_steps: int = 1
    """trajectory: score k consecutive decoding passes with one canvas (k times fewer passes;
    exact at 1)."""
    elbo_samples: int = 2
    """Forward passes per log-prob estimate when logprob_estimator is elbo."""
    seed: int = 3
    """Seeds prompt order, sampling, hints and dropout (released run: 3)."""
    instruction: str | None = None
    """Text before the question in the user turn; None: the data source's default (the d1
    instruction for math sources, a short in-vocabulary one for the arith testbed)."""
    batch_rollouts: bool = False
    """Decode all `prompts_per_step` groups of a step in one decoder call, and the re-samples of
    all its all-wrong groups in a second (prompts left-padded), instead of one call per group:
    fewer, larger batches (results/bench/train.md). Same seed, same output either way, but the
    two draw the random stream in a different order, so their runs differ."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """The checks across fields (estimator against ratio level, prompt masking, guidance,
        trajectory grouping against the decoding steps, group sizes): run when a recipe is
        loaded, and again when training starts (fields may be set after construction)."""
        if self.logprob_estimator not in ESTIMATORS:
            raise TrainingError(
                f"logprob_estimator must be one of {', '.join(ESTIMATORS)}, got {self.logprob_estimator!r}"
            )
        if ESTIMATORS[self.logprob_estimator].sequence_level and self.loss.ratio_level != "sequence":
            raise TrainingError(
                f"logprob_estimator={self.logprob_estimator} is a sequence-level estimate: "
                "it needs loss.ratio_level=sequence (per-token log-probs are what the other losses read)"
            )
        if self.advantage not in ADVANTAGES:
            raise TrainingError(f"advantage must be one of {', '.join(ADVANTAGES)}, got {self.advantage!r}")
        if self.epochs is not None and not self.epochs > 0:
            raise TrainingError(f"epochs must be > 0 (or unset), got {self.epochs}")
        if self.p_mask_prompt > 0 and self.logprob_estimator != "mean_field":
            raise TrainingError(
                f"p_mask_prompt masks the prompt of the mean-field pass; logprob_estimator="
                f"{self.logprob_estimator} does not use it (set p_mask_prompt=0)"
            )
        if self.logprob_estimator == "trajectory" and self.decode.cfg_scale > 0:
            raise TrainingError(
                "logprob_estimator=trajectory scores the unguided policy: it does not go with decode.cfg_scale > 0"
            )
        for name in ("trajectory_group_steps", "elbo_samples"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be >= 1, got {getattr(self, name)}")
        steps_per_block = self.decode.steps // (self.decode.gen_length // self.decode.block_length)
        if self.logprob_estimator == "trajectory" and steps_per_block % self.trajectory_group_steps:
            raise TrainingError(
                f"trajectory_group_steps={self.trajectory_group_steps} must divide the decoding steps per "
                f"block ({steps_per_block}), so that no canvas group straddles two blocks"
            )
        if self.num_generations < 2 or self.mu < 1 or self.prompts_per_step < 1 or self.max_steps < 1:
            raise TrainingError("num_generations >= 2, mu >= 1, prompts_per_step >= 1 and max_steps >= 1 are required")
        if self.num_generations > MAX_GENERATIONS:
            raise TrainingError(
                f"num_generations={self.num_generations} is above {MAX_GENERATIONS} rollouts per prompt "
                "(one decoding batch each); use prompts_per_step for more rollouts per step"
            )


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


class Trainer:
    """Holds the model, optimiser and settings; `rollout_group` and `update` are one step's two halves."""

    def __init__(
        self,
        cfg: RLConfig,
        model,
        tokenizer,
        accelerator,
        optimizer=None,
        scheduler=None,
        spec: TokenSpec | None = None,
    ):
        """`spec`: the model's special tokens (default: the loaded model's own `token_spec`)."""
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.accelerator = accelerator
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.spec = spec if spec is not None else base_module(model).token_spec
        self.stops = stop_ids(self.spec)
        self.reference = None
        if cfg.loss.beta > 0 and not is_peft(model):
            import copy

            self.reference = copy.deepcopy(base_module(model)).eval().requires_grad_(False)

    @property
    def estimator(self):
        """The registered log-prob estimator this run uses (igpo.logprobs.ESTIMATORS)."""
        return ESTIMATORS[self.cfg.logprob_estimator]

    @property
    def policy(self):
        return self.accelerator.unwrap_model(self.model) if self.accelerator else self.model

    # ------------------------------------------------------------------ rollouts
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

    # ------------------------------------------------------------------ updates
    def logprobs(
        self,
        model,
        group: Group,
        generator: torch.Generator | None,
        *,
        with_entropy: bool = False,
        token_mask: torch.Tensor | None = None,
    ) -> Estimate:
        """The configured estimator on one group (the same call serves old, new and reference)."""
        cfg = self.cfg
        device = self.accelerator.device if self.accelerator else group.prompt_ids.device
        batch = EstimatorBatch(
            prompt_ids=group.prompt_ids.to(device),
            completion_ids=group.completions.to(device),
            mask_id=self.spec.mask_id,
            shifted_logits=self.spec.shifted_logits,
            commit_step=None if group.commit_step is None else group.commit_step.to(device),
            token_mask=token_mask,
            generator=generator,
            with_entropy=with_entropy,
        )
        settings = EstimatorSettings(
            temperature=cfg.decode.temperature,
            suppress_tokens=cfg.decode.suppressed_ids(self.spec),
            group_steps=cfg.trajectory_group_steps,
            p_mask_prompt=cfg.p_mask_prompt,
            elbo_samples=cfg.elbo_samples,
        )
        return ESTIMATORS[cfg.logprob_estimator].fn(model, batch, settings)

    def reference_logprobs(self, group: Group, generator, token_mask) -> torch.Tensor | None:
        if self.cfg.loss.beta <= 0:
            return None
        with torch.no_grad():
            if self.reference is not None:
                return self.logprobs(self.reference, group, generator, token_mask=token_mask).logp
            policy = self.policy
            with policy.disable_adapter():
                return self.logprobs(policy, group, generator, token_mask=token_mask).logp

    def loss_mask(self, group: Group, entropy: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Completion tokens up to the first EOS; hint tokens only if they pass the entropy filter."""
        base = completion_mask(group.completions, self.spec.eos_id).to(entropy.device)
        hints = group.hint_mask.to(entropy.device) & base
        kept_hints = entropy_filter(hints, entropy, self.cfg.igpo.entropy_top_fraction)
        return (base & ~hints) | kept_hints, int(kept_hints.sum())

    def on_policy(self) -> bool:
        """mu = 1 with a token-level estimator: the old log-probs are the update pass's own values
        (detached, ratio 1), so no separate old pass is run."""
        return self.cfg.mu == 1 and not self.estimator.sequence_level

    def prepare(self, group: Group, step: int) -> Prepared:
        """Entropy, loss mask, old and reference log-probs of one group (no gradients); on-policy
        the first three come from the update pass itself (see `current`)."""
        cfg = self.cfg
        needs_gen = cfg.p_mask_prompt > 0 or cfg.logprob_estimator == "elbo"
        gen = None
        if needs_gen:
            seeds = torch.randint(
                0, SEED_RANGE, (group.unit + 1,), generator=step_generator(cfg.seed, step, 0, Stream.ESTIMATOR)
            )
            gen = torch.Generator().manual_seed(int(seeds[group.unit]))
        if self.on_policy():
            ref = self.reference_logprobs(group, _clone(gen), None)
            return Prepared(group=group, old=None, ref=ref, mask=None, entropy=None, hint_tokens=0, generator=gen)
        policy = self.policy
        with torch.no_grad():
            was = policy.training
            policy.eval()
            first = self.logprobs(policy, group, _clone(gen), with_entropy=True)
            mask, hint_tokens = self.loss_mask(group, first.entropy)
            old = first.logp
            if self.estimator.sequence_level:  # entropy came from the mean-field pass
                old = self.logprobs(policy, group, _clone(gen), token_mask=mask).logp
            policy.train(was)
        ref = self.reference_logprobs(group, _clone(gen), mask)
        return Prepared(
            group=group, old=old, ref=ref, mask=mask, entropy=first.entropy, hint_tokens=hint_tokens, generator=gen
        )

    def current(self, item: Prepared) -> torch.Tensor:
        """The policy's log-probs (with gradients) for one group; fills in an on-policy item."""
        est = self.logprobs(
            self.model, item.group, _clone(item.generator), token_mask=item.mask, with_entropy=item.old is None
        )
        if item.old is None:
            item.mask, item.hint_tokens = self.loss_mask(item.group, est.entropy)
            item.entropy, item.old = est.entropy, est.logp.detach()
        return est.logp

    def token_weights(self, prepared: list[Prepared]) -> list[float]:
        """Each group's weight in the step's loss under loss.normalisation=token: its share of the
        step's loss tokens, over all processes (`igpo.training.loss.token_weights`)."""
        counts = [self.loss_tokens(item) for item in prepared]
        processes = self.accelerator.num_processes if self.accelerator else 1
        total = sum(counts)
        if processes > 1:
            summed = self.accelerator.reduce(torch.tensor([float(total)], device=self.accelerator.device), "sum")
            total = int(summed.item())
        return token_weights(counts, total, processes)

    def loss_tokens(self, item: Prepared) -> int:
        """How many tokens of a group enter the loss. On-policy the mask is made in the update
        pass; its size does not depend on the entropies (the filter keeps a fixed share of each
        row's hint tokens), so placeholder entropies count it beforehand."""
        if item.mask is not None:
            return int(item.mask.sum())
        placeholder = torch.zeros(item.group.completions.shape)
        return int(self.loss_mask(item.group, placeholder)[0].sum())

    def update(self, groups: list[Group], step: int, timer: StepTimer) -> dict[str, float]:
        """mu optimiser steps on the step's rollouts; returns loss metrics."""
        cfg = self.cfg
        t0 = time.perf_counter()
        prepared = [self.prepare(group, step) for group in groups]
        timer.add("logprob", time.perf_counter() - t0)
        t0 = time.perf_counter()
        totals = {"loss": 0.0, "policy_loss": 0.0, "kl": 0.0, "clip_ratio": 0.0}
        sequence_kl = self.estimator.sequence_level
        weights = self.token_weights(prepared) if cfg.loss.normalisation == "token" else None
        self.model.train()
        hinted_grads: list[torch.Tensor] | None = None
        grad_split: dict[str, float] = {}
        for update in range(cfg.mu):
            for index, item in enumerate(prepared):
                logp = self.current(item)
                parts = policy_loss(
                    logp,
                    item.old,
                    item.group.advantages.to(logp.device),
                    item.mask,
                    cfg.loss,
                    item.ref,
                    sequence_kl=sequence_kl,
                )
                if not torch.isfinite(parts.loss.detach()):
                    raise TrainingError(
                        f"the loss became {float(parts.loss)} at step {step}: training diverged "
                        "(lower optim.lr or loss.beta); nothing of this step was saved"
                    )
                scaled = parts.loss / len(prepared) if weights is None else parts.loss * weights[index]
                if update == 0 and cfg.log.hint_gradients and item.group.hinted is not None:
                    hinted_grads = _add(hinted_grads, self.hinted_gradient(scaled, logp, item.group.hinted))
                if self.accelerator:
                    self.accelerator.backward(scaled)
                else:
                    scaled.backward()
                share = 1.0 / (len(prepared) * cfg.mu) if weights is None else weights[index] / cfg.mu
                totals["loss"] += float(parts.loss.detach()) * share
                totals["policy_loss"] += float(parts.policy.detach()) * share
                totals["kl"] += float(parts.kl.detach()) * share
                totals["clip_ratio"] += float(parts.clip_fraction) * share
            if update == 0 and cfg.log.hint_gradients:
                grad_split = self.gradient_split(hinted_grads)
            if self.optimizer is not None:
                if cfg.optim.grad_clip:
                    params = [p for p in self.model.parameters() if p.requires_grad]
                    clip = self.accelerator.clip_grad_norm_ if self.accelerator else torch.nn.utils.clip_grad_norm_
                    clip(params, cfg.optim.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        timer.add("backward", time.perf_counter() - t0)
        loss_tokens = sum(int(p.mask.sum()) for p in prepared)
        hint_tokens = sum(p.hint_tokens for p in prepared)
        hinted_rows = sum(
            int(p.mask[p.group.hinted.to(p.mask.device)].sum()) for p in prepared if p.group.hinted is not None
        )
        entropy_sum = sum(float((p.entropy * p.mask).sum()) for p in prepared)
        totals.update(
            hint_tokens=hint_tokens,
            hinted_loss_tokens=hinted_rows,
            hint_token_fraction=hint_tokens / max(1, loss_tokens),
            hinted_loss_token_share=hinted_rows / max(1, loss_tokens),
            entropy=entropy_sum / max(1, loss_tokens),
            loss_tokens=loss_tokens,
            **grad_split,
        )
        return totals

    def trainable(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def hinted_gradient(self, scaled: torch.Tensor, logp: torch.Tensor, hinted: torch.Tensor) -> list[torch.Tensor]:
        """The part of a group's parameter gradient that flows through its hinted rollouts'
        log-probs (the loss reaches the weights only through `logp`, so rows split it exactly)."""
        params = self.trainable()
        (d_logp,) = torch.autograd.grad(scaled, logp, retain_graph=True)
        rows = hinted.to(d_logp.device)[:, None].to(d_logp.dtype)
        grads = torch.autograd.grad(logp, params, grad_outputs=d_logp * rows, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]

    def gradient_split(self, hinted: list[torch.Tensor] | None) -> dict[str, float]:
        """Norms of the first update's gradient from hinted and from unhinted rollouts, and the
        hinted share of their sum (log.hint_gradients)."""
        params = self.trainable()
        total = [torch.zeros_like(p) if p.grad is None else p.grad.detach() for p in params]
        hinted = hinted or [torch.zeros_like(t) for t in total]
        norm_h = float(torch.sqrt(sum((h.float() ** 2).sum() for h in hinted)))
        norm_u = float(torch.sqrt(sum(((t - h).float() ** 2).sum() for t, h in zip(total, hinted, strict=True))))
        share = norm_h / (norm_h + norm_u) if norm_h + norm_u > 0 else 0.0
        return {"grad_norm_hinted": norm_h, "grad_norm_unhinted": norm_u, "hinted_grad_share": share}


@dataclass
class Prepared:
    """One group ready for the policy updates: what the loss compares the new log-probs with."""

    group: Group
    old: torch.Tensor | None
    """None until the on-policy update pass fills it (with mask, entropy and hint_tokens)."""
    ref: torch.Tensor | None
    mask: torch.Tensor | None
    entropy: torch.Tensor | None
    hint_tokens: int
    generator: torch.Generator | None
    """The group's estimator randomness (prompt masks, ELBO masks); cloned for every pass."""


Generators = torch.Generator | list[torch.Generator]
"""One generator per prompt, or one shared by all of them (drawn from prompt by prompt)."""


def per_prompt(generators: Generators, count: int) -> list[torch.Generator]:
    """`count` generators: the list given, or the one generator repeated (so draws stay in order)."""
    if isinstance(generators, torch.Generator):
        return [generators] * count
    if len(generators) != count:
        raise InvalidSetting(f"{len(generators)} generators for {count} prompts")
    return list(generators)


def _add(acc: list[torch.Tensor] | None, grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Element-wise sum of two gradient lists (the first may be None)."""
    return grads if acc is None else [a + b for a, b in zip(acc, grads, strict=True)]


def example_level(example: Example) -> Any:
    """A problem's difficulty where its source records one (arith: operations; MATH: level)."""
    return example.meta.get("steps", example.meta.get("level"))


def _clone(gen: torch.Generator | None) -> torch.Generator | None:
    """A copy of a generator, so old / reference / new log-probs see the same prompt mask."""
    if gen is None:
        return None
    copy = torch.Generator()
    copy.set_state(gen.get_state())
    return copy


def check_examples(cfg: RLConfig, examples: list[Example]) -> None:
    if not examples:
        raise TrainingError("no training examples")
    if cfg.igpo.resample == "hints" and cfg.hints.enabled:
        for ex in examples:
            if not (ex.trace or "").strip():
                raise TrainingError(
                    f"example {ex.id!r} has no reference trace, which hints need "
                    "(set igpo.resample=none or plain, or give traces)"
                )


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


def epoch_horizon(cfg: RLConfig, problems: int, processes: int) -> int:
    """Steps that cover `cfg.epochs` passes over `problems` training problems (at least 1)."""
    return max(1, math.ceil(cfg.epochs * problems / (cfg.prompts_per_step * processes)))


def train_rl(cfg: RLConfig, out: Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Run GRPO / IGPO; checkpoints under out/checkpoints, one metrics line per step."""

    if not cfg.model.path:
        raise TrainingError("model.path is required")
    cfg.check()
    if cfg.logprob_estimator == "trajectory" and (cfg.decode.cache or cfg.decode.threshold or cfg.decode.factor):
        import logging

        logging.getLogger(__name__).warning(
            "logprob_estimator=trajectory scores full passes: with decode.cache the rollouts saw cached keys/values "
            "(an approximation), and with a parallel rule the passes per block vary, so trajectory_group_steps > 1 "
            "groups may straddle blocks"
        )
    tokenizer = None
    if cfg.data.max_trace_tokens is not None:  # the length filter counts the policy's tokens
        from igpo.models import load_tokenizer

        tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.path)
    examples = load_examples(cfg.data, tokenizer)
    check_examples(cfg, examples)
    processes = process_count()
    local = local_prompts(cfg, processes)
    if cfg.epochs is not None:
        cfg.max_steps = epoch_horizon(cfg, len(examples), processes)
    if cfg.prompts_per_step > len(examples):
        raise TrainingError(
            f"prompts_per_step={cfg.prompts_per_step} is more than the {len(examples)} training "
            "problems: every step would repeat prompts"
        )
    session = open_session(cfg, out, resume=resume, overwrite=overwrite, optimizer_steps=cfg.max_steps * cfg.mu)
    trainer = Trainer(
        cfg,
        session.model,
        session.tokenizer,
        session.accelerator,
        session.optimizer,
        session.scheduler,
        spec=session.spec,
    )
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    if resume and session.main:
        say_process_change(out, processes)

    def step_fn(step: int, _process_generator: torch.Generator) -> dict[str, Any]:
        timer = StepTimer()
        units = [session.rank * local + j for j in range(local)]  # positions in the step, all processes
        batch = [examples[order[(step * cfg.prompts_per_step + u) % len(order)]] for u in units]
        groups = trainer.rollout_step(batch, [step_generator(cfg.seed, step, u) for u in units], timer)
        for unit, group in zip(units, groups, strict=True):
            group.unit = unit
        losses = trainer.update(groups, step, timer)
        metrics = _reduce(session.accelerator, {**group_metrics(groups, cfg.num_generations), **losses})
        metrics["processes"] = session.world
        gen_tokens = sum(gr.completions.numel() for gr in groups) * session.world
        generation_s = timer.parts.get("generation", 0.0) + timer.parts.get("hinting", 0.0)
        metrics.update({f"time_{k}": v for k, v in timer.parts.items()})
        metrics["tokens_per_s"] = gen_tokens / generation_s if generation_s else 0.0
        return metrics

    return run_steps(
        session,
        cfg,
        step_fn,
        resume=resume,
        desc="igpo train",
        postfix=lambda m: {"reward": f"{m['reward']:.2f}", "all_wrong": f"{m['all_wrong_ratio']:.2f}"},
    )


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


def _reduce(accelerator, metrics: dict[str, Any]) -> dict[str, Any]:
    """The step's metrics over every process (one process: as they are): counts summed, lists
    joined in process order (= prompt order), per-level counts added, means weighted by what
    each process counted, shares recomputed; the rest (losses, timings) averaged."""
    if accelerator is None or accelerator.num_processes == 1:
        return metrics
    from accelerate.utils import gather_object

    return combine_metrics(gather_object([metrics]))


def combine_metrics(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One metrics dict from each process's, by the rules of `_reduce`."""
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


def local_prompts(cfg: RLConfig, processes: int) -> int:
    """Each process's share of prompts_per_step (seeds.per_process)."""
    return per_process(cfg.prompts_per_step, processes, "prompts_per_step", "prompts")


def say_process_change(out: Path, processes: int) -> None:
    """On a resume under another process count: say that it continues the same experiment."""
    from igpo.jsonfile import read_json_object
    from igpo.progress import say
    from igpo.training.checkpoints import STATE_FILE, resumable_checkpoint

    last = resumable_checkpoint(out)
    state = read_json_object(last[0] / STATE_FILE) if last else {}
    before = (state.get("metrics") or {}).get("processes")
    if before is not None and before != processes:
        say(
            "train",
            f"resuming a run made on {before} process(es) on {processes}: the same prompts, rollouts and "
            "updates (prompts_per_step is global); weights differ only by reduction-order rounding",
        )
