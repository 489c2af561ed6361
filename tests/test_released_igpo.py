"""IGPO as released (facebookresearch/igpo): hint canvases, the GSPO loss, recipes, LoRA targets.

Hand-worked cases always run. With the released repository fetched into the ignored folder
peers/igpo (`git archive` of github.com/facebookresearch/igpo), the parity tests run the
released functions themselves, taken from its source files by name, on the same draws and
tensors as ours; they skip where the folder is absent (as in CI).
"""

from __future__ import annotations

import ast
import random
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch

from igpo.config import load_config
from igpo.hints import HintConfig, choose_chunks, chunk_spans, paint_canvas, reveal_count, spread_positions
from igpo.training.loss import PolicyLossConfig, k3_kl, policy_loss
from igpo.training.rl_config import RLConfig

REPO = Path(__file__).resolve().parents[1]
PEER = REPO / "peers" / "igpo"
MASK = 99


def _needs_peer() -> None:
    if not (PEER / "trainer_igpo.py").is_file():
        pytest.skip(f"the released IGPO code is not in {PEER} (git archive of facebookresearch/igpo)")


def released_functions(path: Path, names: set[str], namespace: dict[str, Any]) -> dict[str, Any]:
    """The named top-level functions or methods of a released source file, compiled into
    `namespace` (its imports are not run: the test supplies what the functions use)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name in names]
    for node in found:
        node.decorator_list = []  # profiling wrappers of the trainer, not part of the formula
    module = ast.Module(body=found, type_ignores=[])
    exec(compile(module, str(path), "exec"), namespace)  # noqa: S102 - the released code under test
    return {name: namespace[name] for name in names}


# --------------------------------------------------------------------------- hints, by hand


@pytest.mark.parametrize(
    ("n", "eta", "released", "paper"), [(4, 0.3, 2, 1), (4, 0.5, 2, 2), (10, 0.3, 3, 3), (7, 0.2, 2, 1), (5, 0.6, 3, 3)]
)
def test_reveal_count_rules(n, eta, released, paper):
    # released: int(n * (1 - eta)) chunks masked, the rest shown; paper: floor(eta * n) shown
    assert reveal_count(n, eta, "released") == released
    assert reveal_count(n, eta, "paper") == paper


def test_released_defaults_show_answer_and_last_chunk():
    cfg = HintConfig()
    assert (cfg.hide_answer, cfg.reveal_last_chunk, cfg.spread, cfg.count_rule, cfg.max_gap) == (
        False,
        True,
        True,
        "released",
        100,
    )
    paper = HintConfig.paper()
    assert (paper.hide_answer, paper.reveal_last_chunk, paper.spread, paper.count_rule) == (
        False or True,
        False,
        False,
        "paper",
    )
    chunks = chunk_spans(20, [5, 5, 5, 5], 5)
    answer = (17, 20)  # inside the last chunk
    for seed in range(20):
        shown = choose_chunks(chunks, 0.3, cfg, torch.Generator().manual_seed(seed), answer)
        assert chunks[-1] in shown  # released: the last chunk (the answer here) always shows
        assert len(shown) in (2, 3)  # 2 drawn (4 - int(2.8)), plus the last one unless drawn
        hidden = choose_chunks(chunks, 0.3, paper, torch.Generator().manual_seed(seed), answer)
        assert chunks[-1] not in hidden and len(hidden) == 1


def test_spread_stretches_gaps_by_hand():
    # trace 20 tokens, canvas 40 with 5 free at the end: factor clip(35 / 20, 1, 1.5) = 1.5
    cfg = HintConfig(min_chunk=5, max_chunk=5, tail_free=5)
    revealed = [(0, 5), (10, 15), (15, 20)]
    assert spread_positions(revealed, 20, 35, cfg) == [(0, 5), (12, 17), (17, 22)]
    canvas = paint_canvas(list(range(10, 30)), revealed, 40, cfg, MASK)
    assert canvas[:5].tolist() == [10, 11, 12, 13, 14]
    assert canvas[12:22].tolist() == list(range(20, 30))
    assert (canvas[5:12] == MASK).all() and (canvas[22:] == MASK).all()
    plain = paint_canvas(
        list(range(10, 30)), revealed, 40, HintConfig.paper(min_chunk=5, max_chunk=5, tail_free=5), MASK
    )
    assert plain[10:20].tolist() == list(range(20, 30))


# --------------------------------------------------------------------------- hints, against the released builder


class _Recorder:
    """A stand-in for the `random` module the released builder calls: the same draws, recorded."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.sizes: list[int] = []
        self.masked: list[tuple[int, int]] = []

    def randint(self, a: int, b: int) -> int:
        self.sizes.append(self.rng.randint(a, b))
        return self.sizes[-1]

    def sample(self, population, k):
        self.masked = self.rng.sample(population, k)
        return self.masked

    def seed(self, value) -> None:
        self.rng.seed(value)


