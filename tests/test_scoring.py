"""Unit tests of igpo.scoring (answers, pool, worker): extraction, gold parsing, math-verify and strict correctness."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from igpo.scoring import answers, pool, worker
from igpo.scoring.answers import (
    Score,
    extract_boxed,
    format_gold_number,
    gsm8k_gold,
    normalize_math_answer,
    strict_correct,
)
from igpo.scoring.pool import scoring_stats, timeout_count, verify_answer

HANG_RESPONSE = "<answer> \\boxed{9^{9^{9^{9^{9}}}}} </answer>"
"""math-verify's verify() runs for minutes on this (sympy evaluates the power tower)."""

TIMEOUT_S = 2.0
"""Time bound used by the timeout tests."""

SLACK_S = 1.5
"""Allowed overshoot over the bound (thread start, kill and reap of the worker)."""


@pytest.fixture(scope="module", autouse=True)
def _warm_worker():
    """Start the math-verify worker once so start-up is not timed by the tests."""
    verify_answer("x + 1", "\\boxed{1 + x}")
    yield


# --------------------------------------------------------------------------- extract_boxed


@pytest.mark.parametrize(
    ("text", "which", "expected"),
    [
        ("so \\boxed{42}.", "last", "42"),
        ("\\boxed{\\frac{1}{\\sqrt{2}}}", "last", "\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{3} then \\boxed{5}", "first", "3"),
        ("\\boxed{3} then \\boxed{5}", "last", "5"),
        ("\\boxed{\\boxed{7}}", "last", "\\boxed{7}"),
        ("\\fbox{9}", "last", "9"),
        ("\\boxed {x^{2}}", "first", "x^{2}"),
        ("\\boxed{\\{1, 2\\}}", "last", "\\{1, 2\\}"),
        ("\\boxed{}", "last", ""),
        ("\\boxed{1} and \\boxed{2", "last", "1"),
        ("no box here", "last", None),
        ("\\boxed{unclosed", "first", None),
    ],
)
def test_extract_boxed(text: str, which: str, expected: str | None) -> None:
    assert extract_boxed(text, which) == expected  # type: ignore[arg-type]


def test_extract_boxed_rejects_bad_which() -> None:
    with pytest.raises(ValueError):
        extract_boxed("\\boxed{1}", "middle")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- golds


def test_gsm8k_gold() -> None:
    assert gsm8k_gold("She pays 3 * 6 = <<3*6=18>>18.\n#### 18") == "18"
    assert gsm8k_gold("...\n#### 1,234") == "1234"
    assert gsm8k_gold("#### -5 ") == "-5"
    with pytest.raises(ValueError):
        gsm8k_gold("no marker")


@pytest.mark.parametrize(("value", "expected"), [(142.0, "142"), (-4.0, "-4"), (0.5, "0.5"), (7, "7"), (" 12 ", "12")])
def test_format_gold_number(value: float | int | str, expected: str) -> None:
    assert format_gold_number(value) == expected


# --------------------------------------------------------------------------- verify_answer

EQUIVALENT = [
    ("0.5", "\\boxed{\\frac{1}{2}}"),
    ("\\frac{1}{2}", "<answer> \\boxed{0.5} </answer>"),
    ("1234", "\\boxed{1,234}"),
    ("1,234", "1234"),
    ("\\frac{1}{2}", "\\boxed{\\dfrac{1}{2}}"),
    ("\\frac12", "\\boxed{\\tfrac{1}{2}}"),
    ("\\text{(C)}", "\\boxed{C}"),
    ("C", "\\boxed{\\text{(C)}}"),
    ("\\text{(B)}", "\\boxed{\\textbf{(B)}}"),
    ("10\\%", "\\boxed{10}"),
    ("10", "\\boxed{10\\%}"),
    ("18", "\\boxed{\\$18}"),
    ("18", "\\boxed{18 \\text{ dollars}}"),
    ("18", "\\boxed{18.00}"),
    ("90^\\circ", "\\boxed{90}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\pi/2)}"),
    ("p - q", "\\boxed{p-q}"),
    ("3\\sqrt{13}", "\\boxed{\\sqrt{117}}"),
    ("64", "The answer is $64$."),
]

