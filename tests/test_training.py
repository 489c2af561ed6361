"""Trainers: loss pieces by hand, GRPO vs IGPO on an all-wrong group, SFT weighting, resume,
bad input, and data-parallel training under accelerate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_checkpoint
from typer.testing import CliRunner

from harness.cli import app
from igpo.config import ConfigError, load_config
from igpo.training.loss import (
    ADVANTAGE_STD_EPS,
    PolicyLossConfig,
    completion_mask,
    entropy_filter,
    group_advantages,
    k3_kl,
    policy_loss,
    reduce_tokens,
)

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
TRACE = "<reasoning> 3 and 4 is 7 </reasoning> <answer> \\boxed{7} </answer>"


# ------------------------------------------------------------------ loss pieces by hand
def test_advantages_are_reward_minus_mean():
    r = torch.tensor([3.0, 0.0, 0.0, 1.0])
    assert group_advantages(r).tolist() == [2.0, -1.0, -1.0, 0.0]
    scaled = group_advantages(r, "group_mean_std")
    assert torch.allclose(scaled, (r - r.mean()) / (r.std(unbiased=False) + ADVANTAGE_STD_EPS))
    assert group_advantages(torch.zeros(8)).abs().sum() == 0


def test_completion_mask_keeps_first_eos_only():
    comp = torch.tensor([[5, 6, 2, 2, 2], [5, 5, 5, 5, 5], [2, 2, 7, 2, 2]])
    mask = completion_mask(comp, eos_id=2)
    assert mask.tolist() == [[True, True, True, False, False], [True] * 5, [True, False, False, False, False]]


def test_entropy_filter_keeps_top_fraction_of_hint_positions():
    hints = torch.tensor([[True, True, True, True, True, False, False, False, False, False]])
    entropy = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.8, 5.0, 5.0, 5.0, 5.0, 5.0]])
    kept = entropy_filter(hints, entropy, 0.4)  # 2 of 5 hint positions: the two highest entropies
    assert kept.nonzero()[:, 1].tolist() == [1, 4]
    assert entropy_filter(hints, entropy, 1.0).tolist() == hints.tolist()
    assert not entropy_filter(hints, entropy, 0.0).any()
    assert entropy_filter(hints, entropy, 0.01).sum() == 1  # at least one survives


def test_token_level_loss_hand_computed():
    logp = torch.log(torch.tensor([[0.5, 0.5], [0.2, 0.2]]))
    old = torch.log(torch.tensor([[0.25, 0.5], [0.2, 0.4]]))
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 2, dtype=torch.bool)
    cfg = PolicyLossConfig(ratio_level="token", epsilon_low=0.2, epsilon_high=0.2, beta=0.0, normalisation="token")
    parts = policy_loss(logp, old, adv, mask, cfg)
    # ratios: [2, 1] for A=+1 -> min(r, clip(r)) = [1.2, 1]; [1, 0.5] for A=-1 -> min(-r, -clip) = [-1, -0.8]
    expected = -(1.2 + 1.0 - 1.0 - 0.8) / 4
    assert math.isclose(float(parts.policy), expected, rel_tol=1e-6)
    assert math.isclose(float(parts.clip_fraction), 2 / 4, rel_tol=1e-6)


def test_sequence_level_ratio_is_geometric_mean():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.9]]))
    old = torch.log(torch.tensor([[0.25, 0.5, 0.1]]))
    mask = torch.tensor([[True, True, False]])  # third token masked out
    cfg = PolicyLossConfig(ratio_level="sequence", epsilon_low=0.5, epsilon_high=0.5, beta=0.0)
    parts = policy_loss(logp, old, torch.tensor([1.0]), mask, cfg)
    ratio = math.exp((math.log(2.0) + 0.0) / 2)  # exp(mean log ratio over kept tokens) = sqrt(2)
    assert math.isclose(float(parts.policy), -min(ratio, 1.5), rel_tol=1e-6)


def test_normalisations_differ_as_documented():
    values = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True], [True, False, False, False]])
    assert math.isclose(float(reduce_tokens(values, mask, "sequence")), (1.0 + 4.0) / 2)
    assert math.isclose(float(reduce_tokens(values, mask, "token")), 8.0 / 5, rel_tol=1e-6)
    assert math.isclose(float(reduce_tokens(values, mask, "constant")), 8.0 / 8)


def test_k3_kl_hand_value_and_penalty():
    logp, ref = torch.log(torch.tensor([[0.5]])), torch.log(torch.tensor([[0.25]]))
    assert math.isclose(float(k3_kl(logp, ref)), 0.5 - math.log(0.5) - 1, rel_tol=1e-6)
    cfg = PolicyLossConfig(beta=0.1, ratio_level="token")
    parts = policy_loss(logp, logp.detach(), torch.tensor([0.0]), torch.ones(1, 1, dtype=torch.bool), cfg, ref)
    assert math.isclose(float(parts.loss), 0.1 * float(k3_kl(logp, ref)), rel_tol=1e-6)


def test_bad_loss_settings_raise():
    with pytest.raises(ValueError, match="ratio_level"):
        PolicyLossConfig(ratio_level="segment")
    with pytest.raises(ValueError, match="normalisation"):
        PolicyLossConfig(normalisation="mean")
    with pytest.raises(ValueError, match="token-level ratios"):  # would be silently ignored
        PolicyLossConfig(ratio_level="sequence", normalisation="constant")


# ------------------------------------------------------------------ SFT loss weighting
def test_sft_loss_weights_masked_tokens_by_inverse_rate():
    from igpo.models import DLLMOutput, TokenSpec
    from igpo.training.sft import MIN_MASK_RATE, SFTBatch, sft_loss

    vocab = 10

    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            logits = torch.zeros(*input_ids.shape, vocab)
            logits[..., 3] = 2.0
            return DLLMOutput(logits=logits)

    spec = TokenSpec(mask_id=9, eos_id=1, eot_id=None, pad_id=0)
    ids = torch.tensor([[5, 6, 3, 4, 1, 1], [5, 6, 4, 4, 4, 1]])
    batch = SFTBatch(
        ids=ids, prompt_len=2, attention_mask=torch.ones(2, 2, dtype=torch.long), completion_len=torch.tensor([3, 4])
    )
    loss = sft_loss(Fixed(), batch, spec.mask_id, torch.Generator().manual_seed(0))
    # Redraw the same randomness to know t and the mask, then compute the loss by hand.
    g = torch.Generator().manual_seed(0)
    t = MIN_MASK_RATE + (1 - MIN_MASK_RATE) * torch.rand(2, generator=g)
    masked = torch.rand(2, 4, generator=g) < t[:, None]
    logz = math.log(math.exp(2.0) + vocab - 1)
    total = 0.0
    for b in range(2):
        ce = [(logz - 2.0) if tok == 3 else logz for tok in ids[b, 2:].tolist()]
        total += sum(c for c, m in zip(ce, masked[b].tolist(), strict=True) if m) / float(t[b]) / 4
    assert math.isclose(float(loss), total / 2, rel_tol=1e-5)


# ------------------------------------------------------------------ GRPO vs IGPO on an all-wrong group
def _trainer(tmp_path, resample: str, beta: float = 0.0):
    from accelerate import Accelerator

    from igpo.data import DataConfig, Example
    from igpo.decoding import DecodeConfig
    from igpo.hints import HintConfig
    from igpo.training.model import build_model, make_optimizer, make_scheduler
    from igpo.training.rl import Trainer
    from igpo.training.rl_config import IGPOSettings, RLConfig
    from igpo.training.settings import LoraSettings, ModelSettings, OptimSettings

    folder = save_tiny_checkpoint(tmp_path / "m", seed=1)
    cfg = RLConfig(
        model=ModelSettings(path=str(folder), lora=LoraSettings(enabled=True, r=4, alpha=8, dropout=0.0)),
        data=DataConfig(source="jsonl"),
        decode=DecodeConfig(gen_length=16, block_length=16, steps=8, temperature=1.0),
        hints=HintConfig(eta_low=1.0, eta_high=1.0, min_chunk=1, max_chunk=1, tail_free=2, hide_answer=False),
        igpo=IGPOSettings(resample=resample, replace_ratio=0.5, entropy_top_fraction=0.2),
        optim=OptimSettings(lr=1e-3, warmup_steps=0),
        num_generations=4,
        mu=1,
        instruction="",
    )
    cfg.loss.beta = beta
    model, tok = build_model(cfg.model, device="cpu")
    opt = make_optimizer(model, cfg.optim)
    trainer = Trainer(cfg, model, tok, Accelerator(cpu=True), opt, make_scheduler(opt, cfg.optim, 4))
    trainer.spec = model.token_spec
    example = Example(prompt="what is 3 and 4", answer="59", trace=TRACE.replace("7", "59"), id="x", meta={})
    return trainer, example


def _grads_after_loss(trainer, group):
    from igpo.training.loss import policy_loss

    trainer.model.zero_grad(set_to_none=True)
    first = trainer.logprobs(trainer.model, group, None, with_entropy=True)
    old, entropy = first.logp, first.entropy
    mask, _ = trainer.loss_mask(group, entropy)
    logp = trainer.logprobs(trainer.model, group, None).logp
    policy_loss(logp, old.detach(), group.advantages, mask, trainer.cfg.loss).loss.backward()
    return [p.grad for p in trainer.model.parameters() if p.requires_grad]


def test_all_wrong_group_grpo_gives_no_gradient_igpo_does(tmp_path):
    from igpo.training.rollouts import StepTimer
    from igpo.training.step_metrics import group_metrics

    grpo, example = _trainer(tmp_path / "a", "none")
    group = grpo.rollout_group(example, torch.Generator().manual_seed(0), StepTimer())
    assert group.all_wrong and group.replaced == 0
    assert group.advantages.abs().sum() == 0
    grads = _grads_after_loss(grpo, group)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)  # exactly zero, KL off

    igpo, example = _trainer(tmp_path / "b", "hints")
    group = igpo.rollout_group(example, torch.Generator().manual_seed(0), StepTimer())
    assert group.all_wrong and group.replaced == 2  # floor(0.5 * 4) correct hinted rollouts swapped in
    assert group.hint_mask.any(dim=1).sum() == 2
    assert (group.advantages != 0).all()
    grads = _grads_after_loss(igpo, group)
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads)
    metrics = group_metrics([group], 4)
    assert metrics["replaced"] == 2 and metrics["all_wrong_ratio"] == 1.0 and metrics["rescued_ratio"] == 1.0


def test_batched_rollouts_equal_per_group_rollouts(tmp_path):
    """One decoder call for a step's groups (prompts of different lengths, left-padded) gives
    the same GRPO groups as one call per group: the row seeds are drawn in the same order."""
    from dataclasses import replace

    from igpo.training.rollouts import StepTimer

    trainer, example = _trainer(tmp_path, "none")
    examples = [example, replace(example, prompt="what is 3 and 4 and then 5 more", id="y"), example]
    per_group = trainer.rollout_step(examples, torch.Generator().manual_seed(0), StepTimer())
    trainer.cfg.batch_rollouts = True
    batched = trainer.rollout_step(examples, torch.Generator().manual_seed(0), StepTimer())
    assert [g.prompt_ids.shape[1] for g in batched] == [g.prompt_ids.shape[1] for g in per_group]
    assert len({g.prompt_ids.shape[1] for g in batched}) == 2
    for a, b in zip(per_group, batched, strict=True):
        assert torch.equal(a.completions, b.completions) and torch.equal(a.commit_step, b.commit_step)
        assert torch.equal(a.rewards, b.rewards)


def test_batched_rescue_rescues_every_all_wrong_group(tmp_path):
    """With batch_rollouts, the hinted re-samples of all all-wrong groups share one decoder call;
    each group still gets floor(lambda G) hinted rollouts, and the same seed gives the same groups."""
    from igpo.training.rollouts import StepTimer

    trainer, example = _trainer(tmp_path, "hints")
    trainer.cfg.batch_rollouts = True
    runs = [trainer.rollout_step([example] * 3, torch.Generator().manual_seed(0), StepTimer()) for _ in range(2)]
    for group in runs[0]:
        assert group.all_wrong and group.replaced == 2 and group.hint_mask.any(dim=1).sum() == 2
    assert all(torch.equal(a.completions, b.completions) for a, b in zip(*runs, strict=True))


def test_one_generator_per_prompt_batched_equals_per_group_with_rescue(tmp_path):
    """Each prompt drawing from its own generator (as training does: keyed by its place in the
    step) makes batched rollouts and their hinted rescue equal one group at a time."""
    from igpo.training.rollouts import StepTimer

    trainer, example = _trainer(tmp_path, "hints")

    def gens():
        return [torch.Generator().manual_seed(seed) for seed in (0, 1, 2)]

    per_group = trainer.rollout_step([example] * 3, gens(), StepTimer())
    trainer.cfg.batch_rollouts = True
    batched = trainer.rollout_step([example] * 3, gens(), StepTimer())
    for a, b in zip(per_group, batched, strict=True):
        assert a.replaced == b.replaced == 2 and a.etas == b.etas
        assert torch.equal(a.completions, b.completions) and torch.equal(a.hint_mask, b.hint_mask)
    assert not torch.equal(per_group[0].completions, per_group[1].completions)  # own streams


def test_sample_matched_baseline_resamples_without_hints(tmp_path):
    from igpo.training.rollouts import StepTimer

    trainer, example = _trainer(tmp_path, "plain")
    group = trainer.rollout_group(example, torch.Generator().manual_seed(0), StepTimer())
    assert group.all_wrong and not group.hint_mask.any()  # no hints; a random model stays wrong
    assert group.replaced == 0


def test_hint_tokens_in_loss_are_entropy_filtered(tmp_path):
    from igpo.training.rollouts import StepTimer

    trainer, example = _trainer(tmp_path, "hints")
    group = trainer.rollout_group(example, torch.Generator().manual_seed(0), StepTimer())
    entropy = trainer.logprobs(trainer.model, group, None, with_entropy=True).entropy
    mask, kept = trainer.loss_mask(group, entropy)
    hinted = group.hint_mask & completion_mask(group.completions, trainer.spec.eos_id)
    assert kept == sum(max(1, round(0.2 * int(row.sum()))) for row in hinted if row.any())
    self_generated = completion_mask(group.completions, trainer.spec.eos_id) & ~group.hint_mask
    assert mask[self_generated].all()  # every self-generated token stays


# ------------------------------------------------------------------ CLI: recipes, resume, bad input
def _write_data(folder: Path, with_trace: bool = True) -> Path:
    rows = []
    for i in range(6):
        row = {"prompt": f"what is {i} and 4", "answer": str(i + 4)}
        if with_trace:
            row["trace"] = TRACE.replace("3", str(i)).replace("7", str(i + 4))
        rows.append(row)
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _recipe(tmp_path: Path, data: Path, model: Path) -> Path:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
model: {{path: {model}, lora: {{enabled: true, r: 4, alpha: 8, dropout: 0.0}}}}
data: {{source: jsonl, path: {data}}}
decode: {{gen_length: 16, block_length: 8, steps: 4, temperature: 1.0}}
hints: {{min_chunk: 1, max_chunk: 2, tail_free: 2}}
optim: {{lr: 1.0e-3, warmup_steps: 1}}
instruction: ""
num_generations: 4
prompts_per_step: 1
mu: 2
max_steps: 4
checkpoint: {{every: 2}}
log: {{progress: false}}
""")
    return recipe


