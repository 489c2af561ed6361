"""The settings of GRPO / IGPO training (`RLConfig`, `IGPOSettings`) with their checks across
fields, and what follows from them: the training problems' check, each process's share of
prompts, the step horizon of an `epochs` run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from igpo.config import coerce
from igpo.data import DataConfig, Example
from igpo.decoding import DecodeConfig
from igpo.errors import InvalidSetting
from igpo.hints import HintConfig
from igpo.logprobs import ESTIMATORS
from igpo.rewards import RewardConfig
from igpo.training.loss import ADVANTAGES, PolicyLossConfig
from igpo.training.seeds import per_process
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


def epoch_horizon(cfg: RLConfig, problems: int, processes: int) -> int:
    """Steps that cover `cfg.epochs` passes over `problems` training problems (at least 1)."""
    return max(1, math.ceil(cfg.epochs * problems / (cfg.prompts_per_step * processes)))


def local_prompts(cfg: RLConfig, processes: int) -> int:
    """Each process's share of prompts_per_step (seeds.per_process)."""
    return per_process(cfg.prompts_per_step, processes, "prompts_per_step", "prompts")