NOT_EQUIVALENT = [
    ("0.5", "\\boxed{\\frac{1}{3}}"),
    ("1234", "\\boxed{1,235}"),
    ("\\text{(C)}", "\\boxed{D}"),
    ("10", "\\boxed{100}"),
    ("\\frac{1}{2}", "\\boxed{2}"),
    ("x + 1", "\\boxed{x - 1}"),
    ("5", "I do not know."),
    ("5", ""),
    ("-4", "\\fbox{-4}"),  # math-verify reads \boxed only (strict_correct takes \fbox too)
    ("1000", "\\boxed{1 000}"),  # math-verify reads 1 000 as 1*000
]


@pytest.mark.parametrize(("gold", "response"), EQUIVALENT)
def test_verify_answer_equivalent(gold: str, response: str) -> None:
    score = verify_answer(gold, response)
    assert score.correct and not score.timed_out, score


@pytest.mark.parametrize(("gold", "response"), NOT_EQUIVALENT)
def test_verify_answer_not_equivalent(gold: str, response: str) -> None:
    score = verify_answer(gold, response)
    assert not score.correct and not score.timed_out, score


def test_verify_answer_fast_path_skips_worker() -> None:
    before = scoring_stats()
    assert verify_answer("70000", "<answer> \\boxed{70000} </answer>") == Score(
        correct=True, extracted="70000", timed_out=False
    )
    assert not verify_answer("70000", "\\boxed{70001}").correct
    after = scoring_stats()
    assert after["fast_path"] - before.get("fast_path", 0) == 2
    assert after.get("worker_calls", 0) == before.get("worker_calls", 0)


def test_verify_answer_times_out_in_thread() -> None:
    """The power tower hangs math-verify; from a non-main thread the call still returns."""
    before = timeout_count()
    result: dict[str, object] = {}

    def run() -> None:
        started = time.perf_counter()
        result["score"] = verify_answer("1", HANG_RESPONSE, timeout_s=TIMEOUT_S)
        result["elapsed"] = time.perf_counter() - started

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(TIMEOUT_S + SLACK_S + 5)
    assert not thread.is_alive()
    assert result["score"] == Score(correct=False, extracted=None, timed_out=True)
    assert result["elapsed"] < TIMEOUT_S + SLACK_S  # type: ignore[operator]
    assert timeout_count() == before + 1
    assert verify_answer("x + 1", "\\boxed{x+1}").correct  # the worker still serves


