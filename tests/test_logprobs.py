"""The RL log-prob estimators against exact values on models small enough to enumerate or replay."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import MASK_ID, decode, save_tiny_checkpoint, tiny_model
from torch import nn

from igpo.decoding.sampler import HINTED
from igpo.logprobs import sequence_elbo, trajectory_logprobs


class Recorder(nn.Module):
    """Passes calls through to a model and keeps every canvas it saw with the logits it gave."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config, self.token_spec = inner.config, inner.token_spec
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, input_ids, attention_mask=None, **kw):
        out = self.inner(input_ids, attention_mask=attention_mask, **kw)
        self.calls.append((input_ids.clone(), out.logits.detach().float().clone()))
        return out


def _replayed_logprobs(rec: Recorder, final: torch.Tensor, plen: int, temperature: float, group: int = 1):
    """Per-token log p of the decoded tokens, from the canvases the decoder actually ran: a token
    first visible after pass s is scored with pass (s // group * group)'s logits, the way the
    decoder sampled it (softmax(logits / T), the mask token excluded)."""
    canvases = [c for c, _ in rec.calls] + [final]
    out = torch.zeros(final.shape[0], final.shape[1] - plen)
    committed_at = torch.full_like(out, -1, dtype=torch.long)
    for s in range(len(rec.calls)):
        before, after = canvases[s][:, plen:], canvases[s + 1][:, plen:]
        committed_at[(before == MASK_ID) & (after != MASK_ID)] = s
    for s in range(len(rec.calls)):
        logits = rec.calls[(s // group) * group][1][:, plen:].clone() / temperature
        logits[..., MASK_ID] = float("-inf")
        logp = torch.log_softmax(logits, -1).gather(-1, final[:, plen:, None]).squeeze(-1)
        out = torch.where(committed_at == s, logp, out)
    return out, committed_at


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_trajectory_equals_the_replayed_decoder_with_hints(temperature):
    torch.manual_seed(0)
    model = tiny_model(seed=3, std=0.1)
    rec = Recorder(model)
    prompt = torch.randint(4, 60, (3, 5))
    hints = torch.full((3, 16), MASK_ID)
    hints[0, 2:5] = torch.tensor([7, 8, 9])
    hints[2, 10:12] = torch.tensor([11, 12])
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    out = decode(
        rec,
        prompt,
        gen_length=16,
        block_length=8,
        steps=8,
        temperature=temperature,
        mask_id=MASK_ID,
        hints=hints,
        generator=gens,
        record_steps=True,
    )
    exact, committed_at = _replayed_logprobs(rec, out.sequences, 5, temperature)
    assert torch.equal(torch.where(hints != MASK_ID, HINTED, committed_at), out.commit_step)
    est = trajectory_logprobs(model, prompt, out.completions, out.commit_step, mask_id=MASK_ID, temperature=temperature)
    decoded = out.commit_step >= 0
    torch.testing.assert_close(est.logp[decoded], exact[decoded], rtol=1e-5, atol=1e-5)
    # the trajectory's log-likelihood: the sum over every row's decoded tokens
    torch.testing.assert_close((est.logp * decoded).sum(1), (exact * decoded).sum(1), rtol=1e-5, atol=1e-4)
    # hint tokens: scored with the first canvas, all hints masked (what mean_field sees), mask excluded
    hinted = out.commit_step == HINTED
    first = model(torch.cat([prompt, torch.full_like(hints, MASK_ID)], 1)).logits[:, 5:].float() / temperature
    first[..., MASK_ID] = float("-inf")
    expect = torch.log_softmax(first, -1).gather(-1, out.completions[..., None]).squeeze(-1)
    torch.testing.assert_close(est.logp[hinted], expect[hinted], rtol=1e-5, atol=1e-5)


def test_trajectory_group_steps_scores_with_the_groups_first_canvas():
    model = tiny_model(seed=4, std=0.1)
    rec = Recorder(model)
    prompt = torch.randint(4, 60, (2, 4))
    out = decode(
        rec,
        prompt,
        gen_length=16,
        block_length=8,
        steps=8,
        temperature=1.0,
        mask_id=MASK_ID,
        generator=[torch.Generator().manual_seed(i) for i in range(2)],
        record_steps=True,
    )
    grouped, _ = _replayed_logprobs(rec, out.sequences, 4, 1.0, group=2)
    est = trajectory_logprobs(model, prompt, out.completions, out.commit_step, mask_id=MASK_ID, group_steps=2)
    torch.testing.assert_close(est.logp, grouped, rtol=1e-5, atol=1e-5)
    exact = trajectory_logprobs(model, prompt, out.completions, out.commit_step, mask_id=MASK_ID)
    assert not torch.allclose(est.logp, exact.logp)  # an approximation, and a visible one


def test_trajectory_carries_gradients_and_entropy():
    model = tiny_model(seed=5, std=0.1).train()
    prompt = torch.randint(4, 60, (2, 4))
    out = decode(
        model,
        prompt,
        gen_length=8,
        block_length=8,
        steps=4,
        temperature=1.0,
        mask_id=MASK_ID,
        generator=torch.Generator().manual_seed(0),
        record_steps=True,
    )
    est = trajectory_logprobs(model, prompt, out.completions, out.commit_step, mask_id=MASK_ID, with_entropy=True)
    est.logp.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert (est.entropy > 0).all() and est.entropy.requires_grad is False


# ------------------------------------------------------------------ sequence ELBO vs enumeration
def _conditional(model, prompt, x, visible):
    """log p(x_i | prompt, x at `visible`) for every position i, one pass."""
    canvas = torch.where(visible, x, torch.full_like(x, MASK_ID_SMALL))
    logits = model(torch.cat([prompt, canvas])[None]).logits[0, prompt.numel() :].float()
    return torch.log_softmax(logits, -1).gather(-1, x[:, None]).squeeze(-1)


MASK_ID_SMALL = 5


@torch.no_grad()
def test_sequence_elbo_bounds_the_enumerated_marginal_and_converges():
    """Vocabulary 5 (+ mask), completion length 3. A masked diffusion model's likelihood is the
    any-order mixture p(x) = mean over orders of prod_k p(x_k | earlier in the order); the exact
    ELBO (every masked subset enumerated with LLaDA's n / l weights) equals the mean over orders
    of the log-products, hence is at most log p(x) (Jensen); the Monte-Carlo estimate converges
    to it."""
    torch.manual_seed(0)
    model = tiny_model(seed=2, vocab=6, std=0.15)
    prompt = torch.tensor([1, 3])
    tlen, real = 3, range(5)
    total_mass = 0.0
    for values in [(0, 1, 2), (4, 4, 0), (2, 2, 2)] + [tuple(v) for v in itertools.product(real, repeat=tlen)][::25]:
        x = torch.tensor(values)
        orders = list(itertools.permutations(range(tlen)))
        log_products = []
        for order in orders:
            visible = torch.zeros(tlen, dtype=torch.bool)
            total = 0.0
            for pos in order:
                total += float(_conditional(model, prompt, x, visible)[pos])
                visible[pos] = True
            log_products.append(total)
        log_marginal = math.log(sum(math.exp(v) for v in log_products) / len(orders))
        mean_over_orders = sum(log_products) / len(orders)
        exact_elbo = 0.0
        for level in range(1, tlen + 1):
            subsets = list(itertools.combinations(range(tlen), level))
            for subset in subsets:
                masked = torch.zeros(tlen, dtype=torch.bool)
                masked[list(subset)] = True
                cond = _conditional(model, prompt, x, ~masked)
                exact_elbo += (1 / tlen) * (tlen / level) * float(cond[masked].sum()) / len(subsets)
        assert math.isclose(exact_elbo, mean_over_orders, rel_tol=1e-5, abs_tol=1e-5)
        assert exact_elbo <= log_marginal + 1e-6
        assert log_marginal - exact_elbo < 0.1 * abs(log_marginal)  # and a close one on this model
        mc = sequence_elbo(
            model,
            prompt[None],
            x[None],
            torch.ones(1, tlen, dtype=torch.bool),
            mask_id=MASK_ID_SMALL,
            mc_num=2000,
            generator=torch.Generator().manual_seed(1),
        )
        assert abs(float(mc.logp.sum()) - exact_elbo) < 0.03 * abs(exact_elbo) + 0.02
        assert mc.sequence_level
    for values in itertools.product(real, repeat=tlen):  # the mixture is a (sub-)distribution
        x = torch.tensor(values)
        prods = []
        for order in itertools.permutations(range(tlen)):
            visible = torch.zeros(tlen, dtype=torch.bool)
            logp = 0.0
            for pos in order:
                logp += float(_conditional(model, prompt, x, visible)[pos])
                visible[pos] = True
            prods.append(math.exp(logp))
        total_mass += sum(prods) / len(prods)
    assert total_mass <= 1.0 + 1e-5


def test_sequence_elbo_same_generator_same_masks_and_unscored_tokens_stay_visible():
    model = tiny_model(seed=1, std=0.1)
    prompt = torch.randint(4, 60, (2, 3))
    comp = torch.randint(4, 60, (2, 6))
    keep = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    a = sequence_elbo(model, prompt, comp, keep, mask_id=MASK_ID, mc_num=3, generator=torch.Generator().manual_seed(5))
    b = sequence_elbo(model, prompt, comp, keep, mask_id=MASK_ID, mc_num=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.logp, b.logp)
    assert (a.logp[~keep] == 0).all()


# ------------------------------------------------------------------ bandit: GRPO raises a reward
@pytest.mark.parametrize("estimator", ["mean_field", "trajectory", "elbo"])
def test_bandit_grpo_raises_the_decoders_success_rate(tmp_path, estimator):
    """Reward 1 when a completion contains a chosen token; 30 GRPO steps through the trainer's own
    update; the decoder's measured success rate (256 fresh samples) must rise clearly."""
    from igpo.decoding import DecodeConfig
    from igpo.training.loss import PolicyLossConfig, group_advantages
    from igpo.training.model import build_model, make_optimizer, make_scheduler
    from igpo.training.rl import Trainer
    from igpo.training.rl_config import RLConfig
    from igpo.training.rollouts import Group, StepTimer
    from igpo.training.settings import LoraSettings, ModelSettings, OptimSettings

    folder = save_tiny_checkpoint(tmp_path / "m", seed=2)
    cfg = RLConfig(
        model=ModelSettings(path=str(folder), lora=LoraSettings(enabled=False)),
        decode=DecodeConfig(gen_length=8, block_length=8, steps=4, temperature=1.0, early_exit=False),
        optim=OptimSettings(lr=3e-3, warmup_steps=0, weight_decay=0.0),
        num_generations=8,
        mu=1 if estimator != "elbo" else 2,
        logprob_estimator=estimator,
        loss=PolicyLossConfig(ratio_level="sequence", beta=0.0),
        elbo_samples=2,
        seed=0,
    )
    torch.manual_seed(0)
    model, tok = build_model(cfg.model, device="cpu")
    opt = make_optimizer(model, cfg.optim)
    trainer = Trainer(cfg, model, tok, None, opt, make_scheduler(opt, cfg.optim, 1000))
    prompt = torch.tensor(tok("how many is 3 and 4", add_special_tokens=False)["input_ids"])
    target = tok.convert_tokens_to_ids("7")

    def success(seed: int) -> float:
        cfg.num_generations = 256
        rolls = trainer.sample([prompt], torch.Generator().manual_seed(seed))[0]
        cfg.num_generations = 8
        return float((rolls.completions == target).any(1).float().mean())

    before = success(99)
    gen = torch.Generator().manual_seed(1)
    for step in range(30):
        rolls = trainer.sample([prompt], gen)[0]
        rewards = (rolls.completions == target).any(1).float()
        group = Group(
            prompt_ids=prompt.repeat(8, 1),
            completions=rolls.completions,
            advantages=group_advantages(rewards),
            rewards=rewards,
            hint_mask=torch.zeros_like(rolls.completions, dtype=torch.bool),
            commit_step=rolls.commit_step,
            all_wrong=False,
            replaced=0,
            correct=int(rewards.sum()),
        )
        trainer.update([group], step, StepTimer())
    after = success(99)
    assert 0.05 < before < 0.8, before  # the chosen token is neither certain nor absent at the start
    assert after > before + 0.15, (before, after)