def _adapter(ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ckpt / "adapter_model.safetensors"))


def test_resume_two_plus_two_equals_four(tmp_path):
    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    full = runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(tmp_path / "full")])
    assert full.exit_code == 0, full.output
    half = runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(tmp_path / "half"), "max_steps=2"])
    assert half.exit_code == 0, half.output
    refused = runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(tmp_path / "half")])
    assert refused.exit_code == 2 and "--resume" in refused.output
    rest = runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(tmp_path / "half"), "--resume"])
    assert rest.exit_code == 0, rest.output
    a = _adapter(tmp_path / "full" / "checkpoints" / "step-000004")
    b = _adapter(tmp_path / "half" / "checkpoints" / "step-000004")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first = _adapter(tmp_path / "full" / "checkpoints" / "step-000002")
    assert any(not torch.equal(a[k], first[k]) for k in a)  # training did change the weights
    lines = [json.loads(x) for x in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    for key in (
        "reward",
        "accuracy",
        "all_wrong_ratio",
        "rescued_ratio",
        "replaced",
        "hint_token_fraction",
        "kl",
        "clip_ratio",
        "entropy",
        "tokens_per_s",
        "time_generation",
        "time_logprob",
        "time_backward",
    ):
        assert key in lines[0], key


def test_sft_cli_trains_and_resumes(tmp_path):
    model = save_tiny_checkpoint(tmp_path / "m")
    data = tmp_path / "sft.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": f"what is {i}",
                    "completion": f"<reasoning> {i} </reasoning> <answer> \\boxed{{{i}}} </answer>",
                }
            )
            + "\n"
            for i in range(8)
        )
    )
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        f"model: {{path: {model}, lora: {{enabled: false}}}}\n"
        f"data: {{source: jsonl, path: {data}, max_completion_tokens: 16}}\n"
        "optim: {lr: 1.0e-3, warmup_steps: 1}\nbatch_size: 4\nmax_steps: 4\n"
        "checkpoint: {every: 2}\nlog: {progress: false}\n"
    )
    full = runner.invoke(app, ["sft", "--recipe", str(recipe), "--out", str(tmp_path / "full")])
    assert full.exit_code == 0, full.output
    assert (
        runner.invoke(app, ["sft", "--recipe", str(recipe), "--out", str(tmp_path / "half"), "max_steps=2"]).exit_code
        == 0
    )
    assert (
        runner.invoke(app, ["sft", "--recipe", str(recipe), "--out", str(tmp_path / "half"), "--resume"]).exit_code == 0
    )
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full" / "checkpoints" / "step-000004" / "model.safetensors"))
    b = load_file(str(tmp_path / "half" / "checkpoints" / "step-000004" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sft_canvas_lengths_pad_each_step_to_a_drawn_length(tmp_path):
    from igpo.training.sft import SFTDataSettings, canvas_length

    fixed = SFTDataSettings(max_completion_tokens=16)
    assert {canvas_length(fixed, 0, step, 0) for step in range(20)} == {16}
    mixed = SFTDataSettings(max_completion_tokens=16, canvas_lengths=[16, 24])
    draws = [canvas_length(mixed, 0, step, 0) for step in range(40)]
    assert set(draws) == {16, 24}  # both lengths occur, nothing else
    assert draws == [canvas_length(mixed, 0, step, 0) for step in range(40)]  # seeded per step
    assert draws != [canvas_length(mixed, 1, step, 0) for step in range(40)]

    model = save_tiny_checkpoint(tmp_path / "m")
    data = tmp_path / "sft.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"what is {i}", "completion": f"<answer> {i} </answer>"}) + "\n" for i in range(8)
        )
    )
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        f"model: {{path: {model}, lora: {{enabled: false}}}}\n"
        f"data: {{source: jsonl, path: {data}, max_completion_tokens: 16, canvas_lengths: [16, 24]}}\n"
        "optim: {lr: 1.0e-3, warmup_steps: 1}\nbatch_size: 4\nmax_steps: 3\nlog: {progress: false}\n"
    )
    ok = runner.invoke(app, ["sft", "--recipe", str(recipe), "--out", str(tmp_path / "ok")])
    assert ok.exit_code == 0, ok.output
    out = tmp_path / "short"
    _one_line_failure(
        runner.invoke(app, ["sft", "--recipe", str(recipe), "--out", str(out), "data.canvas_lengths=[8, 24]"]),
        "canvas_lengths",
        out,
    )


