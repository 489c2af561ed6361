"""Unit tests of igpo.scoring: extraction, gold parsing, math-verify and strict correctness."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time

import pytest

from igpo import scoring
from igpo.scoring import (
    Score,
    extract_boxed,
    format_gold_number,
    gsm8k_gold,
    normalize_math_answer,
    scoring_stats,
    strict_correct,
    timeout_count,
    verify_answer,
)

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
    ("-4", "\\fbox{-4}"),
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
    assert verify_answer("70000", "<answer> \\boxed{70,000} </answer>") == Score(
        correct=True, extracted="70,000", timed_out=False
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
    monkeypatch.setattr(scoring, "INNER_BUDGET_FRACTION", 100.0)
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

    for gold, response in scoring.WARMUP_PAIRS:
        assert parse(gold, parsing_timeout=None) and parse(response, parsing_timeout=None), (gold, response)


def test_background_start_serves_the_next_call() -> None:
    """start_worker_in_background starts one worker; the next symbolic verdict uses it."""
    scoring.shutdown_worker()
    starts = scoring_stats().get("worker_starts", 0)
    scoring.start_worker_in_background().join(60)
    assert scoring_stats()["worker_starts"] == starts + 1
    scoring.start_worker_in_background().join(60)  # already running: left as it is
    assert verify_answer("x^2 + 1", "\\boxed{1 + x^2}").correct
    assert scoring_stats()["worker_starts"] == starts + 1


def test_scoring_imports_no_harness_tasks_or_lm_eval() -> None:
    code = (
        "import sys, igpo.scoring; "
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
    from igpo.scoring import shared_verdicts

    response = "so \\boxed{1+x}"  # needs math-verify (the same text would be decided in-process)
    outside = [verify_answer("x + 1", response) for _ in range(2)]
    before = scoring_stats()
    with shared_verdicts():
        inside = [verify_answer("x + 1", response) for _ in range(3)]
    after = scoring_stats()
    assert inside == outside[:1] * 3 and inside[0].correct
    assert after.get("worker_calls", 0) - before.get("worker_calls", 0) == 1
    assert after.get("shared_verdicts", 0) - before.get("shared_verdicts", 0) == 2


FAST_CASES = [
    ("\\frac{7}{2}", "\\dfrac{7}{2}", True),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
    ("2\\sqrt{5}", "\\sqrt{20}", True),  # the same value, written differently
    ("\\frac{14}{3}", "\\frac{13}{3}", False),
    ("2\\sqrt{5}", "3\\sqrt{2}", False),
    ("\\frac65", "\\frac{3}{2}", False),
    ("1,-2", "15", False),
    ("(-2,1)", "83", False),
    ("2k+2", "41", False),
    ("3", "\\cot x", False),
    ("6 - 5i", "8", False),
    ("\\begin{pmatrix} -7 \\\\ 16 \\\\ 5 \\end{pmatrix}", "4", False),
    ("28800", "5.4 \\text{ cents}", None),  # units: math-verify decides
    ("145^\\circ", "2", None),  # degrees: math-verify decides
    ("y = 2x + 3", "\\frac{13}{18}", None),  # equations: math-verify decides
]


@pytest.mark.parametrize(("gold", "answer", "expected"), FAST_CASES)
def test_in_process_verdicts_agree_with_math_verify(gold: str, answer: str, expected: bool | None) -> None:
    """Every verdict decided without math-verify is the one math-verify gives, and the cases
    outside the rules still go to it."""
    from igpo.scoring import _fast_verdict, _gold_for_math_verify, _parse_and_verify

    fast = _fast_verdict(gold, answer, boxed=True)
    assert fast == expected
    if fast is not None:
        assert _parse_and_verify(_gold_for_math_verify(gold), f"\\boxed{{{answer}}}")[0] == fast


def test_unboxed_text_is_never_decided_by_the_boxed_rules() -> None:
    from igpo.scoring import _fast_verdict

    assert _fast_verdict("64", "The answer is $64$.", boxed=False) is None


def test_latex_number_values() -> None:
    from igpo.latexnum import value

    assert value("\\frac{7}{2}") == 3.5 and value("-\\dfrac{\\pi}{3}") == pytest.approx(-math.pi / 3)
    assert value("2\\sqrt{5}") == pytest.approx(2 * 5**0.5) and value("3^{4}") == 81
    assert value("2 3") is None and value("x+1") is None and value("(1,2)") is None and value("10^{999}") is None
    assert value("\\frac{1}{0}") is None and value("\\sqrt{-4}") is None