def test_verify_answer_kills_a_stuck_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the worker cannot interrupt itself, the caller kills and replaces it."""
    monkeypatch.setattr(worker, "INNER_BUDGET_FRACTION", 100.0)
    kills = scoring_stats().get("worker_kills", 0)
    started = time.perf_counter()
    score = verify_answer("1", HANG_RESPONSE, timeout_s=TIMEOUT_S)
    assert score.timed_out and not score.correct
    assert time.perf_counter() - started < TIMEOUT_S + SLACK_S
    assert scoring_stats()["worker_kills"] == kills + 1
    monkeypatch.undo()
    assert verify_answer("\\frac{1}{2}", "\\boxed{\\sin(\\pi/6)}").correct  # restarted


def test_warm_up_pairs_all_parse() -> None:
    """Every warm-up shape is one math-verify reads (a typo would warm up nothing)."""
    from math_verify import parse

    for gold, response in worker.WARMUP_PAIRS:
        assert parse(gold, parsing_timeout=None) and parse(response, parsing_timeout=None), (gold, response)


def test_background_start_serves_the_next_call() -> None:
    """start_worker_in_background starts one worker; the next symbolic verdict uses it."""
    pool.shutdown_worker()
    starts = scoring_stats().get("worker_starts", 0)
    pool.start_worker_in_background().join(60)
    assert scoring_stats()["worker_starts"] == starts + 1
    pool.start_worker_in_background().join(60)  # already running: left as it is
    assert verify_answer("x^2 + 1", "\\boxed{1 + x^2}").correct
    assert scoring_stats()["worker_starts"] == starts + 1


def test_scoring_imports_no_harness_tasks_or_lm_eval() -> None:
    code = (
        "import sys, igpo.scoring.pool; "
        "bad = [m for m in ('harness', 'tasks', 'lm_eval') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- strict_correct


@pytest.mark.parametrize(
    ("gold", "response", "correct"),
    [
        ("3", "\\boxed{3} then \\boxed{5}", True),
        ("5", "\\boxed{3} then \\boxed{5}", False),
        ("64", "The answer is $64$.", False),
        ("\\frac{1}{2}", "\\boxed{0.5}", True),
        ("0.5", "\\boxed{\\dfrac{1}{2}}", True),
        ("1234", "\\boxed{1,234}", True),
        ("\\text{(C)}", "\\boxed{C}", True),
        ("\\text{(C)}", "\\boxed{(C)}", True),
        ("\\text{(C)}", "\\boxed{D}", False),
        ("10\\%", "\\boxed{10}", True),
        ("90^\\circ", "\\boxed{90^{\\circ}}", True),
        ("18", "\\boxed{\\$18.00}", True),
        ("45", "\\boxed{45 \\text{ apples}}", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3,\\dfrac{\\pi}{2})}", True),
        ("\\frac{3}{56}", "\\boxed{3/56}", True),
        ("\\sqrt{2}", "\\boxed{\\sqrt2}", True),
        ("p - q", "\\boxed{p-q}", True),
        ("p - q", "\\boxed{q-p}", False),
        ("5", "\\boxed{x = 5}", True),
        ("5", "\\boxed{}", False),
    ],
)
def test_strict_correct(gold: str, response: str, correct: bool) -> None:
    score = strict_correct(gold, response)
    assert score.correct is correct, (score, normalize_math_answer(gold))
    assert not score.timed_out


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\\left( 3, \\dfrac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("\\tfrac12", "\\frac{1}{2}"),
        ("90^\\circ", "90"),
        ("\\$5.", "5"),
        ("\\text{(B)}", "B"),
        ("12 \\text{ cm}", "12"),
        ("\\text{Evelyn}", "Evelyn"),
        (".5", "0.5"),
        ("\\boxed{7}", "7"),
        ("1{,}000", "1,000"),
        ("y = 2x", "2x"),
    ],
)
def test_normalize_math_answer(raw: str, expected: str) -> None:
    assert normalize_math_answer(raw) == expected


def test_shared_verdicts_score_each_response_once() -> None:
    """Inside shared_verdicts() a repeated (gold, response) reuses its Score: evaluation scores
    every response once for lm-eval's metrics and its samples row alike."""
    from igpo.scoring.pool import shared_verdicts

    response = "so \\boxed{1+x}"  # needs math-verify (the same text would be decided in-process)
    outside = [verify_answer("x + 1", response) for _ in range(2)]
    before = scoring_stats()
    with shared_verdicts():
        inside = [verify_answer("x + 1", response) for _ in range(3)]
    after = scoring_stats()
    assert inside == outside[:1] * 3 and inside[0].correct
    assert after.get("worker_calls", 0) - before.get("worker_calls", 0) == 1
    assert after.get("shared_verdicts", 0) - before.get("shared_verdicts", 0) == 2


# --------------------------------------------------------------------------- fast_verdict rules

D1 = "<reasoning>\nWe have $x + 2 = 7$, so $x = 5$.\n</reasoning>\n<answer>\n{}\n</answer>"
"""A d1-format response around an answer (reasoning with $...$ as real responses have)."""

