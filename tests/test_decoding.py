"""The decoder against a plain re-implementation of LLaDA's reference schedule, and its options."""

from __future__ import annotations

import pytest
import torch
from conftest import EOS_ID, MASK_ID, VOCAB, decode, tiny_model
from torch import nn

from igpo.decoding import DecodeConfig, generate
from igpo.decoding.schedule import sample_candidates, transfer_schedule
from igpo.errors import InvalidSetting
from igpo.models import DLLMOutput


def reference_generate(model, prompt, gen_length, block_length, steps, mask_id, hints=None, cfg_scale=0.0):
    """LLaDA's reference decoding at temperature 0, written as plainly as possible."""
    batch, plen = prompt.shape
    x = torch.full((batch, plen + gen_length), mask_id, dtype=torch.long)
    x[:, :plen] = prompt
    if hints is not None:
        for b in range(batch):
            for j in range(gen_length):
                if hints[b, j] != mask_id:
                    x[b, plen + j] = hints[b, j]
    num_blocks = gen_length // block_length
    per_block = steps // num_blocks
    for nb in range(num_blocks):
        lo, hi = plen + nb * block_length, plen + (nb + 1) * block_length
        counts = []
        for b in range(batch):
            n = int((x[b, lo:hi] == mask_id).sum())
            counts.append([n // per_block + (1 if s < n % per_block else 0) for s in range(per_block)])
        for s in range(per_block):
            with torch.no_grad():
                logits = model(x).logits
                if cfg_scale > 0:
                    un = x.clone()
                    un[:, :plen] = mask_id
                    unl = model(un).logits
                    logits = unl + (cfg_scale + 1) * (logits - unl)
            probs = torch.softmax(logits.float(), dim=-1)
            proposal = logits.clone()
            proposal[..., mask_id] = float("-inf")  # trained models never predict it; random ones may
            x0 = proposal.argmax(-1)
            for b in range(batch):
                conf = []
                for j in range(x.shape[1]):
                    if lo <= j < hi and x[b, j] == mask_id:
                        conf.append(float(probs[b, j, x0[b, j]]))
                    else:
                        conf.append(float("-inf"))
                k = counts[b][s]
                if k:
                    chosen = torch.topk(torch.tensor(conf), k).indices
                    for j in chosen.tolist():
                        x[b, j] = x0[b, j]
    return x


class ToyBidirectional(nn.Module):
    """Not a transformer: any module returning `.logits` must decode the same way."""

    def __init__(self, vocab: int = VOCAB, dim: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Parameter(torch.randn(vocab, dim, generator=g))
        self.pos = nn.Parameter(torch.randn(256, dim, generator=g) * 0.5)
        self.out = nn.Parameter(torch.randn(dim, vocab, generator=g))

    def forward(self, input_ids, attention_mask=None):
        h = self.emb[input_ids] + self.pos[: input_ids.shape[1]]
        ctx = h.mean(dim=1, keepdim=True)  # every position sees every other: bidirectional
        return DLLMOutput(logits=torch.tanh(h + ctx) @ self.out)


SETTINGS = [(16, 8, 8), (16, 16, 4), (24, 8, 12), (12, 4, 12), (16, 4, 16), (8, 8, 3)]


@pytest.mark.parametrize("gen_length,block_length,steps", SETTINGS)
@pytest.mark.parametrize("factory", [tiny_model, ToyBidirectional], ids=["transformer", "toy"])
def test_matches_reference_schedule(gen_length, block_length, steps, factory):
    if gen_length % block_length or steps % (gen_length // block_length):
        pytest.skip("setting not valid")
    model = factory(seed=gen_length + steps)
    prompt = torch.randint(4, VOCAB - 1, (3, 6), generator=torch.Generator().manual_seed(steps))
    ours = decode(model, prompt, gen_length=gen_length, block_length=block_length, steps=steps, mask_id=MASK_ID)
    ref = reference_generate(model, prompt, gen_length, block_length, steps, MASK_ID)
    assert torch.equal(ours.sequences, ref)
    assert (ours.sequences[:, 6:] != MASK_ID).all()


def test_matches_reference_with_hints_and_cfg():
    model = tiny_model(seed=3)
    g = torch.Generator().manual_seed(5)
    prompt = torch.randint(4, VOCAB - 1, (2, 5), generator=g)
    hints = torch.full((2, 16), MASK_ID)
    hints[0, 2:6] = torch.tensor([10, 11, 12, 13])
    hints[1, 9:16] = 20
    for cfg_scale in (0.0, 1.5):
        ours = decode(
            model, prompt, gen_length=16, block_length=8, steps=8, mask_id=MASK_ID, hints=hints, cfg_scale=cfg_scale
        )
        ref = reference_generate(model, prompt, 16, 8, 8, MASK_ID, hints=hints, cfg_scale=cfg_scale)
        assert torch.equal(ours.sequences, ref)


def test_hints_never_overwritten_at_temperature(gen):
    model = tiny_model(seed=1)
    prompt = torch.randint(4, VOCAB - 1, (4, 5), generator=gen)
    hints = torch.full((4, 32), MASK_ID)
    fixed = torch.rand(4, 32, generator=gen) < 0.4
    hints[fixed] = torch.randint(4, VOCAB - 1, (int(fixed.sum()),), generator=gen)
    out = decode(
        model,
        prompt,
        gen_length=32,
        block_length=8,
        steps=16,
        temperature=1.5,
        mask_id=MASK_ID,
        hints=hints,
        generator=gen,
        remasking="random",
    )
    comp = out.completions
    assert torch.equal(comp[fixed], hints[fixed])
    assert (comp != MASK_ID).all()


def test_hinted_positions_do_not_count_in_schedule():
    """A block fully given by hints needs no forward pass at all."""
    model = tiny_model()
    prompt = torch.randint(4, VOCAB - 1, (1, 4))
    hints = torch.full((1, 16), MASK_ID)
    hints[0, :8] = 7
    out = decode(model, prompt, gen_length=16, block_length=8, steps=8, mask_id=MASK_ID, hints=hints)
    assert out.nfe == 4  # only the second block's 4 steps
    # Half a block hinted: 4 masked tokens over 4 steps commit one per step.
    hints = torch.full((1, 8), MASK_ID)
    hints[0, ::2] = 9
    out = decode(model, prompt, gen_length=8, block_length=8, steps=4, mask_id=MASK_ID, hints=hints)
    assert out.nfe == 4 and (out.completions[0, ::2] == 9).all()


def test_padding_invariance():
    """Left-padded prompts in one batch decode, row by row, like each prompt alone."""
    model = tiny_model(seed=7)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, VOCAB - 1, (n,), generator=g) for n in (3, 7, 5)]
    width = max(len(p) for p in prompts)
    batch = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        batch[i, width - len(p) :] = p
        mask[i, width - len(p) :] = 1
    out = decode(model, batch, attention_mask=mask, gen_length=16, block_length=8, steps=8, mask_id=MASK_ID)
    for i, p in enumerate(prompts):
        alone = decode(model, p[None], gen_length=16, block_length=8, steps=8, mask_id=MASK_ID)
        assert torch.equal(out.completions[i], alone.completions[0])


class EndsEarly(nn.Module):
    """A model that writes token 5 for the first `n` completion positions and EOS afterwards."""

    def __init__(self, prompt_len: int, n: int):
        super().__init__()
        self.prompt_len, self.n = prompt_len, n
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        b, length = input_ids.shape
        logits = torch.zeros(b, length, VOCAB)
        pos = torch.arange(length)
        logits[:, pos < self.prompt_len + self.n, 5] = 5.0
        logits[:, pos >= self.prompt_len + self.n, EOS_ID] = 5.0
        return DLLMOutput(logits=logits + self.dummy)


def test_early_exit_keeps_tokens_and_saves_passes():
    model = EndsEarly(prompt_len=4, n=6)
    prompt = torch.randint(4, VOCAB - 1, (2, 4))
    kw = dict(gen_length=32, block_length=8, steps=16, mask_id=MASK_ID)
    full = decode(model, prompt, **kw)
    early = decode(model, prompt, eos_id=EOS_ID, **kw)
    assert torch.equal(full.sequences, early.sequences)
    assert full.nfe == 16 and early.nfe == 4  # block 1 already ends in EOS (first EOS at 6)


def test_early_exit_waits_for_every_row():
    model = tiny_model()
    prompt = torch.randint(4, VOCAB - 1, (2, 4))
    out = decode(model, prompt, gen_length=16, block_length=8, steps=8, mask_id=MASK_ID, eos_id=EOS_ID)
    plain = decode(model, prompt, gen_length=16, block_length=8, steps=8, mask_id=MASK_ID)
    assert torch.equal(out.sequences, plain.sequences)  # random model: no row ends early


def test_seeded_sampling_is_reproducible():
    model = tiny_model(seed=2)
    prompt = torch.randint(4, VOCAB - 1, (3, 5))
    kw = dict(gen_length=16, block_length=8, steps=8, temperature=1.0, mask_id=MASK_ID)
    a = decode(model, prompt, generator=torch.Generator().manual_seed(11), **kw)
    b = decode(model, prompt, generator=torch.Generator().manual_seed(11), **kw)
    c = decode(model, prompt, generator=torch.Generator().manual_seed(12), **kw)
    assert torch.equal(a.sequences, b.sequences)
    assert not torch.equal(a.sequences, c.sequences)


def test_gumbel_noise_is_finite_even_for_extreme_uniforms():
    logits = torch.randn(2, 5, 10)
    g = torch.Generator().manual_seed(0)
    tokens = sample_candidates(logits, 1.0, g)
    assert tokens.shape == (2, 5) and ((tokens >= 0) & (tokens < 10)).all()


def test_transfer_schedule_spreads_remainder_first():
    sched = transfer_schedule(torch.tensor([10, 3, 0]), 4)
    assert sched.tolist() == [[3, 3, 2, 2], [1, 1, 1, 0], [0, 0, 0, 0]]


def test_threshold_commits_confident_tokens_in_parallel():
    model = EndsEarly(prompt_len=4, n=32)  # every position: token 5 with high confidence
    prompt = torch.randint(4, VOCAB - 1, (2, 4))
    out = decode(model, prompt, gen_length=32, block_length=8, steps=32, mask_id=MASK_ID, threshold=0.5)
    assert out.nfe == 4  # one pass per block: every candidate is above the threshold
    assert (out.completions == 5).all()


def test_threshold_respects_step_cap():
    """A threshold nothing reaches still finishes every block within its steps."""
    model = tiny_model(seed=4)
    prompt = torch.randint(4, VOCAB - 1, (2, 4))
    out = decode(model, prompt, gen_length=16, block_length=8, steps=4, mask_id=MASK_ID, threshold=1.0)
    assert out.nfe <= 4 and (out.completions != MASK_ID).all()


def test_suppressed_tokens_never_appear():
    model = tiny_model(seed=5)
    prompt = torch.randint(4, VOCAB - 1, (4, 4))
    base = decode(model, prompt, gen_length=16, block_length=16, steps=8, mask_id=MASK_ID)
    banned = torch.unique(base.completions)[:3].tolist()
    out = decode(model, prompt, gen_length=16, block_length=16, steps=8, mask_id=MASK_ID, suppress_tokens=banned)
    assert not torch.isin(out.completions, torch.tensor(banned)).any()


def test_shifted_logits_read_from_previous_position():
    """Dream-style models: the logits for token j come from position j - 1."""

    class Shifted(nn.Module):
        def forward(self, input_ids, attention_mask=None):
            b, n = input_ids.shape
            logits = torch.zeros(b, n, VOCAB)
            logits[:, torch.arange(n), (torch.arange(n) + 1) % 40 + 4] = 9.0  # position i predicts i+1
            return DLLMOutput(logits=logits)

    prompt = torch.zeros(1, 4, dtype=torch.long)
    out = decode(Shifted(), prompt, gen_length=8, block_length=8, steps=8, mask_id=MASK_ID, shifted_logits=True)
    expected = [(j % 40) + 4 for j in range(4, 12)]
    assert out.completions[0].tolist() == expected
    # An empty prompt: position 0 has no predecessor and keeps its own logits (as Dream does).
    empty = decode(
        Shifted(),
        torch.zeros(1, 0, dtype=torch.long),
        gen_length=8,
        block_length=8,
        steps=8,
        mask_id=MASK_ID,
        shifted_logits=True,
    )
    assert empty.completions[0].tolist() == [5] + [j + 5 for j in range(7)]


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(gen_length=10, block_length=4, steps=4), "block_length"),
        (dict(gen_length=16, block_length=8, steps=3), "steps"),
        (dict(gen_length=0, block_length=8, steps=8), "gen_length"),
        (dict(remasking="entropy"), "remasking"),
        (dict(mask_id=VOCAB + 5), "mask_id"),
        (dict(hints=torch.full((1, 8), MASK_ID)), "hints"),
        (dict(threshold=1.5), "threshold"),
        (dict(temperature=-1.0), "temperature"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    model = tiny_model()
    base = dict(gen_length=16, block_length=8, steps=8, mask_id=MASK_ID)
    base.update(kwargs)
    with pytest.raises(ValueError, match=name):
        decode(model, torch.randint(4, 60, (2, 4)), **base)


def test_decode_config_round_trip():
    cfg = DecodeConfig(gen_length=64, block_length=16, steps=32, suppress_tokens=[2])
    for bad, name in (
        (dict(threshold=0.0), "threshold"),
        (dict(cache="triple"), "cache"),
        (dict(cache_refresh=2), "cache_refresh"),
        (dict(cache_refresh_tokens=2), "cache_refresh_tokens"),
        (dict(steps=30), "steps"),
    ):
        with pytest.raises(ValueError, match=name):  # rejected when the settings are made, before any model
            cfg.replace(**bad)
    assert cfg.replace(temperature=0.5).temperature == 0.5
    with pytest.raises(ValueError, match="bogus"):
        cfg.replace(bogus=1)
    model = tiny_model()
    out = generate(model, torch.randint(4, 60, (1, 4)), cfg.replace(early_exit=False))
    assert out.sequences.shape == (1, 68)


def test_per_row_generators_make_rows_batch_independent():
    """With one generator per row, a row samples the same tokens alone or in any batch."""
    model = tiny_model(seed=6)
    prompts = torch.randint(4, VOCAB - 1, (3, 5), generator=torch.Generator().manual_seed(2))
    kw = dict(gen_length=16, block_length=8, steps=8, temperature=1.0, mask_id=MASK_ID, remasking="random")
    gens = [torch.Generator().manual_seed(100 + i) for i in range(3)]
    batch = decode(model, prompts, generator=gens, **kw)
    for i in (2, 0):
        alone = decode(model, prompts[i : i + 1], generator=[torch.Generator().manual_seed(100 + i)], **kw)
        assert torch.equal(alone.sequences[0], batch.sequences[i])
    with pytest.raises(ValueError, match="generator"):
        decode(model, prompts, generator=gens[:2], **kw)


def test_cache_off_and_rules_off_match_exact_and_bad_values_raise():
    model = tiny_model(seed=8)
    prompt = torch.randint(4, VOCAB - 1, (2, 5))
    kw = dict(gen_length=16, block_length=8, steps=8, mask_id=MASK_ID)
    assert torch.equal(decode(model, prompt, cache=None, **kw).sequences, decode(model, prompt, **kw).sequences)
    for bad, name in (
        (dict(cache="triple"), "cache"),
        (dict(factor=0.0), "factor"),
        (dict(factor=-1.0), "factor"),
        (dict(threshold=0.0), "threshold"),
        (dict(threshold=0.5, factor=1.0), "factor"),
    ):
        with pytest.raises(ValueError, match=name):
            decode(model, prompt, **kw, **bad)
    with pytest.raises(ValueError, match="native"):
        decode(ToyBidirectional(), prompt, cache="dual", **kw)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_kv_cache_window_pass_equals_full_pass_on_unchanged_canvas(mode):
    """With nothing committed between passes, a cached window pass gives the full pass's logits."""
    from igpo.models.transformer import KVCache

    model = tiny_model(seed=9)
    x = torch.randint(4, VOCAB - 1, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[0, :3] = 0
    cache = KVCache()
    full = model(x, attention_mask=mask, cache=cache).logits
    lo, hi = 8, (20 if mode == "prefix" else 12)
    part = model(x[:, lo:hi], attention_mask=mask, cache=cache, window=(lo, hi)).logits
    assert (part - full[:, lo:hi]).abs().max() < 1e-5


def test_caches_never_touch_prompt_or_committed_tokens_and_equal_exact_with_one_step_per_block():
    model = tiny_model(seed=10)
    prompt = torch.randint(4, VOCAB - 1, (3, 6))
    kw = dict(gen_length=32, block_length=8, steps=16, mask_id=MASK_ID)
    exact = decode(model, prompt, **kw)
    for mode in ("prefix", "dual"):
        out = decode(model, prompt, cache=mode, **kw)
        assert torch.equal(out.sequences[:, :6], prompt)
        assert (out.completions != MASK_ID).all() and out.nfe == exact.nfe
    # Every block opens with a full pass in every mode, so with one step per block the caches are
    # never read and the tokens equal exact decoding's. (How far they drift with more steps per
    # block is a measurement, not a property: `igpo bench decode` reports the identical share.)
    one_step = dict(gen_length=32, block_length=8, steps=4, mask_id=MASK_ID)
    ref = decode(model, prompt, **one_step)
    for mode in ("prefix", "dual"):
        assert torch.equal(decode(model, prompt, cache=mode, **one_step).sequences, ref.sequences)


def test_factor_rule_commits_leading_confident_run():
    from igpo.decoding.schedule import factor_counts

    conf = torch.tensor([[0.99, 0.95, 0.40, 0.90]])
    masked = torch.ones(1, 4, dtype=torch.bool)
    # factor 1: ranks 1,2 pass (0.99 > 1 - 1/2, 0.95 > 1 - 1/3), rank 3 (0.90 > 0.75) passes, rank 4 (0.40 > 0.8) fails
    assert factor_counts(conf, 1.0, masked, steps_left=4).tolist() == [3]
    assert factor_counts(conf, 0.01, masked, steps_left=4).tolist() == [1]  # at least one
    assert factor_counts(conf, 0.01, masked, steps_left=1).tolist() == [4]  # the step cap wins


def test_left_pad_and_completion_texts():
    from igpo.decoding.text import completion_texts, cut_at_stop, left_pad, stop_ids
    from igpo.models import TokenSpec

    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    stops = stop_ids(TokenSpec(mask_id=63, eos_id=2, eot_id=3, pad_id=0))
    assert stops == {2, 3} and cut_at_stop([9, 3, 9, 2], stops) == [9]

    class Tok:
        def decode(self, tokens, skip_special_tokens=True):
            return " ".join(map(str, tokens))

    assert completion_texts(Tok(), torch.tensor([[4, 5, 2, 6], [7, 7, 7, 7]]), stops) == ["4 5", "7 7 7 7"]


def pass_recording_model(seed: int) -> tuple[torch.nn.Module, list[bool]]:
    """A tiny model whose forward appends to the returned list, per pass, whether it was a full
    pass (no cache window)."""
    model = tiny_model(seed=seed)
    full_passes: list[bool] = []
    forward = model.forward

    def counting(input_ids, *args, window=None, **kwargs):
        full_passes.append(window is None)
        return forward(input_ids, *args, window=window, **kwargs)

    model.forward = counting
    return model, full_passes


def test_cache_refresh_sets_how_often_a_block_refills_the_cache():
    """cache_refresh k: a full pass at passes 0, k, 2k, ... of each block; k = 1 is exact decoding."""
    model, full_passes = pass_recording_model(seed=11)
    prompt = torch.randint(4, VOCAB - 1, (2, 6))
    kw = dict(gen_length=16, block_length=8, steps=16, mask_id=MASK_ID)  # 8 passes per block
    exact = decode(model, prompt, **kw)
    for mode in ("prefix", "dual"):
        full_passes.clear()
        assert torch.equal(decode(model, prompt, cache=mode, cache_refresh=1, **kw).sequences, exact.sequences)
        assert all(full_passes) and len(full_passes) == 16
        full_passes.clear()
        decode(model, prompt, cache=mode, cache_refresh=3, **kw)
        assert full_passes == [i % 3 == 0 for i in range(8)] * 2
        full_passes.clear()
        decode(model, prompt, cache=mode, **kw)
        assert full_passes == [i == 0 for i in range(8)] * 2


def test_cache_refresh_tokens_refills_after_that_many_commits():
    """cache_refresh_tokens n: a full pass once a row has committed n tokens since the last one;
    at one token per pass that is cache_refresh n, at two it comes every n / 2 passes; n = 1 is exact."""
    model, full_passes = pass_recording_model(seed=12)
    prompt = torch.randint(4, VOCAB - 1, (2, 6))
    one = dict(gen_length=16, block_length=8, steps=16, mask_id=MASK_ID)  # 1 token per pass
    two = dict(one, steps=8)  # 2 tokens per pass
    for mode in ("prefix", "dual"):
        full_passes.clear()
        by_tokens = decode(model, prompt, cache=mode, cache_refresh_tokens=3, **one).sequences
        assert full_passes == [i % 3 == 0 for i in range(8)] * 2
        assert torch.equal(by_tokens, decode(model, prompt, cache=mode, cache_refresh=3, **one).sequences)
        full_passes.clear()
        decode(model, prompt, cache=mode, cache_refresh_tokens=4, **two)
        assert full_passes == [True, False, True, False] * 2
        full_passes.clear()
        exact = decode(model, prompt, **two).sequences
        full_passes.clear()
        assert torch.equal(decode(model, prompt, cache=mode, cache_refresh_tokens=1, **two).sequences, exact)
        assert all(full_passes)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_cache_refresh_must_be_a_positive_integer_with_a_cache(bad):
    model = tiny_model()
    kw = dict(gen_length=16, block_length=8, steps=8, mask_id=MASK_ID)
    with pytest.raises(ValueError, match="cache_refresh"):
        decode(model, torch.randint(4, 60, (1, 4)), cache="dual", cache_refresh=bad, **kw)
    with pytest.raises(ValueError, match="cache_refresh needs a cache"):
        decode(model, torch.randint(4, 60, (1, 4)), cache_refresh=2, **kw)


@pytest.mark.parametrize("name", ["temperature", "cfg_scale", "threshold", "factor"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_decoding_settings_are_refused(name, value):
    from igpo.decoding import DecodeConfig

    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        DecodeConfig(gen_length=8, block_length=8, steps=4, **{name: value})


@pytest.mark.parametrize("text", ["nan", ".nan", "inf", "-.inf", "Infinity"])
def test_config_refuses_non_finite_numbers(text):
    from igpo.config import ConfigError, load_config, resolve_recipe
    from igpo.training.rl_config import RLConfig

    with pytest.raises(ConfigError, match="finite"):
        load_config(RLConfig, resolve_recipe("grpo_tiny"), [f"loss.beta={text}"])


def test_generate_takes_one_decode_config(model):
    """generate(model, prompt, DecodeConfig, tokens=...): the settings travel as one validated
    object; tokens default to the model's spec; anything but a DecodeConfig is refused."""
    prompt = torch.randint(4, 60, (2, 5), generator=torch.Generator().manual_seed(3))
    cfg = DecodeConfig(gen_length=16, block_length=8, steps=8, cache="dual", threshold=0.7)
    out = generate(model, prompt, cfg)
    spec = model.token_spec
    assert torch.equal(out.sequences, decode(model, prompt, eos_id=spec.eos_id, **cfg.to_dict()).sequences)
    no_exit = generate(model, prompt, cfg.replace(early_exit=False))
    assert torch.equal(no_exit.sequences, decode(model, prompt, **cfg.replace(early_exit=False).to_dict()).sequences)
    with pytest.raises(InvalidSetting, match="takes a DecodeConfig"):
        generate(model, prompt, cfg.to_dict())
    with pytest.raises(Exception, match="cannot assign|frozen"):
        cfg.steps = 4  # validated once: a DecodeConfig cannot change afterwards


def test_select_top_ranks_ties_as_topk_for_the_schedules_k():
    """Under the fixed schedule the host knows the largest k: ties then commit in torch.topk's
    order for that k, as before the host-read-free rewrite (so rollouts, their commit steps and
    the trajectory log-probs of training are unchanged)."""
    from igpo.decoding.schedule import select_top

    confidence = torch.tensor([[1.0, 0.5, 1.0, 1.0, float("-inf"), 1.0], [0.2, 1.0, 1.0, 0.2, 1.0, 0.9]])
    k = torch.tensor([2, 3])
    chosen = select_top(confidence, k, k_max=3)
    top = torch.topk(confidence, k=3).indices
    for row in range(2):
        assert set(chosen[row].nonzero().flatten().tolist()) == set(top[row, : k[row]].tolist())
    assert chosen.sum(dim=1).tolist() == [2, 3]
    assert not chosen[0, 4]  # -inf is never chosen
