"""The scorer against plain math-verify on the generated corpus (tests/scoring_corpus.py): the
built-in golds always, MATH-500 and GSM8K golds when an offline data folder is present."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import pytest
import scoring_corpus
from scoring_corpus import build_corpus, disagreements, sample

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA_SAMPLE = 3000
"""Pairs of the data corpus checked (a fixed sample of its 8,546; `python -m tests.scoring_corpus
DATA_DIR --check` checks them all)."""


def _data_dir() -> Path | None:
    env = os.environ.get("IGPO_DATA_DIR", "").strip()
    found = Path(env) if env else SHARED_DATA
    return (
        found if (found / "math500" / "test.jsonl").is_file() and (found / "gsm8k" / "test.jsonl").is_file() else None
    )


@pytest.fixture(autouse=True)
def _quiet_math_verify():
    """math-verify warns once per disabled timeout and per unparsable answer; not test output."""
    logger = logging.getLogger("math_verify")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def _describe(differ: list) -> str:
    return "\n".join(f"{p.kind}: {p.gold!r} | {p.response[-100:]!r}: scorer {m}, math-verify {r}" for p, m, r in differ)


def test_builtin_corpus_agrees_with_math_verify() -> None:
    pairs = build_corpus()
    assert len(pairs) > 1000
    differ, timeouts = disagreements(pairs)
    assert not differ, _describe(differ)
    assert timeouts == 0


def test_data_corpus_agrees_with_math_verify() -> None:
    data_dir = _data_dir()
    if data_dir is None:
        pytest.skip("no offline data folder ($IGPO_DATA_DIR or shared/data beside the checkout)")
    pairs = build_corpus(data_dir)
    assert len(pairs) > 8000 and {p.source for p in pairs} >= {"math500", "gsm8k"}
    checked = sample(pairs, DATA_SAMPLE)
    assert len(checked) == DATA_SAMPLE
    differ, timeouts = disagreements(checked)
    assert not differ, _describe(differ)
    assert timeouts == 0


def test_corpus_is_deterministic_and_covers_every_rewrite() -> None:
    first, second = build_corpus(), build_corpus()
    assert first == second
    assert build_corpus(seed=scoring_corpus.SEED + 1) != first
    kinds = Counter(p.kind.split("/")[0] for p in first)
    shapes = Counter(p.kind.split("/")[1] for p in first)
    assert set(kinds) == set(scoring_corpus.NUMERIC_REWRITES) | set(scoring_corpus.GENERAL_REWRITES)
    assert set(shapes) == set(scoring_corpus.RESPONSE_SHAPES)
    verdicts = Counter(scoring_corpus.plain_math_verify(p.gold, p.response) for p in sample(first, 200))
    assert verdicts[True] > 40 and verdicts[False] > 40  # right and wrong answers both present
