"""What the testbed model can do: greedy accuracy per level, and how G sampled rollouts per
prompt split into all-wrong / mixed / all-right groups at the RL temperature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from igpo.testbed import RL_TEMPERATURE, TESTBED_DECODE

LEVELS = range(1, 7)
GREEDY_PER_LEVEL = 100
GROUP_PROMPTS_PER_LEVEL = 25
GROUP_SIZE = 8
BATCH = 64
GROUP_SEED = 7


def arith_prompts(tokenizer, questions: list[str], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (ids, attention_mask) of arith questions in the testbed's prompt format."""
    from igpo.arith import ARITH_INSTRUCTION
    from igpo.data import render_prompt
    from igpo.decoding.text import left_pad

    rows = [
        tokenizer(render_prompt(tokenizer, q, system=ARITH_INSTRUCTION), add_special_tokens=False)["input_ids"]
        for q in questions
    ]
    return left_pad(rows, pad_id)


def solve(model, tokenizer, questions: list[str], *, temperature: float = 0.0, seed: int = 0) -> list[str]:
    """Decode answers to arith questions with the testbed decoding settings."""
    from igpo.decoding import generate
    from igpo.decoding.text import completion_texts, stop_ids

    spec = model.token_spec
    stops = stop_ids(spec)
    texts: list[str] = []
    for start in range(0, len(questions), BATCH):
        chunk = questions[start : start + BATCH]
        ids, mask = arith_prompts(tokenizer, chunk, spec.pad_id or 0)
        gens = [torch.Generator().manual_seed(seed * 1_000_003 + start + i) for i in range(len(chunk))]
        out = generate(model, ids, TESTBED_DECODE.replace(temperature=temperature), attention_mask=mask, generator=gens)
        texts += completion_texts(tokenizer, out.completions, stops)
    return texts


def measure(
    model_dir: Path | str, *, per_level: int = GREEDY_PER_LEVEL, group_prompts: int = GROUP_PROMPTS_PER_LEVEL
) -> dict[str, Any]:
    from igpo.arith import test_set
    from igpo.models import load_model, load_tokenizer
    from igpo.scoring.pool import verify_answer

    model = load_model(model_dir, device="cpu")
    tok = load_tokenizer(model_dir)
    greedy: dict[str, float] = {}
    groups: dict[str, dict[str, int]] = {}
    problems = test_set(n_per_level=max(per_level, group_prompts), levels=LEVELS)
    for level in LEVELS:
        level_problems = [p for p in problems if p.steps == level]
        subset = level_problems[:per_level]
        answers = solve(model, tok, [p.question for p in subset])
        greedy[str(level)] = sum(
            verify_answer(p.answer, a).correct for p, a in zip(subset, answers, strict=True)
        ) / len(subset)
        prompts = level_problems[:group_prompts]
        questions = [p.question for p in prompts for _ in range(GROUP_SIZE)]
        sampled = solve(model, tok, questions, temperature=RL_TEMPERATURE, seed=GROUP_SEED)
        counts = {"all_wrong": 0, "mixed": 0, "all_right": 0}
        for i, p in enumerate(prompts):
            right = sum(verify_answer(p.answer, a).correct for a in sampled[i * GROUP_SIZE : (i + 1) * GROUP_SIZE])
            counts["all_wrong" if right == 0 else "all_right" if right == GROUP_SIZE else "mixed"] += 1
        groups[str(level)] = counts
    overall = sum(greedy.values()) / len(greedy)
    return {
        "greedy_accuracy_by_level": greedy,
        "greedy_accuracy_overall": overall,
        "groups_by_level": groups,
        "group_size": GROUP_SIZE,
        "rl_temperature": RL_TEMPERATURE,
        "decode": TESTBED_DECODE.to_dict(),
    }