def _one_line_failure(result, needle, out: Path):
    assert result.exit_code != 0
    text = result.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert needle in text
    assert not (out / "checkpoints").exists()


def test_bad_training_input_fails_in_one_line(tmp_path):
    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    out = tmp_path / "out"
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text() + "learning_rate: 3\n")
    _one_line_failure(runner.invoke(app, ["train", "--recipe", str(bad), "--out", str(out)]), "learning_rate", out)
    _one_line_failure(
        runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(out), "optim.lrr=1"]), "optim.lrr", out
    )
    notrace = tmp_path / "nt"
    notrace.mkdir()
    recipe2 = _recipe(notrace, _write_data(notrace, with_trace=False), model)
    _one_line_failure(runner.invoke(app, ["train", "--recipe", str(recipe2), "--out", str(out)]), "trace", out)
    _one_line_failure(
        runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(out), f"model.path={tmp_path / 'missing'}"]),
        "not found",
        out,
    )
    _one_line_failure(
        runner.invoke(app, ["train", "--recipe", str(tmp_path / "nope.yaml"), "--out", str(out)]),
        "recipe not found",
        out,
    )


def test_shipped_recipes_parse():
    from igpo.config import resolve_recipe
    from igpo.training.rl_config import RLConfig
    from igpo.training.sft import SFTConfig

    llada = load_config(RLConfig, resolve_recipe("igpo_llada"))
    assert (llada.optim.lr, llada.mu, llada.loss.beta, llada.loss.ratio_level) == (5e-7, 4, 0.01, "sequence_released")
    assert (llada.decode.gen_length, llada.decode.block_length, llada.decode.steps, llada.decode.temperature) == (
        256,
        32,
        128,
        1.2,
    )
    assert (llada.model.lora.r, llada.model.lora.alpha, llada.igpo.replace_ratio, llada.igpo.entropy_top_fraction) == (
        128,
        64,
        0.5,
        0.2,
    )
    assert (llada.hints.eta_low, llada.hints.eta_high, llada.hints.min_chunk, llada.hints.max_chunk) == (
        0.2,
        0.6,
        5,
        10,
    )
    assert load_config(RLConfig, resolve_recipe("grpo_llada")).igpo.resample == "none"
    for name in ("igpo_tiny", "grpo_tiny"):  # RL starts from the testbed's RL base, on its signed traces
        tiny = load_config(RLConfig, resolve_recipe(name))
        assert (tiny.model.path, tiny.data.arith["answer_sign"]) == ("testbed-sign", True)
    sign = load_config(SFTConfig, resolve_recipe("sft_tiny_sign"))
    assert (sign.model.path, sign.data.arith["answer_habit"], sign.model.lora.enabled) == ("testbed", "minus", False)
    for name in ("sft_llada", "sft_tiny"):
        load_config(SFTConfig, resolve_recipe(name))
    long = load_config(SFTConfig, resolve_recipe("sft_tiny_long"))
    assert (long.model.path, long.data.max_completion_tokens, long.model.lora.enabled) == ("testbed", 256, False)
    with pytest.raises(ConfigError, match="bogus"):
        load_config(RLConfig, None, ["bogus=1"])