FAST_RULE_CASES = [
    # rule 1: the gold is a canonical number (integer up to 15 digits, decimal < 10^6, <= 6 decimals)
    ("gold integer", "5", D1.format("\\boxed{5}"), (True, "5")),
    ("gold negative", "-12", D1.format("\\boxed{-12}"), (True, "-12")),
    ("gold decimal", "0.5", D1.format("\\boxed{0.5}"), (True, "0.5")),
    ("gold 15 digits", "123456789012345", D1.format("\\boxed{123456789012345}"), (True, "123456789012345")),
    ("gold padded", " 42 ", D1.format("\\boxed{42}"), (True, "42")),
    ("gold grouped", "1,000", D1.format("\\boxed{1000}"), None),
    ("gold trailing zero", "2.50", D1.format("\\boxed{2.5}"), None),
    ("gold leading zero", "07", D1.format("\\boxed{7}"), None),
    ("gold minus zero", "-0", D1.format("\\boxed{0}"), None),
    ("gold bare decimal", ".5", D1.format("\\boxed{0.5}"), None),
    ("gold 16 digits", "1234567890123456", D1.format("\\boxed{1234567890123456}"), None),
    ("gold 7 decimals", "0.1234567", D1.format("\\boxed{0.1234568}"), None),
    ("gold decimal >= 10^6", "1234567.5", D1.format("\\boxed{1234567.5}"), None),
    ("gold fraction", "\\frac{1}{2}", D1.format("\\boxed{0.5}"), None),
    ("gold units", "5 \\text{ cm}", D1.format("\\boxed{5}"), None),
    # rule 2: exactly one \boxed{ and no \fbox
    ("two boxes", "5", D1.format("\\boxed{3} then \\boxed{5}"), None),
    ("nested boxes", "5", D1.format("\\boxed{\\boxed{5}}"), None),
    ("fbox too", "5", D1.format("\\fbox{3} \\boxed{5}"), None),
    ("spaced box", "5", D1.format("\\boxed {5}"), None),
    ("no box", "5", D1.format("The answer is 5."), None),
    # rule 3: the box holds a canonical number
    ("box grouped", "1000", D1.format("\\boxed{1,000}"), None),
    ("box spaced thousands", "1000", D1.format("\\boxed{1 000}"), None),
    ("box currency", "1000.99", D1.format("\\boxed{$1,000.99}"), None),
    ("box approx", "11", D1.format("\\boxed{$x\\approx11$}"), None),
    ("box trailing zero", "18", D1.format("\\boxed{18.0}"), None),
    ("box padded", "18", D1.format("\\boxed{ 18}"), None),
    ("box percent", "10", D1.format("\\boxed{10\\%}"), None),
    ("box plus sign", "7", D1.format("\\boxed{+7}"), None),
    # rule 4: nothing after the box closes an environment or a longer \boxed{.+} match
    ("tail period", "5", D1.format("\\boxed{5}."), (True, "5")),
    ("tail dollar", "5", "So the answer is $\\boxed{5}$.", None),
    ("tail display", "5", "\\[ \\boxed{5} \\]", None),
    ("tail brace", "5", "\\boxed{5} is the number of {ways}.", None),
    ("tail backslash", "5", "\\boxed{5} \\quad done", None),
    # rule 5: no "final answer" anywhere
    ("final answer", "5", "Final Answer: the final answer is \\boxed{5}", None),
    ("final answer before", "5", D1.format("FINAL ANSWER \\boxed{5}"), None),
    # the verdict: equal strings right, different canonical numbers wrong
    ("different integers", "5", D1.format("\\boxed{6}"), (False, "6")),
    ("different sign", "5", D1.format("\\boxed{-5}"), (False, "-5")),
    ("integer vs decimal", "5", D1.format("\\boxed{5.5}"), (False, "5.5")),
    ("decimals 1e-6 apart", "0.000001", D1.format("\\boxed{0.000002}"), (False, "0.000002")),
    ("big integers 1 apart", "999999999999999", D1.format("\\boxed{999999999999998}"), (False, "999999999999998")),
]


@pytest.mark.parametrize(("rule", "gold", "response", "expected"), FAST_RULE_CASES, ids=[c[0] for c in FAST_RULE_CASES])
def test_fast_verdict_rules(rule: str, gold: str, response: str, expected: tuple[bool, str] | None) -> None:
    """Each condition of fast_verdict decides where it holds and hands the pair to math-verify
    where it does not; a decided verdict is plain math-verify's, and so is the scorer's verdict
    of every undecided pair."""
    from scoring_corpus import plain_math_verify

    fast = answers.fast_verdict(gold, response)
    assert fast == expected, rule
    reference = plain_math_verify(gold, response)
    if fast is not None:
        assert fast[0] is reference, rule
    assert verify_answer(gold, response).correct is reference, rule


