"""Shared fixtures: tiny models and tokenizers built on the spot (nothing comes from the Hub)."""

from __future__ import annotations

import pytest
import torch

from igpo.models import ArchConfig, TokenSpec, new_model

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


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