def test_number_overrides_in_every_spelling():
    """YAML 1.1 reads `5e-5` (no dot) as a string; a float field still takes it."""
    from igpo.training.rl_config import RLConfig

    for text, value in (("5e-5", 5e-5), ("1.5e-5", 1.5e-5), ("2E-4", 2e-4), ("0.001", 1e-3), ("3", 3.0)):
        assert load_config(RLConfig, None, [f"optim.lr={text}"]).optim.lr == value
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(RLConfig, None, ["optim.lr=fast"])


def test_elbo_estimator_option_trains(tmp_path):
    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    result = runner.invoke(
        app,
        [
            "train",
            "--recipe",
            str(recipe),
            "--out",
            str(tmp_path / "o"),
            "max_steps=1",
            "logprob_estimator=elbo",
            "loss.ratio_level=sequence",
            "elbo_samples=2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o" / "metrics.jsonl").read_text().splitlines()[0])["loss_tokens"] > 0


def test_sequence_elbo_equals_exact_value_for_position_free_model():
    """A model whose prediction ignores context: every masked token's term is (n / l) log p, and
    its expectation over masking is log p, so the row sum converges to the exact log-likelihood."""
    from igpo.logprobs import sequence_elbo
    from igpo.models import DLLMOutput

    vocab = 6

    class Constant(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            logits = torch.tensor([0.0, 1.0, 2.0, 0.5, -1.0, 0.0]).expand(*input_ids.shape, vocab)
            return DLLMOutput(logits=logits)

    target = torch.tensor([[1, 2, 2, 3]])
    est = sequence_elbo(
        Constant(),
        torch.tensor([[0, 0]]),
        target,
        torch.ones_like(target, dtype=torch.bool),
        mask_id=5,
        mc_num=4000,
        generator=torch.Generator().manual_seed(0),
    ).logp.sum()
    exact = torch.log_softmax(torch.tensor([0.0, 1.0, 2.0, 0.5, -1.0, 0.0]), -1)[target].sum()
    assert abs(float(est) - float(exact)) < 0.05 * abs(float(exact))


def test_eval_checkpoint_series_marks_best_and_skips_done(tmp_path, shared_data):
    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    assert runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(tmp_path / "run")]).exit_code == 0
    args = [
        "eval",
        "--run",
        str(tmp_path / "run"),
        "--tasks",
        "gsm8k",
        "--data-dir",
        str(shared_data),
        "--limit",
        "3",
        "--gen-length",
        "16",
        "--block-length",
        "16",
        "--steps",
        "4",
        "--seeds",
        "0",
        "--out",
        str(tmp_path / "ev"),
        "--no-leaderboard",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    series = tmp_path / "ev" / "series-run"
    assert sorted(p.name for p in series.glob("step-*")) == ["step-000000", "step-000002", "step-000004"]
    assert (series / "series.md").is_file() and (series / "series.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best checkpoint: step" in first.output
    assert (series / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the run's training curves
    assert f"training curves: {series / 'training.png'}" in first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and again.output.count("already evaluated") == 3


def test_rl_rollouts_decode_with_the_recipe_cache_settings(tmp_path):
    """decode.cache reaches the rollouts through the LoRA policy: window passes run, and with
    cache_refresh=1 (a full pass every time) the rollouts equal exact decoding's."""
    trainer, example = _trainer(tmp_path, "none")
    prompt = trainer.encode_prompt(example.prompt)
    widths = []
    embed = next(m for name, m in trainer.model.named_modules() if name.split(".")[-1] == "embed")
    hook = embed.register_forward_hook(lambda m, i, o: widths.append(o.shape[1]))
    exact = trainer.sample([prompt], torch.Generator().manual_seed(3))[0].completions
    full = prompt.shape[-1] + trainer.cfg.decode.gen_length
    assert set(widths) == {full}
    for refresh, window_passes in ((1, False), (None, True)):
        widths.clear()
        trainer.cfg.decode = trainer.cfg.decode.replace(cache="dual", cache_refresh=refresh)
        out = trainer.sample([prompt], torch.Generator().manual_seed(3))[0].completions
        assert (min(widths) < full) == window_passes
        assert (out != trainer.spec.mask_id).all()
        if refresh == 1:
            assert torch.equal(out, exact)
    hook.remove()


@pytest.mark.parametrize("mu", [1, 2])
def test_trajectory_estimator_reruns_and_resumes_bit_for_bit(tmp_path, mu):
    """The trajectory estimator through the CLI (on-policy mu=1 and clipped mu=2): a rerun from the
    same seed and a 2+2 resume give the same weights as one 4-step run, bit for bit."""
    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    args = ["logprob_estimator=trajectory", "trajectory_group_steps=2", f"mu={mu}"]
    for name in ("a", "b"):
        result = runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(tmp_path / name), *args])
        assert result.exit_code == 0, result.output
    half = runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(tmp_path / "c"), *args, "max_steps=2"])
    assert half.exit_code == 0, half.output
    rest = runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(tmp_path / "c"), *args, "--resume"])
    assert rest.exit_code == 0, rest.output
    a, b, c = (_adapter(tmp_path / n / "checkpoints" / "step-000004") for n in "abc")
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    start = _adapter(tmp_path / "a" / "checkpoints" / "step-000002")
    assert any(not torch.equal(a[k], start[k]) for k in a)
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_tokens"] > 0 and math.isfinite(r["entropy"]) for r in rows)