def test_fast_verdict_numbers_near_each_other_agree_with_math_verify() -> None:
    """Canonical numbers one unit of their last place apart, of every length the rule accepts:
    math-verify rounds decimals to 6 places and compares integers exactly; the rule agrees."""
    import random

    from scoring_corpus import plain_math_verify

    rng = random.Random(7)
    checked = 0
    for _ in range(150):
        if rng.random() < 0.5:
            value = rng.randrange(10 ** rng.randint(0, 15))
            gold, other = str(value), str(value + rng.choice([-1, 1]))
        else:
            places = rng.randint(1, 6)
            scaled = rng.randrange(1, 10 ** (places + rng.randint(0, 6)))
            gold, other = (f"{(scaled + d) / 10**places:.{places}f}".rstrip("0").rstrip(".") for d in (0, 1))
        response = D1.format(f"\\boxed{{{other}}}")
        fast = answers.fast_verdict(gold, response)
        if fast is None:
            continue
        checked += 1
        assert fast[0] is plain_math_verify(gold, response) is False, (gold, other)
        assert answers.fast_verdict(gold, D1.format(f"\\boxed{{{gold}}}")) == (True, gold)
    assert checked >= 120


# --------------------------------------------------------------------------- the worker pool


def test_verify_answers_matches_verify_answer_in_order() -> None:
    pairs = [
        ("x + 1", "\\boxed{1 + x}"),
        ("5", "\\boxed{5}"),
        ("\\frac{1}{2}", "so \\boxed{0.5}"),
        ("5", "\\boxed{6}"),
        ("10\\%", "\\boxed{10}"),
        ("(1, 2)", "\\boxed{(2, 1)}"),
    ]
    assert pool.verify_answers(pairs) == [verify_answer(g, r) for g, r in pairs]
    assert [s.correct for s in pool.verify_answers(pairs)] == [True, True, True, False, True, False]
    assert pool.verify_answers([]) == []


def test_pool_grows_with_concurrency_and_shrinks_on_resize() -> None:
    """A sequential caller runs one worker; a batch runs as many as the pool allows."""
    try:
        pool.set_worker_count(2)
        pool.shutdown_worker()
        for i in range(3):
            assert verify_answer("x + 1", f"\\boxed{{1 + x}} {i}").correct
        assert pool.running_workers() == 1
        scores = pool.verify_answers([("x + 1", f"\\boxed{{x + 1}} {i}") for i in range(12)])
        assert all(s.correct for s in scores)
        assert pool.running_workers() == 2
        pool.set_worker_count(1)
        assert pool.running_workers() == 1 and pool.worker_count() == 1
    finally:
        pool.set_worker_count(None)


def test_a_hanging_pair_does_not_hold_up_the_batch() -> None:
    """With two workers, the pairs beside a pair that times out are scored by the other one."""
    try:
        pool.set_worker_count(2)
        pairs = [("1", HANG_RESPONSE)] + [("x + 1", f"\\boxed{{1 + x}} {i}") for i in range(6)]
        started = time.perf_counter()
        scores = pool.verify_answers(pairs, timeout_s=TIMEOUT_S)
        assert time.perf_counter() - started < TIMEOUT_S + SLACK_S + 2
        assert scores[0].timed_out and not scores[0].correct
        assert all(s.correct and not s.timed_out for s in scores[1:])
    finally:
        pool.set_worker_count(None)


def test_worker_count_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pool.WORKERS_ENV, "3")
    assert pool.default_worker_count() == 3 and pool.worker_count() == 3
    monkeypatch.setenv(pool.WORKERS_ENV, "0")
    with pytest.raises(ValueError, match=pool.WORKERS_ENV):
        pool.default_worker_count()
    monkeypatch.delenv(pool.WORKERS_ENV)
    assert 1 <= pool.default_worker_count() <= pool.MAX_DEFAULT_WORKERS
    with pytest.raises(ValueError):
        pool.set_worker_count(0)
