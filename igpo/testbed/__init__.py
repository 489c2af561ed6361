"""The CPU testbed: a ~1M-parameter dLLM trained from scratch on `arith` word problems.

It ships inside the package (igpo/assets/testbed) and is what `igpo eval` runs by default.
`make testbed-model` (python -m igpo.testbed.build) reproduces it from its seed.
"""

from __future__ import annotations

from igpo.decoding.config import DecodeConfig
from igpo.models.loading import EMBEDDED_MODELS

TESTBED_DIR = EMBEDDED_MODELS["testbed"]
TESTBED_DECODE = DecodeConfig(gen_length=48, block_length=16, steps=24)
"""Decoding for arith: 6 operations need 42 completion tokens plus EOS, hence a 48-token canvas
in blocks of 16, at 2 tokens per step. The one value in code; the shipped protocols
(harness/eval/protocols/*.yaml, whose hashes runs record, so never edited for this) declare it
for igpo_arith (at 1 token per step where a protocol sets steps = length), as do the tiny RL
recipes and igpo_arith.yaml: tests/test_architecture.py keeps them all equal to this."""
RL_TEMPERATURE = 1.0
"""Sampling temperature of the testbed's RL rollouts (the group statistics use it too)."""