def test_sequence_level_estimator_needs_sequence_ratio(tmp_path):
    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    result = runner.invoke(
        app,
        [
            "train",
            "--recipe",
            str(recipe),
            "--out",
            str(tmp_path / "o"),
            "logprob_estimator=elbo",
            "loss.ratio_level=token",
        ],
    )
    assert result.exit_code == 2 and "sequence-level" in result.output


def test_seed_streams_are_bounded_and_never_collide():
    from igpo.training.seeds import STREAMS, step_generator, step_seed

    seeds = {step_seed(3, step, rank, stream) for step in range(500) for rank in range(8) for stream in range(STREAMS)}
    assert len(seeds) == 500 * 8 * STREAMS
    with pytest.raises(ValueError, match="seed stream"):
        step_seed(3, 0, 0, STREAMS)
    # groups of one step draw distinct estimator seeds from one stream, however many groups
    base = torch.randint(0, 2**62, (16,), generator=step_generator(3, 5, 0, 3))
    assert len(set(base.tolist())) == 16


def test_resume_refuses_changed_settings_and_allows_more_steps(tmp_path):
    """A resumed run keeps its own settings: an override that would only be recorded (the old lr
    lives on in the optimiser state) is refused by name; more steps are applied and recorded."""
    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    out = tmp_path / "o"
    assert runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(out), "max_steps=2"]).exit_code == 0
    refused = runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(out), "--resume", "optim.lr=0.5"])
    assert refused.exit_code == 2 and "optim.lr" in refused.output and "Traceback" not in refused.output
    assert not (out / "checkpoints" / "step-000004").exists()
    more = runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(out), "--resume", "max_steps=4"])
    assert more.exit_code == 0, more.output
    assert "max_steps: 4" in (out / "checkpoints" / "step-000004" / "config.yaml").read_text()


