"""GRPO for masked diffusion LMs, with IGPO's inpainting on top (every part a switch).

One training step, per prompt: sample G rollouts; score them; if all G are wrong and IGPO is on,
re-sample G rollouts with hint chunks of the reference trace fixed in the canvas (or without
hints: the sample-matched baseline) and replace up to floor(lambda * G) wrong rollouts with
correct re-sampled ones; advantages = reward - group mean; then `mu` clipped policy-gradient
updates on those rollouts with the chosen log-prob estimator (igpo.logprobs: mean_field,
trajectory or a sequence-level elbo), where of the hint tokens only the top-tau by entropy enter
the loss. With `igpo.resample: none` this is plain GRPO (diffu-GRPO)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from igpo.data import load_examples
from igpo.decoding.text import stop_ids
from igpo.logprobs import ESTIMATORS, Estimate, EstimatorBatch, EstimatorSettings
from igpo.models import TokenSpec
from igpo.training import sharding
from igpo.training.loop import open_session, run_steps
from igpo.training.loss import completion_mask, entropy_filter, policy_loss, token_weights
from igpo.training.model import base_module, is_peft
from igpo.training.rl_config import SEED_RANGE, RLConfig, check_examples, epoch_horizon, local_prompts
from igpo.training.rollouts import Group, RolloutMixin, StepTimer
from igpo.training.seeds import Stream, process_count, step_generator
from igpo.training.settings import ModelSettings, TrainingError
from igpo.training.step_metrics import group_metrics, reduce_metrics


class Trainer(RolloutMixin):
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
            self.reference = frozen_reference(base_module(model), cfg.model)

    @property
    def estimator(self):
        """The registered log-prob estimator this run uses (igpo.logprobs.ESTIMATORS)."""
        return ESTIMATORS[self.cfg.logprob_estimator]

    @property
    def policy(self):
        return self.accelerator.unwrap_model(self.model) if self.accelerator else self.model

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


def _add(acc: list[torch.Tensor] | None, grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Element-wise sum of two gradient lists (the first may be None)."""
    return grads if acc is None else [a + b for a, b in zip(acc, grads, strict=True)]


def _clone(gen: torch.Generator | None) -> torch.Generator | None:
    """A copy of a generator, so old / reference / new log-probs see the same prompt mask."""
    if gen is None:
        return None
    copy = torch.Generator()
    copy.set_state(gen.get_state())
    return copy


def frozen_reference(model: nn.Module, settings: ModelSettings) -> nn.Module:
    """The KL term's reference policy: a frozen copy of the starting weights. A sharded model
    cannot be copied; its reference is loaded again from model.path and sharded the same way."""
    plan = sharding.plan_of(model)
    if plan is None:
        import copy

        return copy.deepcopy(model).eval().requires_grad_(False)
    from igpo.models import load_model

    reference = load_model(settings.path, dtype=settings.dtype, device=model.device).requires_grad_(False)
    return sharding.shard(reference, plan).eval()


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
        metrics = reduce_metrics(session.accelerator, {**group_metrics(groups, cfg.num_generations), **losses})
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