class _Tokens:
    """A tokenizer whose text is space-separated token ids."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [int(t) for t in text.split()]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(
    ("trace_len", "gen_length", "eta"), [(40, 64, 0.3), (90, 64, 0.55), (20, 128, 0.2), (150, 256, 0.6)]
)
def test_hint_canvas_equals_released_builder(seed, trace_len, gen_length, eta):
    _needs_peer()
    import typing

    recorder = _Recorder(seed)
    namespace = {"torch": torch, "random": recorder, **{k: getattr(typing, k) for k in ("List", "Tuple", "Optional")}}
    fns = released_functions(
        PEER / "utils" / "generate.py",
        {"create_spacing_scaled_inpainting_sequence", "scale_chunk_positions"},
        namespace,
    )
    namespace["print"] = lambda *a, **k: None
    trace = list(range(1000, 1000 + trace_len))
    question = torch.tensor([[1, 2, 3]])
    seq, _ = fns["create_spacing_scaled_inpainting_sequence"](
        _Tokens(),
        question,
        " ".join(map(str, trace)),
        gen_length,
        mask_ratio=1 - eta,
        min_chunk_size=5,
        max_chunk_size=10,
        mask_id=MASK,
        max_spacing=100,
    )  # inpaint_last_chunk_end left at its default, as the released call site does
    released = seq[0, question.shape[1] :]

    cfg = HintConfig(min_chunk=5, max_chunk=10, tail_free=30)
    effective = gen_length - cfg.tail_free
    chunks = chunk_spans(min(trace_len, effective), recorder.sizes, cfg.min_chunk)
    masked = set(recorder.masked)
    assert len(masked) == len(chunks) - reveal_count(len(chunks), eta, cfg.count_rule)
    shown = [c for i, c in enumerate(chunks) if c not in masked or i == len(chunks) - 1]
    ours = paint_canvas(trace, shown, gen_length, cfg, MASK)
    assert torch.equal(ours, released)


# --------------------------------------------------------------------------- the loss, by hand


def test_released_sequence_loss_by_hand():
    # two rollouts, 3 positions; row 0 keeps 2 tokens, row 1 keeps 1; ratios over all 3 positions
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -1.0, -2.0]], requires_grad=True)
    old = torch.tensor([[-1.1, -2.1, -0.2], [-1.5, -1.3, -2.0]])
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[True, True, False], [False, True, False]])
    cfg = PolicyLossConfig(ratio_level="sequence_released", epsilon_low=0.2, epsilon_high=0.2, beta=0.0)
    parts = policy_loss(logp, old, adv, mask, cfg)
    r0 = torch.exp(torch.tensor((0.1 + 0.1 - 0.3) / 3))  # -0.1/3: all three positions, not the kept two
    r1 = torch.exp(torch.tensor(0.3 / 3))
    per_token = torch.stack(
        [-torch.minimum(r0 * 1, r0.clamp(0.8, 1.2) * 1), -torch.minimum(r1 * -1, r1.clamp(0.8, 1.2) * -1)]
    )
    expected = (2 * per_token[0] + 1 * per_token[1]) / 3  # rows weigh by kept tokens
    assert torch.allclose(parts.loss, expected)
    paper = policy_loss(logp, old, adv, mask, PolicyLossConfig(ratio_level="sequence", beta=0.0))
    assert not torch.allclose(paper.loss, parts.loss)  # the paper's reading differs on this case
    parts.loss.backward()
    assert logp.grad[0, 2] != 0  # a position outside the mask still moves the ratio (released)


def test_released_kl_is_masked_token_mean():
    logp = torch.tensor([[-1.0, -2.0, -0.5, -3.0]])
    ref = torch.tensor([[-1.2, -1.0, -0.5, -9.0]])
    mask = torch.tensor([[True, True, True, False]])
    cfg = PolicyLossConfig(ratio_level="sequence_released", beta=0.5)
    parts = policy_loss(logp, logp, torch.tensor([0.0]), mask, cfg, ref)
    assert torch.allclose(parts.kl, k3_kl(logp, ref)[0, :3].mean())
    assert torch.allclose(parts.loss, 0.5 * parts.kl)


# --------------------------------------------------------------------------- the loss, against the released formula


def _released_loss(compute_loss, logp, old, ref, adv, token_mask, inpaint, beta, eps):
    """Run the released compute_loss (use_gspo, num_iterations > 1) on given tensors."""
    b, t = logp.shape
    self = types.SimpleNamespace(
        args=types.SimpleNamespace(num_iterations=4, use_gspo=True, epsilon_low=eps, epsilon_high=eps),
        _step=0,
        num_iterations=4,
        beta=beta,
        accelerator=types.SimpleNamespace(gather_for_metrics=lambda x: x),
        _metrics=defaultdict(lambda: defaultdict(list)),
        control=types.SimpleNamespace(should_evaluate=False),
        _get_per_token_logps_grpo=lambda *a: (logp[None], None, torch.zeros(1, b, t)),
    )
    inputs = {
        "prompt_ids": torch.zeros(b, 2, dtype=torch.long),
        "prompt_mask": torch.ones(b, 2),
        "completion_ids": torch.zeros(b, t, dtype=torch.long),
        "completion_mask": torch.ones(b, t),
        "inpaint_masks": torch.cat([torch.zeros(b, 2, dtype=torch.bool), inpaint], 1),
        "timesteps": [0],
        "mask_seeds": [0],
        "masked_token_mask": token_mask.to(torch.uint8)[None],
        "ref_per_token_logps": ref[None],
        "advantages": adv,
        "old_per_token_logps": old[None],
    }
    return compute_loss(self, None, inputs)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("beta", [0.0, 0.01])
def test_released_loss_and_gradients_equal_released_formula(seed, beta):
    _needs_peer()
    fns = released_functions(
        PEER / "trainer_igpo.py", {"compute_loss"}, {"torch": torch, "print": lambda *a, **k: None}
    )
    g = torch.Generator().manual_seed(seed)
    b, t = 8, 24
    base = -torch.rand(b, t, generator=g) * 3
    old = base + 0.05 * torch.randn(b, t, generator=g)
    ref = base + 0.1 * torch.randn(b, t, generator=g)
    adv = torch.randn(b, generator=g)
    inpaint = torch.rand(b, t, generator=g) < 0.3
    token_mask = ~inpaint | (torch.rand(b, t, generator=g) < 0.2)  # all but the filtered-out hint tokens
    token_mask[:, -4:] &= torch.rand(b, 4, generator=g) < 0.5
    theirs_logp = base.clone().requires_grad_(True)
    theirs = _released_loss(fns["compute_loss"], theirs_logp, old, ref, adv, token_mask, inpaint, beta, 0.2)
    theirs.backward()
    ours_logp = base.clone().requires_grad_(True)
    cfg = PolicyLossConfig(ratio_level="sequence_released", epsilon_low=0.2, epsilon_high=0.2, beta=beta)
    ours = policy_loss(ours_logp, old, adv, token_mask, cfg, ref if beta else None).loss
    ours.backward()
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert torch.allclose(ours_logp.grad, theirs_logp.grad, atol=1e-6)


# --------------------------------------------------------------------------- recipes and LoRA targets

LLADA_MODULES = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
"""The published LLaDA block's linear layers (modeling_llada.py)."""
RELEASED_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj")
"""The released run's LoRA target names (train_igpo.py), matched by suffix against LLADA_MODULES."""