def test_resume_survives_crash_leftovers(tmp_path):
    """A half-written step-N.tmp holding its marker and a torn last metrics line (a crash
    mid-write) do not block --resume: the complete checkpoint is used, the torn line dropped."""
    import shutil

    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    out = tmp_path / "o"
    assert runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(out), "max_steps=2"]).exit_code == 0
    shutil.copytree(out / "checkpoints" / "step-000002", out / "checkpoints" / "step-000003.tmp")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "rew')
    rest = runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(out), "--resume"])
    assert rest.exit_code == 0, rest.output
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("damage", ["random", "truncated", "empty"])
def test_damaged_weights_and_optimizer_fail_in_one_line(tmp_path, damage):
    import os as _os

    def spoil(file):
        data = file.read_bytes()
        file.write_bytes({"random": _os.urandom(len(data)), "truncated": data[: len(data) // 2], "empty": b""}[damage])

    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    out = tmp_path / "o"
    assert runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(out), "max_steps=2"]).exit_code == 0
    spoil(out / "checkpoints" / "step-000002" / "optimizer.pt")
    resumed = runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(out), "--resume"])
    assert resumed.exit_code == 2 and "Traceback" not in resumed.output, resumed.output
    assert "optimizer" in resumed.output or "step-000002" in resumed.output
    spoil(model / "model.safetensors")
    evaluated = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(model),
            "--tasks",
            "arith",
            "--limit",
            "2",
            "--out",
            str(tmp_path / "ev"),
            "--no-leaderboard",
        ],
    )
    assert evaluated.exit_code == 2 and "Traceback" not in evaluated.output, evaluated.output
    assert "model.safetensors" in evaluated.output
    assert not list((tmp_path / "ev").rglob("results.json"))


def test_resume_falls_back_to_the_previous_complete_checkpoint(tmp_path):
    """The newest checkpoint damaged (its optimizer state cut in half): --resume says so, restarts
    from the one before, and the run ends with every step logged once and step 4 rewritten."""
    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    out = tmp_path / "o"
    assert runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(out), "max_steps=4"]).exit_code == 0
    spoiled = out / "checkpoints" / "step-000004" / "optimizer.pt"
    spoiled.write_bytes(spoiled.read_bytes()[:100])
    rest = runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(out), "--resume"])
    assert rest.exit_code == 0, rest.output
    assert "step-000004" in rest.output and "resuming from" in rest.output and "step-000002" in rest.output
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert len(spoiled.read_bytes()) > 100


STATE_DAMAGE = {
    "state truncated": ("trainer_state.json", lambda f: f.write_text(f.read_text()[:7])),
    "state empty": ("trainer_state.json", lambda f: f.write_bytes(b"")),
    "state missing": ("trainer_state.json", lambda f: f.unlink()),
    "state not UTF-8": ("trainer_state.json", lambda f: f.write_bytes(b"\xff\xfe{")),
    "state wrong step": ("trainer_state.json", lambda f: f.write_text('{"step": "two"}')),
    "config truncated": ("config.yaml", lambda f: f.write_text("model: {path: [")),
    "config a list": ("config.yaml", lambda f: f.write_text("- 1\n- 2\n")),
    "config missing": ("config.yaml", lambda f: f.unlink()),
}


