"""Shared fixtures: tiny models and tokenizers built on the spot (nothing comes from the Hub)."""

from __future__ import annotations

import pytest
import torch

from igpo.decoding import DecodeConfig, GenerateOutput, generate
from igpo.models import ArchConfig, TokenSpec, new_model, save_model

VOCAB = 64
MASK_ID = 63
EOS_ID = 2


def tiny_model(seed: int = 0, vocab: int = VOCAB, std: float = 0.3, **arch) -> torch.nn.Module:
    """A random 2-layer bidirectional model; deterministic in `seed`.

    Weights are drawn wider than a training init (std 0.3) so that confidences are well
    separated: near-ties would make any comparison depend on top-k tie-breaking.
    """
    cfg = ArchConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=4, mlp_hidden=64, **arch)
    spec = TokenSpec(mask_id=vocab - 1, eos_id=EOS_ID, eot_id=3, pad_id=0)
    model = new_model(cfg, spec, seed=seed)
    model.init_weights(torch.Generator().manual_seed(seed), std=std)
    return model.eval()


def decode(
    model,
    prompt,
    *,
    mask_id=None,
    eos_id=None,
    shifted_logits=None,
    attention_mask=None,
    hints=None,
    generator=None,
    record_steps=False,
    **settings,
) -> GenerateOutput:
    """`generate` as the tests spell it: DecodeConfig fields and special tokens as keywords
    (the early exit on when an eos_id is given; shifted logits from the model's spec by default)."""
    own = getattr(model, "token_spec", None)
    spec = TokenSpec(
        mask_id=mask_id if mask_id is not None else own.mask_id,
        eos_id=eos_id,
        eot_id=None,
        pad_id=None,
        shifted_logits=bool(getattr(own, "shifted_logits", False)) if shifted_logits is None else shifted_logits,
    )
    cfg = DecodeConfig(**{"early_exit": eos_id is not None, **settings})
    return generate(
        model,
        prompt,
        cfg,
        tokens=spec,
        attention_mask=attention_mask,
        hints=hints,
        generator=generator,
        record_steps=record_steps,
    )


@pytest.fixture(autouse=True)
def _seeded_global_rng():
    """Tests that draw inputs from torch's global RNG see the same numbers whatever ran before."""
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    yield
    torch.random.set_rng_state(state)


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


SHARED_DATA = (__import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data").resolve()
"""The offline benchmark copies beside the checkout (as in CI)."""

TINY_WORDS = [
    "<reasoning>",
    "</reasoning>",
    "<answer>",
    "</answer>",
    "\\boxed{",
    "}",
    "the",
    "is",
    "a",
    "of",
    "and",
    "to",
    "how",
    "many",
    "what",
    *map(str, range(60)),
]


def save_tiny_checkpoint(folder, seed: int = 0):
    """A tiny model folder with weights, config and a word-level tokenizer with chat template."""
    from igpo.models.tokenizer import EOT, build_word_tokenizer

    tok = build_word_tokenizer(TINY_WORDS)
    spec = TokenSpec(
        mask_id=tok.mask_token_id,
        eos_id=tok.eos_token_id,
        eot_id=tok.convert_tokens_to_ids(EOT),
        pad_id=tok.pad_token_id,
    )
    arch = ArchConfig(vocab_size=len(tok), d_model=32, n_layers=2, n_heads=4, mlp_hidden=64)
    save_model(new_model(arch, spec, seed=seed), folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-dllm")


@pytest.fixture
def shared_data():
    if not (SHARED_DATA / "gsm8k" / "test.jsonl").is_file():
        pytest.skip("shared/data is not beside this checkout")
    return SHARED_DATA
