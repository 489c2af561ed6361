"""Whether a rewrite is kept: d1/IGPO format intact, answer still right, length within budget.

Example kept: `<reasoning> 6 + 9 = 15 . 15 - 2 = 13 . </reasoning> <answer> \\boxed{13} </answer>`
against gold `13`. Reasons for a reject, in the order checked: `empty`, `format`, `wrong_answer`,
`too_long`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from igpo.rewards import BOXED_MARK, FORMAT_TAGS
from igpo.scoring.pool import verify_answer

REJECT_REASONS = ("empty", "format", "wrong_answer", "too_long")


@dataclass(frozen=True)
class Verdict:
    kept: bool
    reason: str | None
    tokens: int | None


def format_ok(text: str) -> bool:
    """Each d1/IGPO tag exactly once, in order, and a `\\boxed{` inside the answer block."""
    positions = [text.find(tag) for tag in FORMAT_TAGS]
    if any(text.count(tag) != 1 for tag in FORMAT_TAGS) or positions != sorted(positions):
        return False
    answer_block = text[positions[2] : positions[3]]
    return BOXED_MARK in answer_block


def check(text: str, gold: str, tokenizer: Any, max_tokens: int | None) -> Verdict:
    """The verdict on one rewrite (tokens counted with `tokenizer`, no special tokens)."""
    text = text.strip()
    if not text:
        return Verdict(False, "empty", 0)
    tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not format_ok(text):
        return Verdict(False, "format", tokens)
    if not verify_answer(gold, text).correct:
        return Verdict(False, "wrong_answer", tokens)
    if max_tokens is not None and tokens > max_tokens:
        return Verdict(False, "too_long", tokens)
    return Verdict(True, None, tokens)