@pytest.mark.parametrize("damage", list(STATE_DAMAGE))
def test_resume_falls_back_past_a_damaged_state_or_config(tmp_path, damage):
    """The newest checkpoint's trainer_state.json or config.yaml damaged: --resume says so on
    stderr, resumes from the one before (step 1), redoes step 2 and ends with the weights of an
    uninterrupted run, bit for bit; the damaged checkpoint is rewritten whole."""
    name, spoil = STATE_DAMAGE[damage]
    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    args = ["--recipe", str(recipe), "max_steps=2", "checkpoint.every=1"]
    full, out = tmp_path / "full", tmp_path / "o"
    assert runner.invoke(app, ["train", *args, "--out", str(full)]).exit_code == 0
    assert runner.invoke(app, ["train", *args, "--out", str(out)]).exit_code == 0
    newest = out / "checkpoints" / "step-000002"
    spoil(newest / name)
    rest = runner.invoke(app, ["train", *args, "--out", str(out), "--resume"])
    assert rest.exit_code == 0, rest.output
    assert "Traceback" not in rest.output
    warning = next(line for line in rest.stderr.splitlines() if line.startswith("warning:"))
    assert str(newest) in warning and name in warning, rest.stderr
    assert "resuming from" in rest.stderr and "step-000001 (step 1)" in rest.stderr
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    a, b = _adapter(full / "checkpoints" / "step-000002"), _adapter(newest)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first = _adapter(out / "checkpoints" / "step-000001")
    assert any(not torch.equal(a[k], first[k]) for k in a)  # step 2 was trained again, not skipped
    assert json.loads((newest / "trainer_state.json").read_text())["step"] == 2
    assert "max_steps: 2" in (newest / "config.yaml").read_text()


def test_resume_with_no_readable_checkpoint_is_one_error(tmp_path):
    """Every checkpoint's trainer_state.json damaged: one error naming the newest, before any
    model loads, and nothing changed."""
    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    args = ["--recipe", str(recipe), "max_steps=2", "checkpoint.every=1"]
    out = tmp_path / "o"
    assert runner.invoke(app, ["train", *args, "--out", str(out)]).exit_code == 0
    for step in (1, 2):
        (out / "checkpoints" / f"step-00000{step}" / "trainer_state.json").write_text("{")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    rest = runner.invoke(app, ["train", *args, "--out", str(out), "--resume"])
    assert rest.exit_code == 2 and "Traceback" not in rest.output, rest.output
    lines = [line for line in rest.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "step-000002" in lines[0], rest.stderr
    assert "trainer_state.json" in lines[0]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_large_seed_trains_and_small_seeds_keep_their_streams(tmp_path):
    """A seed of 12,345,678 (its step seeds pass 2**64: torch.manual_seed overflowed) trains, and
    seeds below that draw exactly what they drew before torch_seed reduced step seeds."""
    from igpo.training.seeds import MAX_SEED, step_seed, torch_seed

    assert torch_seed(3, 5, 0, 1) == step_seed(3, 5, 0, 1)
    assert step_seed(12_345_678, 1, 0, 1) > 2**64 and 0 <= torch_seed(12_345_678, 1, 0, 1) < MAX_SEED
    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    result = runner.invoke(
        app, ["train", "--recipe", str(recipe), "--out", str(tmp_path / "o"), "max_steps=1", "seed=12345678"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o" / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1


def test_resume_accepts_a_checkpoint_written_before_a_field_existed(tmp_path):
    import yaml

    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    out = tmp_path / "o"
    assert runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(out), "max_steps=2"]).exit_code == 0
    saved = out / "checkpoints" / "step-000002" / "config.yaml"
    data = yaml.safe_load(saved.read_text())
    del data["trajectory_group_steps"], data["rewards"]  # as an older version wrote it
    saved.write_text(yaml.safe_dump(data))
    rest = runner.invoke(app, ["train", "--recipe", str(recipe), "--out", str(out), "--resume"])
    assert rest.exit_code == 0, rest.output


# ------------------------------------------------------------------ review holes (issue 28)
def test_token_normalisation_is_the_token_mean_of_the_whole_step(tmp_path):
    """loss.normalisation=token: the step's gradient is that of one token mean over all its prompt
    groups, not the mean of each group's token mean."""
    from igpo.training.loss import PolicyLossConfig, policy_loss, token_weights
    from igpo.training.rollouts import StepTimer

    assert token_weights([4, 1]) == [0.8, 0.2] and token_weights([4, 1], 10, 2) == [0.8, 0.2]
    trainer, example = _trainer(tmp_path, "hints")
    trainer.cfg.loss = PolicyLossConfig(ratio_level="token", normalisation="token", beta=0.0)
    trainer.optimizer = None  # keep the gradients of the update
    groups = [
        trainer.rollout_group(example, torch.Generator().manual_seed(s), StepTimer()) for s in (0, 7)
    ]  # 46 and 43 loss tokens
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    trainer.model.zero_grad(set_to_none=True)
    trainer.update(groups, 0, StepTimer())
    got = [p.grad.clone() for p in params]

    def grads(pooled: bool) -> list[torch.Tensor]:
        trainer.model.zero_grad(set_to_none=True)
        parts, counts = [], []
        for group in groups:
            est = trainer.logprobs(trainer.model, group, None, with_entropy=True)
            mask, _ = trainer.loss_mask(group, est.entropy)
            parts.append((est.logp, est.logp.detach(), group.advantages, mask))
            counts.append(int(mask.sum()))
        if pooled:
            logp, old, adv, mask = (torch.cat(x) for x in zip(*parts, strict=True))
            policy_loss(logp, old, adv, mask, trainer.cfg.loss).loss.backward()
        else:
            sum(policy_loss(*p, trainer.cfg.loss).loss for p in parts).div(len(parts)).backward()
        assert counts[0] != counts[1], counts  # unequal groups: the two means differ
        return [p.grad.clone() for p in params]

    pooled, per_group = grads(True), grads(False)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, pooled, strict=True))
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, per_group, strict=True))


