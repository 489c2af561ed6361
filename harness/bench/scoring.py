"""Scoring benchmark: answer-scoring throughput on realistic responses (part of `igpo bench eval`).

`verify_answer` (math-verify) and `strict_correct` (d1 first-box) on synthetic responses built
from the real GSM8K and MATH500 golds, one call at a time; `verify_answers` on the math-verify
worker pool at each pool size up to the cores; and MATH500 scored as `igpo eval` scores a task
(lm-eval's filter, then its metric per document, then the samples rows), with all responses
verified at once on the pool before the metrics (the math tasks' filter) and without (each
response verified when its document's metric asks for it, one at a time).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEED = 0
"""Seed of the synthetic responses."""
WRONG_SHARE = 0.3
"""Share of GSM8K responses with a wrong number (and of MATH500 responses with another gold)."""
UNBOXED_SHARE = 0.1
"""Share of GSM8K responses that state the answer without \\boxed{} (math-verify's slow path)."""
REWRITE_SHARE = 0.2
"""Share of MATH500 responses with an equivalent but differently written answer."""
REASONING_CHARS = 400
"""Reasoning text kept in each synthetic response."""


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def gsm8k_cases(data_dir: Path, rng: random.Random) -> list[tuple[str, str]]:
    """(gold, response): the reference reasoning, then a boxed answer; 30% wrong, 10% unboxed."""
    from igpo.data import GSM8K_TEST
    from igpo.scoring.answers import gsm8k_gold

    cases = []
    for row in _read_jsonl(data_dir / GSM8K_TEST):
        gold = gsm8k_gold(row["answer"])
        reasoning = re.sub(r"<<[^>]*>>", "", row["answer"].rsplit("####", 1)[0]).strip()[:REASONING_CHARS]
        answer = gold
        if rng.random() < WRONG_SHARE:
            answer = str(int(float(gold)) + rng.choice([-10, -2, -1, 1, 2, 10]))
        final = f"So the answer is {answer}." if rng.random() < UNBOXED_SHARE else f"\\boxed{{{answer}}}"
        cases.append((gold, f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{final}\n</answer>"))
    return cases


def _rewrite(gold: str) -> str:
    """An equivalent way of writing a MATH answer (what a model might produce instead)."""
    if "\\frac" in gold:
        return gold.replace("\\frac", "\\dfrac")
    if re.fullmatch(r"-?\d+", gold):
        return f"{gold}.0"
    return gold.replace(",", ", ") if "," in gold else f"{gold} "


def math500_cases(data_dir: Path, rng: random.Random) -> list[tuple[str, str]]:
    """(gold, response): reasoning from the solution, then the gold, a rewrite, or another gold."""
    rows = _read_jsonl(data_dir / "math500" / "test.jsonl")
    golds = [str(r["answer"]) for r in rows]
    cases = []
    for row, gold in zip(rows, golds, strict=True):
        reasoning = row["solution"].replace("\\boxed", "")[:REASONING_CHARS]
        draw = rng.random()
        if draw < WRONG_SHARE:
            answer = rng.choice([g for g in golds if g != gold])
        elif draw < WRONG_SHARE + REWRITE_SHARE:
            answer = _rewrite(gold)
        else:
            answer = gold
        cases.append((gold, f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n\\boxed{{{answer}}}\n</answer>"))
    return cases


def time_scorer(scorer: Callable[[str, str], Any], cases: list[tuple[str, str]]) -> dict[str, float]:
    """Score every case once; samples/s, correct share and timeouts."""
    start = time.perf_counter()
    scores = [scorer(gold, response) for gold, response in cases]
    seconds = time.perf_counter() - start
    return {
        "samples": len(cases),
        "seconds": seconds,
        "per_s": len(cases) / seconds,
        "correct": sum(s.correct for s in scores) / len(cases),
        "timeouts": sum(s.timed_out for s in scores),
    }


def scoring_cases(data_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """The GSM8K and MATH500 (gold, response) cases, drawn from one seeded generator."""
    rng = random.Random(SEED)
    gsm8k = gsm8k_cases(data_dir, rng)
    return {"GSM8K": gsm8k, "MATH500": math500_cases(data_dir, rng)}


def pool_sizes(cores: int) -> list[int]:
    """1, 2, 4, ... below the core count, and the core count."""
    sizes, size = [], 1
    while size < cores:
        sizes.append(size)
        size *= 2
    return [*sizes, cores]


POOL_REPEATS = 3
"""Timed passes per pool size, each with freshly started workers (the median is reported)."""


def measure_pool(cases: list[tuple[str, str]], sizes: list[int]) -> list[dict[str, Any]]:
    """`verify_answers` on all `cases` at once with the worker pool set to each size: POOL_REPEATS
    passes, each after stopping the workers and starting that many fresh ones (untimed), so no
    pass finds sympy's caches warm from another; the median pass's samples/s, correct share,
    fast-path share, timeouts."""
    from igpo.scoring.pool import (
        reset_scoring_stats,
        running_workers,
        scoring_stats,
        set_worker_count,
        shutdown_worker,
        verify_answers,
    )

    rows = []
    try:
        for size in sizes:
            set_worker_count(size)
            load = os.getloadavg()[0]
            passes = []
            for _ in range(POOL_REPEATS):
                shutdown_worker()
                verify_answers([("x^2 + 1", f"\\boxed{{1 + x^2}} {i}") for i in range(4 * size)])
                if running_workers() != size:
                    raise RuntimeError(f"{running_workers()} workers running, {size} asked for")
                reset_scoring_stats()
                start = time.perf_counter()
                scores = verify_answers(cases)
                passes.append((time.perf_counter() - start, scores, scoring_stats()))
            seconds, scores, stats = sorted(passes, key=lambda p: p[0])[len(passes) // 2]
            rows.append(
                {
                    "workers": size,
                    "load": load,
                    "samples": len(cases),
                    "seconds": seconds,
                    "per_s": len(cases) / seconds,
                    "all_per_s": [len(cases) / p[0] for p in passes],
                    "correct": sum(s.correct for s in scores) / len(cases),
                    "worker_share": stats.get("worker_calls", 0) / len(cases),
                    "timeouts": sum(s.timed_out for s in scores),
                }
            )
    finally:
        set_worker_count(None)
    return rows


def measure_scoring(data_dir: Path) -> tuple[list[dict[str, Any]], float]:
    """Throughput rows per (dataset, metric), and the math-verify worker's start-up seconds."""
    from igpo.scoring.answers import strict_correct
    from igpo.scoring.pool import reset_scoring_stats, scoring_stats, shutdown_worker, verify_answer

    shutdown_worker()
    start = time.perf_counter()
    verify_answer("x^2 + 1", "\\boxed{1 + x^2}")  # symbolic: starts the worker, not counted below
    startup = time.perf_counter() - start
    rows = []
    for dataset, cases in scoring_cases(data_dir).items():
        for name, scorer in (("verify_answer", verify_answer), ("strict_correct", strict_correct)):
            reset_scoring_stats()
            row = {"dataset": dataset, "metric": name, **time_scorer(scorer, cases)}
            stats = scoring_stats()
            calls = stats.get("verify_calls", 0)
            row["worker_share"] = stats.get("worker_calls", 0) / calls if calls else None
            rows.append(row)
    return rows, startup


def _eval_scoring_pass(rows: list[dict[str, Any]], responses: list[str], at_once: bool) -> tuple[float, list]:
    """One MATH500 task scored as in `igpo eval` (inside `shared_verdicts()`, so each response is
    verified once): seconds and every response's (correct, extracted, timed_out)."""
    from igpo.scoring.pool import shared_verdicts, verify_answer
    from tasks import utils

    resps = [[r] for r in responses]
    with shared_verdicts():
        start = time.perf_counter()
        resps = (utils.keep_all_scored_math if at_once else utils.keep_all_responses)(resps, rows)
        for doc, r in zip(rows, resps, strict=True):
            utils.process_results_math(doc, [r])
        scores = [verify_answer(utils.gold_math(doc), r[0]) for doc, r in zip(rows, resps, strict=True)]
        seconds = time.perf_counter() - start
    return seconds, [(s.correct, s.extracted, s.timed_out) for s in scores]


def measure_eval_scoring(data_dir: Path) -> list[dict[str, Any]]:
    """MATH500's responses (`scoring_cases`) scored the way `igpo eval` scores a task, with the
    math tasks' filter (all verified at once on the pool: `tasks.utils.keep_all_scored_math`) and
    with the identity filter (one at a time, as each document's metric asks): POOL_REPEATS passes
    of each, alternating, each with the default pool freshly started (untimed); the median pass.
    Raises when the two give different verdicts."""
    from igpo.scoring.pool import running_workers, shutdown_worker, verify_answers, worker_count

    responses = [response for _, response in scoring_cases(data_dir)["MATH500"]]
    rows = _read_jsonl(data_dir / "math500" / "test.jsonl")
    size = worker_count()
    passes: dict[bool, list[tuple[float, list]]] = {False: [], True: []}
    for _ in range(POOL_REPEATS):
        for at_once in (False, True):
            shutdown_worker()
            verify_answers([("x^2 + 1", f"\\boxed{{1 + x^2}} {i}") for i in range(4 * size)])
            if running_workers() != size:
                raise RuntimeError(f"{running_workers()} workers running, {size} asked for")
            passes[at_once].append(_eval_scoring_pass(rows, responses, at_once))
    verdicts = {at_once: runs[0][1] for at_once, runs in passes.items()}
    if verdicts[True] != verdicts[False] or any(v != run[1] for v in verdicts.values() for run in passes[True]):
        raise RuntimeError("scoring all responses at once changed a verdict")
    out = []
    for at_once in (False, True):
        seconds = sorted(run[0] for run in passes[at_once])[len(passes[at_once]) // 2]
        out.append(
            {
                "mode": "all at once on the pool" if at_once else "one per document metric",
                "workers": size if at_once else 1,
                "samples": len(rows),
                "seconds": seconds,
                "per_s": len(rows) / seconds,
                "all_seconds": [run[0] for run in passes[at_once]],
                "correct": sum(v[0] for v in verdicts[at_once]) / len(rows),
            }
        )
    return out