def test_llada_lora_targets_resolve_to_the_released_modules():
    from igpo.models.families import LLADA

    adapted = [name for name in LLADA_MODULES if name in RELEASED_TARGETS]
    assert adapted == ["q_proj", "k_proj", "v_proj", "up_proj"]
    native = sorted(LLADA.to_ours(f"model.transformer.blocks.0.{name}.weight").split(".")[-2] for name in adapted)
    assert native == ["k_proj", "q_proj", "up_proj", "v_proj"]  # LLaDA's up_proj is our up_proj, not the gate
    for recipe in ("igpo_llada", "grpo_llada"):
        cfg = load_config(RLConfig, REPO / "igpo" / "recipes" / f"{recipe}.yaml")
        assert sorted(cfg.model.lora.target_modules) == native


def test_llada_recipes_resolve_to_released_semantics():
    cfg = load_config(RLConfig, REPO / "igpo" / "recipes" / "igpo_llada.yaml")
    assert cfg.hints == HintConfig(min_chunk=5, max_chunk=10, tail_free=30)  # every released default
    assert (cfg.loss.ratio_level, cfg.loss.beta, cfg.mu, cfg.advantage) == ("sequence_released", 0.01, 4, "group_mean")
    assert (cfg.optim.schedule, cfg.epochs, cfg.logprob_estimator) == ("linear", 10, "mean_field")
    assert cfg.data.metamath_verbatim is True
    grpo = load_config(RLConfig, REPO / "igpo" / "recipes" / "grpo_llada.yaml")
    assert (grpo.igpo.resample, grpo.loss.ratio_level, grpo.optim.schedule) == ("none", "sequence_released", "linear")