def test_cross_field_rl_checks_run_when_the_recipe_is_loaded():
    from igpo.training.rl_config import RLConfig

    for overrides, needle in (
        (["logprob_estimator=elbo"], "sequence-level"),
        (["logprob_estimator=trajectory", "trajectory_group_steps=3"], "must divide"),
        (["p_mask_prompt=0.15", "logprob_estimator=trajectory"], "p_mask_prompt"),
        (["num_generations=1"], "num_generations"),
        (["logprob_estimator=bogus"], "logprob_estimator"),
    ):
        with pytest.raises(ConfigError, match=needle):
            load_config(RLConfig, "igpo/recipes/grpo_tiny.yaml", overrides)


def test_max_trace_tokens_filters_rl_training_data(tmp_path):
    model = save_tiny_checkpoint(tmp_path / "m")
    recipe = _recipe(tmp_path, _write_data(tmp_path), model)
    args = ["train", "--recipe", str(recipe), "max_steps=1", "checkpoint.every=0"]
    kept = runner.invoke(app, [*args, "--out", str(tmp_path / "kept"), "data.max_trace_tokens=64"])
    assert kept.exit_code == 0, kept.output
    dropped = runner.invoke(app, [*args, "--out", str(tmp_path / "dropped"), "data.max_trace_tokens=3"])
    assert dropped.exit_code == 2 and "no training examples" in dropped.output, dropped.output


def test_hinted_rollouts_logged_apart_with_their_gradient_share(tmp_path):
    """The step's metrics tell hinted rollouts from the rest: count, reward, eta of each, their
    share of loss tokens and of the first update's gradient norm (log.hint_gradients)."""
    from igpo.training.rollouts import StepTimer
    from igpo.training.step_metrics import group_metrics

    trainer, example = _trainer(tmp_path, "hints")
    trainer.cfg.log.hint_gradients = True
    group = trainer.rollout_group(example, torch.Generator().manual_seed(0), StepTimer())
    assert group.hinted is not None and int(group.hinted.sum()) == group.replaced == 2
    assert group.etas == [1.0, 1.0]  # eta_low = eta_high = 1
    metrics = group_metrics([group], 4)
    assert metrics["hinted_rollouts"] == 2 and metrics["etas"] == [1.0, 1.0]
    assert metrics["hinted_reward"] > metrics["unhinted_reward"]  # hinted ones are the correct ones
    losses = trainer.update([group], 0, StepTimer())
    assert losses["grad_norm_hinted"] > 0 and losses["grad_norm_unhinted"] > 0
    assert 0 < losses["hinted_grad_share"] < 1 and 0 < losses["hinted_loss_token_share"] < 1


def test_hinted_gradient_splits_the_gradient_by_rows(tmp_path):
    """All rows hinted: the hinted part is the whole gradient; none: it is zero."""
    from igpo.training.rollouts import StepTimer

    trainer, example = _trainer(tmp_path, "hints")
    group = trainer.rollout_group(example, torch.Generator().manual_seed(0), StepTimer())
    mask = torch.ones_like(group.completions, dtype=torch.bool)
    for rows, whole in ((torch.ones(4, dtype=torch.bool), True), (torch.zeros(4, dtype=torch.bool), False)):
        trainer.model.zero_grad(set_to_none=True)
        logp = trainer.logprobs(trainer.model, group, None).logp
        loss = policy_loss(logp, logp.detach() - 0.1, group.advantages, mask, trainer.cfg.loss).loss
        part = trainer.hinted_gradient(loss, logp, rows)
        loss.backward()
        full = [p.grad if p.grad is not None else torch.zeros_like(p) for p in trainer.trainable()]
        for a, b in zip(part, full, strict=True):
            assert torch.allclose(a, b if whole else torch.zeros_like(b), atol=1e-7)
        assert any(torch.count_nonzero(b) for b in full)


def test_trajectory_scores_under_the_samplers_token_rules(tmp_path):
    """With decode.suppress_eos the sampler never proposes EOS, so the trajectory estimator scores
    each token under the softmax without EOS (the sampler's own distribution)."""
    from dataclasses import replace

    from igpo.logprobs import trajectory_logprobs
    from igpo.training.rollouts import StepTimer

    trainer, example = _trainer(tmp_path, "none")
    trainer.cfg.decode = replace(trainer.cfg.decode, suppress_eos=True)
    trainer.cfg.logprob_estimator = "trajectory"
    group = trainer.rollout_group(example, torch.Generator().manual_seed(0), StepTimer())
    eos = trainer.spec.eos_id
    assert eos is not None and not (group.completions == eos).any()
    ours = trainer.logprobs(trainer.model, group, None).logp
    kwargs = {"mask_id": trainer.spec.mask_id, "temperature": trainer.cfg.decode.temperature}
    with torch.no_grad():
        sampler_rules = trajectory_logprobs(
            trainer.model, group.prompt_ids, group.completions, group.commit_step, suppress_tokens=(eos,), **kwargs
        ).logp
        without = trajectory_logprobs(
            trainer.model, group.prompt_ids, group.completions, group.commit_step, **kwargs
        ).logp
    assert torch.allclose(ours, sampler_rules)
    assert not torch.allclose(ours, without)
